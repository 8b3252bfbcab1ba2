"""Other gateways' tables as they really are, filled with realistic rows, and what the ledger
must hold after importing them (computed here from the rows, apart from the importers).

The schemas follow the sources: New API's and One API's ``type Log struct`` in
``model/log.go`` (GORM, snake-case columns) and LiteLLM's ``model LiteLLM_SpendLogs`` in
``schema.prisma`` (Prisma on PostgreSQL: ``Json`` is jsonb, ``DateTime`` timestamp(3)).
"""

from __future__ import annotations

import csv
import json
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
)
from sqlalchemy.dialects.postgresql import JSONB, TIMESTAMP

from tallygate.store.foreign import source_engine_url


def newapi_logs(metadata: MetaData) -> Table:
    return Table(
        "logs", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("user_id", Integer), Column("created_at", BigInteger), Column("type", Integer),
        Column("content", Text), Column("username", String(191), server_default=""),
        Column("token_name", String(191), server_default=""),
        Column("model_name", String(191), server_default=""),
        Column("quota", Integer, server_default="0"),
        Column("prompt_tokens", Integer, server_default="0"),
        Column("completion_tokens", Integer, server_default="0"),
        Column("use_time", Integer, server_default="0"), Column("is_stream", Boolean),
        Column("channel_id", Integer), Column("token_id", Integer, server_default="0"),
        Column("group", String(191)), Column("ip", String(191), server_default=""),
        Column("other", Text),
    )


def oneapi_logs(metadata: MetaData) -> Table:
    return Table(
        "logs", metadata,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("user_id", Integer), Column("created_at", BigInteger), Column("type", Integer),
        Column("content", Text), Column("username", String(191), server_default=""),
        Column("token_name", String(191), server_default=""),
        Column("model_name", String(191), server_default=""),
        Column("quota", Integer, server_default="0"),
        Column("prompt_tokens", Integer, server_default="0"),
        Column("completion_tokens", Integer, server_default="0"),
        Column("channel_id", Integer), Column("request_id", String(191), server_default=""),
        Column("elapsed_time", BigInteger, server_default="0"),
        Column("is_stream", Boolean, server_default="0"),
        Column("system_prompt_reset", Boolean, server_default="0"),
    )


def litellm_spendlogs(metadata: MetaData) -> Table:
    json_type = JSON().with_variant(JSONB(), "postgresql")
    time_type = DateTime().with_variant(TIMESTAMP(precision=3), "postgresql")
    return Table(
        "LiteLLM_SpendLogs", metadata,
        Column("request_id", Text, primary_key=True), Column("call_type", Text),
        Column("api_key", Text, server_default=""), Column("spend", Float),
        Column("total_tokens", Integer), Column("prompt_tokens", Integer),
        Column("completion_tokens", Integer), Column("startTime", time_type),
        Column("endTime", time_type), Column("request_duration_ms", Integer),
        Column("completionStartTime", time_type), Column("model", Text),
        Column("model_id", Text), Column("model_group", Text),
        Column("custom_llm_provider", Text), Column("api_base", Text), Column("user", Text),
        Column("metadata", json_type), Column("cache_hit", Text), Column("cache_key", Text),
        Column("request_tags", json_type), Column("team_id", Text),
        Column("organization_id", Text), Column("end_user", Text),
        Column("requester_ip_address", Text), Column("messages", json_type),
        Column("response", json_type), Column("session_id", Text), Column("status", Text),
        Column("mcp_namespaced_tool_name", Text), Column("agent_id", Text),
        Column("proxy_server_request", json_type),
    )


def fill(url: str, make_table: Any, rows: list[dict[str, Any]]) -> None:
    """Create the table afresh at ``url`` (a database URL) and insert ``rows``."""
    engine = create_engine(source_engine_url(url))
    metadata = MetaData()
    table = make_table(metadata)
    try:
        metadata.drop_all(engine)
        metadata.create_all(engine)
        with engine.begin() as conn:
            for start in range(0, len(rows), 500):
                conn.execute(table.insert(), rows[start:start + 500])
    finally:
        engine.dispose()


@dataclass(frozen=True)
class Expected:
    """One call as the ledger must record it."""

    id: str
    input_tokens: int
    output_tokens: int
    cached: int
    written: int
    cost: Decimal
    latency_ms: int
    status_code: int
    key: str | None  # the source key's name


def _ago(rng: random.Random, now: datetime) -> datetime:
    return now - timedelta(days=rng.randint(0, 9), seconds=rng.randint(60, 86_000))


NEWAPI_TOKENS = [(11, "prod", "alice"), (12, "batch", "alice"), (21, "prod", "bob")]


