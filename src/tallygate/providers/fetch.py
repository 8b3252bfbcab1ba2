"""One provider's report of whole UTC days: usage and cost, every page."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

import httpx

from tallygate.config import Provider
from tallygate.providers import anthropic, openai
from tallygate.providers.http import Endpoint, ProviderError, RetryPolicy, Sleep, pages
from tallygate.providers.report import ProviderReport

Parse = Callable[[ProviderReport, dict[str, Any]], None]


async def fetch_report(provider: Provider, start: date, end: date, *,
                       environ: Mapping[str, str] = os.environ,
                       transport: httpx.AsyncBaseTransport | None = None,
                       retry: RetryPolicy | None = None,
                       sleep: Sleep = asyncio.sleep) -> ProviderReport:
    """Usage and cost of UTC days ``[start, end)``. The admin key is read from the
    environment now, used in a header and dropped."""
    secret = environ.get(provider.admin_key_env, "")
    if not secret:
        raise ProviderError(f"provider {provider.name}: the environment variable "
                            f"{provider.admin_key_env} (its admin key) is not set")
    kind = openai if provider.kind == "openai" else anthropic
    endpoint = Endpoint(provider.name, provider.base_url, kind.headers(secret),
                        provider.admin_key_env, secret)
    # Cost reports are per account (OpenAI: or project), never per API key: narrowed to
    # some keys, the usage has no cost to compare with.
    with_cost = not provider.api_key_ids
    measures = tuple(m for m in kind.MEASURES if with_cost or m != "cost")
    report = ProviderReport(measures)
    asks: list[tuple[str, list[tuple[str, str]], Parse]]
    if provider.kind == "openai":
        asks = [(path, openai.usage_params(start, end, provider.api_key_ids),
                 openai.add_usage_page) for path in openai.USAGE_PATHS]
        if with_cost:
            asks.append((openai.COSTS_PATH, openai.costs_params(start, end),
                         openai.add_costs_page))
    else:
        asks = [(anthropic.USAGE_PATH, anthropic.usage_params(start, end,
                                                              provider.api_key_ids),
                 anthropic.add_usage_page)]
        if with_cost:
            asks.append((anthropic.COSTS_PATH, anthropic.costs_params(start, end),
                         anthropic.add_costs_page))
    policy = retry or RetryPolicy()
    async with httpx.AsyncClient(transport=transport) as client:
        for path, params, parse in asks:
            async for page in pages(endpoint, path, params, client=client, retry=policy,
                                    sleep=sleep):
                try:
                    parse(report, page)
                except (KeyError, TypeError, ValueError, ArithmeticError) as exc:
                    raise ProviderError(f"provider {provider.name}: GET {path}: a bucket is "
                                        f"not as documented ({exc.__class__.__name__})"
                                        ) from None
    report.fold_cost_names()
    return report
