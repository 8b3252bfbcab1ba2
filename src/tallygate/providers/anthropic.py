"""Anthropic's usage and cost reports (Admin API), read into the ledger's convention.

Formats from Anthropic's Admin API reference ("Get Messages Usage Report",
``/v1/organizations/usage_report/messages``; "Get Cost Report",
``/v1/organizations/cost_report``). Usage results give ``uncached_input_tokens``,
``cache_read_input_tokens``, ``cache_creation.ephemeral_5m_input_tokens`` /
``ephemeral_1h_input_tokens`` and ``output_tokens`` apart, and no request count; the ledger's
``input_tokens`` is all three inputs together, its ``cached_input_tokens`` the cache reads and
its ``cache_write_tokens`` the cache writes (gateway/anthropic_usage.py). Cost results, grouped
by ``description``, carry the ``model`` of token costs; ``amount`` is a decimal string in
cents. Arrays are ``name[]=value`` (``group_by[]=model``).
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Any

from tallygate.providers.report import ProviderReport

VERSION = "2023-06-01"
USAGE_PATH = "/organizations/usage_report/messages"
COSTS_PATH = "/organizations/cost_report"
PAGE_LIMIT = "31"  # the most 1d buckets a page may hold
MEASURES = ("input_tokens", "cached_input_tokens", "cache_write_tokens", "output_tokens",
            "cost")


def headers(admin_key: str) -> dict[str, str]:
    return {"x-api-key": admin_key, "anthropic-version": VERSION}


def _range(start: date, end: date) -> list[tuple[str, str]]:
    return [("starting_at", f"{start.isoformat()}T00:00:00Z"),
            ("ending_at", f"{end.isoformat()}T00:00:00Z"), ("bucket_width", "1d"),
            ("limit", PAGE_LIMIT)]


def usage_params(start: date, end: date, api_key_ids: list[str]) -> list[tuple[str, str]]:
    return [*_range(start, end), ("group_by[]", "model"),
            *(("api_key_ids[]", key) for key in api_key_ids)]


def costs_params(start: date, end: date) -> list[tuple[str, str]]:
    return [*_range(start, end), ("group_by[]", "description")]


def add_usage_page(report: ProviderReport, page: dict[str, Any]) -> None:
    for bucket in page["data"]:
        day = _day(bucket["starting_at"])
        for result in bucket.get("results") or ():
            figures = report.figures(day, str(result.get("model") or ""))
            uncached = _int(result, "uncached_input_tokens")
            read = _int(result, "cache_read_input_tokens")
            creation = result.get("cache_creation") or {}
            written = (_int(creation, "ephemeral_5m_input_tokens")
                       + _int(creation, "ephemeral_1h_input_tokens"))
            figures.add("input_tokens", uncached + read + written)
            figures.add("cached_input_tokens", read)
            figures.add("cache_write_tokens", written)
            figures.add("output_tokens", _int(result, "output_tokens"))


def add_costs_page(report: ProviderReport, page: dict[str, Any]) -> None:
    for bucket in page["data"]:
        day = _day(bucket["starting_at"])
        for result in bucket.get("results") or ():
            model = result.get("model")
            if not model or result.get("amount") is None:
                continue  # web search, code execution: no model, not metered as tokens here
            cents = Decimal(str(result["amount"]))
            report.figures(day, str(model)).add("cost", cents / 100)


def _day(rfc3339: Any) -> date:
    return datetime.fromisoformat(str(rfc3339).replace("Z", "+00:00")).date()


def _int(result: dict[str, Any], name: str) -> int:
    value = result.get(name)
    return int(value) if value is not None else 0
