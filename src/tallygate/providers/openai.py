"""OpenAI's organization usage and costs reports, read into the ledger's convention.

Formats from OpenAI's OpenAPI document (openai/openai-openapi, ``openapi.yaml``:
``/organization/usage/completions``, ``/organization/usage/embeddings``,
``/organization/costs``). Usage results carry ``input_tokens`` (text input, cached included),
``input_cached_tokens``, ``output_tokens``, ``input_audio_tokens`` / ``output_audio_tokens``
and ``num_model_requests``; the ledger's ``input_tokens`` is the call's ``prompt_tokens``,
which counts audio and cached input too, so text and audio are added up. OpenAI has no
cache-write charge. Costs group by ``line_item`` (``"gpt-4o-2024-08-06, input"``: the model,
a comma, what was billed) or project only, never by model: a line item's model is the part
before its first ", ". Amounts are dollars, JSON numbers (read as decimals).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from tallygate.providers.report import ProviderReport

USAGE_PATHS = ("/organization/usage/completions", "/organization/usage/embeddings")
COSTS_PATH = "/organization/costs"
USAGE_PAGE_LIMIT = "31"  # the most 1d buckets a usage page may hold
COSTS_PAGE_LIMIT = "180"
MEASURES = ("requests", "input_tokens", "cached_input_tokens", "output_tokens", "cost")


def headers(admin_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {admin_key}"}


def usage_params(start: date, end: date, api_key_ids: list[str]) -> list[tuple[str, str]]:
    """Repeated keys for arrays (``group_by=model&group_by=api_key_id``), as OpenAI reads
    them."""
    params = [("start_time", str(_unix(start))), ("end_time", str(_unix(end))),
              ("bucket_width", "1d"), ("group_by", "model"), ("limit", USAGE_PAGE_LIMIT)]
    params += [("api_key_ids", key) for key in api_key_ids]
    return params


def costs_params(start: date, end: date) -> list[tuple[str, str]]:
    return [("start_time", str(_unix(start))), ("end_time", str(_unix(end))),
            ("bucket_width", "1d"), ("group_by", "line_item"), ("limit", COSTS_PAGE_LIMIT)]


def add_usage_page(report: ProviderReport, page: dict[str, Any]) -> None:
    for bucket in page["data"]:
        day = _day(bucket["start_time"])
        for result in bucket.get("results") or ():
            figures = report.figures(day, str(result.get("model") or ""))
            figures.add("requests", _int(result, "num_model_requests"))
            figures.add("input_tokens", _int(result, "input_tokens")
                        + _int(result, "input_audio_tokens"))
            figures.add("cached_input_tokens", _int(result, "input_cached_tokens"))
            figures.add("output_tokens", _int(result, "output_tokens")
                        + _int(result, "output_audio_tokens"))


def add_costs_page(report: ProviderReport, page: dict[str, Any]) -> None:
    for bucket in page["data"]:
        day = _day(bucket["start_time"])
        for result in bucket.get("results") or ():
            line_item = result.get("line_item")
            amount = result.get("amount") or {}
            if not line_item or amount.get("value") is None:
                continue  # not attributable to a model
            model = str(line_item).partition(", ")[0]
            report.figures(day, model).add("cost", Decimal(str(amount["value"])))


def _unix(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())


def _day(unix_s: Any) -> date:
    return datetime.fromtimestamp(int(unix_s), UTC).date()


def _int(result: dict[str, Any], name: str) -> int:
    value = result.get(name)
    return int(value) if value is not None else 0