def newapi_rows(kind: str, count: int, seed: int = 7, quota_per_unit: int = 500_000
                ) -> tuple[list[dict[str, Any]], list[Expected], dict[str, int]]:
    """Rows of a New API (``kind`` "new-api") or One API logs table, what the ledger must
    hold for each call among them, and how many rows are skipped for each reason."""
    rng = random.Random(seed)
    now = datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    expected: list[Expected] = []
    skipped: dict[str, int] = {}
    for number in range(1, count + 1):
        token_id, token, user = NEWAPI_TOKENS[number % 3]
        created = int(_ago(rng, now).timestamp())
        prompt, completion = rng.randint(0, 5000), rng.randint(0, 900)
        quota = rng.randint(0, 3_000_000)
        seconds, millis = rng.randint(0, 40), rng.randint(0, 40_000)
        log_type = rng.choice([2, 2, 2, 2, 2, 2, 5, 1, 3, 4] if kind == "new-api"
                              else [2, 2, 2, 2, 2, 2, 1, 3, 4, 5])
        model = rng.choice(["gpt-4o", "claude-sonnet-4", "deepseek-chat"])
        row: dict[str, Any] = {
            "id": number, "user_id": 1 + number % 2, "created_at": created, "type": log_type,
            "content": "模型倍率 1.25，分组倍率 1", "username": user, "token_name": token,
            "model_name": model, "quota": quota, "prompt_tokens": prompt,
            "completion_tokens": completion, "is_stream": bool(number % 2),
            "channel_id": 3,
        }
        input_tokens, cached, written = prompt, 0, 0
        if kind == "new-api":
            row.update(use_time=seconds, token_id=token_id, group="default", ip="")
            other: dict[str, Any] = {"model_ratio": 1.25, "group_ratio": 1,
                                     "completion_ratio": 4, "frt": -1000}
            if model == "claude-sonnet-4" and number % 3 == 0:
                # Anthropic's usage: the prompt tokens exclude cache reads and writes.
                cached, written = rng.randint(1, 2000), rng.randint(1, 500)
                other.update(claude=True, usage_semantic="anthropic", cache_tokens=cached,
                             cache_creation_tokens=written, cache_creation_ratio=1.25)
                input_tokens = prompt + cached + written
            elif model == "gpt-4o" and number % 2 == 0 and prompt:
                cached = rng.randint(0, prompt)
                other.update(cache_tokens=cached, cache_ratio=0.5)
            if log_type == 5:
                other = {"error_type": "upstream_error", "status_code": 429}
                row.update(quota=0, prompt_tokens=0, completion_tokens=0)
                input_tokens = cached = written = 0
            row["other"] = json.dumps(other)
        else:
            row.update(elapsed_time=millis, request_id=f"2026{number:010d}",
                       system_prompt_reset=False)
        if log_type not in ((2, 5) if kind == "new-api" else (2,)):
            name = {1: "top-up", 3: "management", 4: "system", 5: "test"}[log_type]
            reason = f"not a consumption row ({name})"
            skipped[reason] = skipped.get(reason, 0) + 1
        elif number % 17 == 0:
            row["model_name"] = ""
            skipped["no model"] = skipped.get("no model", 0) + 1
        else:
            expected.append(Expected(
                id=f"{kind}-{number}", input_tokens=input_tokens,
                output_tokens=row["completion_tokens"], cached=cached, written=written,
                cost=Decimal(row["quota"]) / quota_per_unit,
                latency_ms=seconds * 1000 if kind == "new-api" else millis,
                status_code=429 if log_type == 5 else 200, key=token))
        rows.append(row)
    return rows, expected, skipped


LITELLM_KEYS = [("a3f0c1" * 10 + "beef", "search-team"), ("77d2e9" * 10 + "cafe", None)]


