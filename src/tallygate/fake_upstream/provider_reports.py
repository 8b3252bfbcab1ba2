"""A fake provider account: OpenAI's and Anthropic's usage and cost reports (admin APIs).

Served in the documented shapes (see tallygate/providers/openai.py and anthropic.py for the
sources), paged by ``limit`` buckets (at most ``page_size``) with opaque ``next_page`` tokens,
one bucket per UTC day of the range, empty days included. ``failures`` are statuses answered
before any real answer (a 429 with ``Retry-After: 0``), and every request is kept in
``requests`` for tests to look at. Figures are added per call in the ledger's convention
(:meth:`FakeProviderReports.add_call`) and stored in each provider's own.
"""

from __future__ import annotations

import base64
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

from tallygate.fake_upstream.asgi import (
    Receive,
    Scope,
    Send,
    anthropic_error,
    header,
    lifespan,
    openai_error,
    send_json,
)

OPENAI_USAGE = {"/v1/organization/usage/completions": "completions",
                "/v1/organization/usage/embeddings": "embeddings"}
OPENAI_COSTS = "/v1/organization/costs"
ANTHROPIC_USAGE = "/v1/organizations/usage_report/messages"
ANTHROPIC_COSTS = "/v1/organizations/cost_report"
PATHS = frozenset({*OPENAI_USAGE, OPENAI_COSTS, ANTHROPIC_USAGE, ANTHROPIC_COSTS})
DAY = timedelta(days=1)


def _counts() -> defaultdict[str, int]:
    return defaultdict(int)


