"""tallygate: an OpenAI-compatible LLM API gateway with an exact usage ledger."""

from __future__ import annotations

__version__ = "0.1.0"