def litellm_rows(count: int, seed: int = 11
                 ) -> tuple[list[dict[str, Any]], list[Expected], dict[str, int]]:
    rng = random.Random(seed)
    now = datetime.now(UTC).replace(tzinfo=None)  # Prisma stores UTC without a zone
    rows: list[dict[str, Any]] = []
    expected: list[Expected] = []
    skipped: dict[str, int] = {}
    for number in range(count):
        key_hash, alias = LITELLM_KEYS[number % 2]
        start = _ago(rng, now.replace(tzinfo=UTC)).replace(tzinfo=None, microsecond=0)
        start = start.replace(microsecond=rng.randint(0, 999) * 1000)
        latency = rng.randint(50, 90_000)
        end = start + timedelta(milliseconds=latency)
        prompt, completion = rng.randint(1, 8000), rng.randint(0, 1500)
        spend = round(rng.uniform(0, 0.5), rng.randint(2, 12))
        call_type = rng.choice(["acompletion", "acompletion", "completion", "aembedding",
                                "aimage_generation", "atranscription", "arerank"])
        usage: dict[str, Any] = {"prompt_tokens": prompt, "completion_tokens": completion,
                                 "total_tokens": prompt + completion}
        cached = written = 0
        if number % 3 == 0:
            cached = rng.randint(0, prompt)
            usage["prompt_tokens_details"] = {"cached_tokens": cached, "audio_tokens": None}
        elif number % 5 == 1:
            cached, written = rng.randint(0, prompt // 2), rng.randint(0, prompt // 2)
            usage.update(cache_read_input_tokens=cached, cache_creation_input_tokens=written,
                         prompt_tokens_details={"cached_tokens": cached})
        status = "failure" if number % 13 == 5 else "success"
        metadata: dict[str, Any] = {
            "user_api_key": key_hash, "user_api_key_alias": alias,
            "user_api_key_team_id": "team-1", "user_api_key_team_alias": "search",
            "user_api_key_user_id": "u-1", "spend_logs_metadata": None,
            "requester_ip_address": "", "status": status, "usage_object": usage,
            "additional_usage_values": {},
        }
        if status == "failure":
            metadata["error_information"] = {"error_code": "429", "error_class":
                                             "RateLimitError", "llm_provider": "openai"}
        row = {
            "request_id": f"chatcmpl-{seed}-{number:05d}", "call_type": call_type,
            "api_key": key_hash, "spend": spend, "total_tokens": prompt + completion,
            "prompt_tokens": prompt, "completion_tokens": completion, "startTime": start,
            "endTime": end, "completionStartTime": end, "model": "gpt-4o-2024-08-06",
            "model_id": "m1", "model_group": "gpt-4o", "custom_llm_provider": "openai",
            "api_base": "https://api.openai.com/v1", "user": "", "metadata": metadata,
            "cache_hit": "False", "cache_key": "", "request_tags": ["prod"],
            "team_id": "team-1", "end_user": "", "session_id": None, "status": status,
            "messages": {}, "response": {}, "proxy_server_request": {},
        }
        if number % 19 == 7:
            row["model"] = ""
            row["model_group"] = ""
            skipped["no model"] = skipped.get("no model", 0) + 1
        else:
            expected.append(Expected(
                id=f"litellm-{row['request_id']}", input_tokens=prompt,
                output_tokens=completion, cached=cached, written=written,
                cost=Decimal(repr(spend)).quantize(Decimal("1e-9")), latency_ms=latency,
                status_code=429 if status == "failure" else 200,
                key=alias or f"litellm key {key_hash[:8]}"))
        rows.append(row)
    return rows, expected, skipped


def write_litellm_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    """The table exported as CSV (psql's \\copy ... CSV HEADER: JSON as text, times as
    ``YYYY-MM-DD HH:MM:SS.mmm``)."""
    columns = list(rows[0])
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        for row in rows:
            writer.writerow([
                json.dumps(value) if isinstance(value, dict | list) else
                value.isoformat(sep=" ", timespec="milliseconds")
                if isinstance(value, datetime) else "" if value is None else value
                for value in (row[name] for name in columns)])


def check_ledger(ledger: Any, expected: list[Expected]) -> None:
    """Every expected call stored as expected, nothing else; the summary the page shows
    (the one query function) equals the brute-force sums over the source rows."""
    from tallygate.domain.money import format_amount, to_nano
    from tallygate.keys.service import KeyService
    from tallygate.ledger.statistics import UsageQuery, usage_summary
    from tallygate.ledger.timerange import checked_range
    from tallygate.store.usage import CallFilter, iter_calls

    names = {key.id: key.name for key in KeyService(ledger.db).list()}
    stored = {r.id: r for r in iter_calls(ledger.db, CallFilter(), 0, 2**62)}
    assert set(stored) == {e.id for e in expected}
    for e in expected:
        r = stored[e.id]
        got = (r.input_tokens, r.output_tokens, r.cached_input_tokens, r.cache_write_tokens,
               r.cost_nano, r.latency_ms, r.status_code,
               names.get(r.api_key_id or ""))
        assert got == (e.input_tokens, e.output_tokens, e.cached, e.written,
                       to_nano(e.cost), e.latency_ms, e.status_code, e.key), e.id
    cards = usage_summary(ledger, UsageQuery(CallFilter(), checked_range("30d", None, None,
                                                                         "UTC")))["cards"]
    assert cards["model_calls"] == len(expected)
    assert cards["input_tokens"] == sum(e.input_tokens for e in expected)
    assert cards["output_tokens"] == sum(e.output_tokens for e in expected)
    assert cards["total_tokens"] == sum(e.input_tokens + e.output_tokens for e in expected)
    assert cards["cost"]["amount"] == format_amount(sum(to_nano(e.cost) for e in expected))