@dataclass
class FakeProviderReports:
    admin_key: str = "sk-admin-fake"
    page_size: int = 31
    failures: list[int] = field(default_factory=list)
    requests: list[tuple[str, list[tuple[str, str]], dict[str, str]]] = field(
        default_factory=list)
    # (endpoint, day, model) -> OpenAI's fields; (day, line item) -> dollars
    openai_usage: defaultdict[tuple[str, date, str], defaultdict[str, int]] = field(
        default_factory=lambda: defaultdict(_counts))
    openai_costs: defaultdict[tuple[date, str], Decimal] = field(
        default_factory=lambda: defaultdict(Decimal))
    # (day, model) -> Anthropic's fields; (day, model, token type) -> cents
    anthropic_usage: defaultdict[tuple[date, str], defaultdict[str, int]] = field(
        default_factory=lambda: defaultdict(_counts))
    anthropic_costs: defaultdict[tuple[date, str, str], Decimal] = field(
        default_factory=lambda: defaultdict(Decimal))

    def add_call(self, kind: str, day: date, model: str, *, input_tokens: int = 0,
                 cached_input_tokens: int = 0, cache_write_tokens: int = 0,
                 output_tokens: int = 0, cost: Decimal = Decimal(0),
                 endpoint: str = "completions") -> None:
        """One call as the ledger counts it (input = all input), billed by ``kind``."""
        self.add_figures(kind, day, model, requests=1, input_tokens=input_tokens,
                         cached_input_tokens=cached_input_tokens,
                         cache_write_tokens=cache_write_tokens, output_tokens=output_tokens,
                         cost=cost, endpoint=endpoint)

    def add_figures(self, kind: str, day: date, model: str, *, requests: int,
                    input_tokens: int, cached_input_tokens: int = 0,
                    cache_write_tokens: int = 0, output_tokens: int = 0,
                    cost: Decimal = Decimal(0), endpoint: str = "completions") -> None:
        """A day's calls of ``model`` as the ledger sums them, stored in ``kind``'s terms."""
        if kind == "openai":
            usage = self.openai_usage[(endpoint, day, model)]
            usage["num_model_requests"] += requests
            usage["input_tokens"] += input_tokens  # cached included, as OpenAI counts
            if endpoint == "completions":
                usage["input_cached_tokens"] += cached_input_tokens
                usage["output_tokens"] += output_tokens
            self.openai_costs[(day, f"{model}, input")] += cost
        else:
            usage = self.anthropic_usage[(day, model)]
            usage["uncached_input_tokens"] += (input_tokens - cached_input_tokens
                                               - cache_write_tokens)
            usage["cache_read_input_tokens"] += cached_input_tokens
            usage["ephemeral_5m_input_tokens"] += cache_write_tokens
            usage["output_tokens"] += output_tokens
            self.anthropic_costs[(day, model, "uncached_input_tokens")] += cost * 100

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] == "http":
            await self.answer(scope, send)

    async def answer(self, scope: Scope, send: Send) -> None:
        path = scope["path"]
        query = parse_qsl(bytes(scope.get("query_string", b"")).decode())
        anthropic = path.startswith("/v1/organizations/")
        headers = {name: header(scope, name.encode()) for name in
                   ("authorization", "x-api-key", "anthropic-version")}
        self.requests.append((path, query, headers))
        error = anthropic_error if anthropic else openai_error
        if scope["method"] != "GET" or path not in PATHS:
            await send_json(send, 404, error(f"no route {path}"))
            return
        if self.failures:
            status = self.failures.pop(0)
            await send_json(send, status, error(f"injected failure ({status})"),
                            [(b"retry-after", b"0")] if status == 429 else [])
            return
        given = headers["x-api-key"] if anthropic else headers["authorization"].removeprefix(
            "Bearer ")
        if given != self.admin_key:
            await send_json(send, 401, error("invalid admin key"))
            return
        if anthropic and not headers["anthropic-version"]:
            await send_json(send, 400, error("anthropic-version header is required"))
            return
        params = dict(query)
        try:
            if anthropic:
                start = _date_of(params["starting_at"])
                end = _date_of(params["ending_at"])
            else:
                start = datetime.fromtimestamp(int(params["start_time"]), UTC).date()
                end = datetime.fromtimestamp(int(params["end_time"]), UTC).date()
            limit = min(int(params.get("limit", "7")), self.page_size)
        except (KeyError, ValueError) as exc:
            await send_json(send, 400, error(f"bad query: {exc}"))
            return
        first = _date_of(base64.b64decode(params["page"][5:]).decode()) if "page" in params \
            else start
        days: list[date] = []
        day = first
        while day < end and len(days) < limit:
            days.append(day)
            day += DAY
        more = day < end
        next_page = ("page_" + base64.b64encode(f"{day.isoformat()}T00:00:00Z".encode())
                     .decode()) if more else None
        if anthropic:
            build = self._anthropic_usage if path == ANTHROPIC_USAGE else self._anthropic_costs
            pages = [{"starting_at": f"{d.isoformat()}T00:00:00Z",
                     "ending_at": f"{(d + DAY).isoformat()}T00:00:00Z",
                     "results": build(d)} for d in days]
            await send_json(send, 200, {"data": pages, "has_more": more,
                                        "next_page": next_page})
            return
        results = (self._openai_costs if path == OPENAI_COSTS
                   else lambda d: self._openai_usage(OPENAI_USAGE[path], d))
        data: list[dict[str, Any]] = [
            {"object": "bucket", "start_time": _unix(d), "end_time": _unix(d + DAY),
             "results": results(d)} for d in days]
        await send_json(send, 200, {"object": "page", "data": data, "has_more": more,
                                    "next_page": next_page})

    def _openai_usage(self, endpoint: str, day: date) -> list[dict[str, Any]]:
        out = []
        for (kind, d, model), usage in sorted(self.openai_usage.items()):
            if kind != endpoint or d != day:
                continue
            result: dict[str, Any] = {
                "object": f"organization.usage.{endpoint}.result",
                "input_tokens": usage["input_tokens"],
                "num_model_requests": usage["num_model_requests"],
                "project_id": None, "user_id": None, "api_key_id": None, "model": model}
            if endpoint == "completions":
                result.update(input_cached_tokens=usage["input_cached_tokens"],
                              output_tokens=usage["output_tokens"], input_audio_tokens=0,
                              output_audio_tokens=0, batch=None)
            out.append(result)
        return out

    def _openai_costs(self, day: date) -> list[dict[str, Any]]:
        # A JSON number, as OpenAI sends it: a float whose shortest form is the decimal.
        return [{"object": "organization.costs.result",
                 "amount": {"value": float(value), "currency": "usd"},
                 "line_item": line_item, "project_id": None}
                for (d, line_item), value in sorted(self.openai_costs.items()) if d == day]

    def _anthropic_usage(self, day: date) -> list[dict[str, Any]]:
        return [{"uncached_input_tokens": u["uncached_input_tokens"],
                 "cache_creation": {"ephemeral_1h_input_tokens": u["ephemeral_1h_input_tokens"],
                                    "ephemeral_5m_input_tokens": u["ephemeral_5m_input_tokens"]},
                 "cache_read_input_tokens": u["cache_read_input_tokens"],
                 "output_tokens": u["output_tokens"],
                 "server_tool_use": {"web_search_requests": 0},
                 "api_key_id": None, "workspace_id": None, "model": model,
                 "service_tier": None, "context_window": None}
                for (d, model), u in sorted(self.anthropic_usage.items()) if d == day]

    def _anthropic_costs(self, day: date) -> list[dict[str, Any]]:
        results: list[dict[str, Any]] = [
            {"currency": "USD", "amount": str(cents), "workspace_id": None,
             "description": f"{model} Usage - {token_type}", "cost_type": "tokens",
             "context_window": "0-200k", "model": model, "service_tier": "standard",
             "token_type": token_type}
            for (d, model, token_type), cents in sorted(self.anthropic_costs.items())
            if d == day]
        if results:  # a cost that is not a model's tokens: never attributed to one
            results.append({"currency": "USD", "amount": "1.5", "workspace_id": None,
                            "description": "Web Search", "cost_type": "web_search",
                            "context_window": None, "model": None, "service_tier": None,
                            "token_type": None})
        return results


def _date_of(rfc3339: str) -> date:
    return datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).astimezone(UTC).date()


def _unix(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
