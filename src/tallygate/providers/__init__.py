"""Clients for model providers' own usage and cost reports (reconciliation, §13).

``fetch_report`` asks the provider a ``[[providers]]`` entry names for its report of whole UTC
days and answers a :class:`ProviderReport`: figures per UTC day x model, in the ledger's own
convention (see :mod:`tallygate.providers.openai` and :mod:`tallygate.providers.anthropic`).
"""

from __future__ import annotations

from tallygate.providers.fetch import fetch_report
from tallygate.providers.http import ProviderError, RetryPolicy
from tallygate.providers.report import ProviderFigures, ProviderReport

__all__ = ["ProviderError", "ProviderFigures", "ProviderReport", "RetryPolicy", "fetch_report"]
