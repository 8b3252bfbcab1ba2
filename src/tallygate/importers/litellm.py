"""LiteLLM's ``LiteLLM_SpendLogs``: from its PostgreSQL table or a CSV export of it.

The columns are those of ``model LiteLLM_SpendLogs`` in LiteLLM's ``schema.prisma``
(BerriAI/litellm): ``request_id`` (the primary key), ``call_type``, ``api_key`` (the hashed
virtual key, LiteLLM_VerificationToken.token), ``spend`` (USD, a float), ``prompt_tokens``,
``completion_tokens``, ``startTime``, ``endTime``, ``completionStartTime``, ``model``,
``model_group``, ``custom_llm_provider``, ``user``, ``end_user``, ``session_id``, ``cache_hit``,
``status`` ("success" / "failure", SpendLogsPayload in litellm/proxy/_types.py) and
``metadata``, JSON of SpendLogsMetadata: ``user_api_key_alias`` (the key's name),
``user_api_key_team_alias``, ``usage_object`` (the call's usage as LiteLLM's ``Usage``:
``prompt_tokens_details.cached_tokens``, ``cache_read_input_tokens``,
``cache_creation_input_tokens``, ``completion_tokens_details.reasoning_tokens``) and
``error_information.error_code`` on failures.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from tallygate.domain.records import MAX_LATENCY_MS
from tallygate.importers.common import (
    Mapped,
    Skip,
    SourceKey,
    as_int,
    cache_parts,
    json_object,
    money,
    record_id,
    utc_time,
)
from tallygate.store.foreign import ForeignTable, SourceError, is_database_url

TABLE = "LiteLLM_SpendLogs"
KIND = "litellm"
# Only what the mapping reads: messages, response and proxy_server_request can be large.
COLUMNS = ("request_id", "call_type", "api_key", "spend", "prompt_tokens",
           "completion_tokens", "startTime", "endTime", "completionStartTime",
           "request_duration_ms", "model", "model_group", "custom_llm_provider", "user",
           "end_user", "session_id", "cache_hit", "status", "metadata", "team_id")

# LiteLLM's CallTypes (litellm/types/utils.py) onto the ledger's model categories and the
# OpenAI-style endpoint they stand for; the async variants ("a" + name) map the same.
_CALL_TYPES: dict[str, tuple[str, str | None]] = {
    "completion": ("chat", "/v1/chat/completions"),
    "responses": ("chat", "/v1/responses"),
    "anthropic_messages": ("chat", "/v1/messages"),
    "generate_content": ("chat", None),
    "text_completion": ("completion", "/v1/completions"),
    "embedding": ("embedding", "/v1/embeddings"),
    "rerank": ("rerank", "/v1/rerank"),
    "image_generation": ("image", "/v1/images/generations"),
    "image_edit": ("image", "/v1/images/edits"),
    "image_variation": ("image", None),
    "transcription": ("audio", "/v1/audio/transcriptions"),
    "speech": ("audio", "/v1/audio/speech"),
    "moderation": ("other", "/v1/moderations"),
}


def call_category(call_type: str) -> tuple[str, str | None]:
    """The ledger's model category (and endpoint, when one is implied) of a call type."""
    name = call_type.strip().lower()
    if name in _CALL_TYPES:
        return _CALL_TYPES[name]
    if name.startswith("a") and name[1:] in _CALL_TYPES:
        return _CALL_TYPES[name[1:]]
    return "other", None


def _status_code(row: dict[str, Any], meta: dict[str, Any]) -> int:
    if str(row.get("status") or "").strip().lower() != "failure":
        return 200
    info = meta.get("error_information")
    code = info.get("error_code") if isinstance(info, dict) else None
    try:
        number = int(str(code).strip())
    except ValueError:
        return 500
    return number if 400 <= number <= 599 else 500


def _millis(later: datetime, earlier: datetime) -> int:
    return max(0, min(MAX_LATENCY_MS, round((later - earlier).total_seconds() * 1000)))


def _short(value: Any) -> str | None:
    text = "" if value is None else str(value).strip()
    return text[:200] or None


def map_row(row: dict[str, Any], instance: str | None = None) -> Mapped:
    """One SpendLogs row as a call record, or :class:`Skip` with the reason."""
    request_id = str(row.get("request_id") or "").strip()
    if not request_id:
        raise Skip("no request_id")
    model = str(row.get("model") or "").strip() or str(row.get("model_group") or "").strip()
    if not model:
        raise Skip("no model")
    meta = json_object(row.get("metadata"))
    usage = json_object(meta.get("usage_object"))
    start = utc_time(row.get("startTime"), "startTime")
    input_tokens = as_int(row.get("prompt_tokens"), "prompt_tokens")
    output_tokens = as_int(row.get("completion_tokens"), "completion_tokens")
    prompt_details = json_object(usage.get("prompt_tokens_details"))
    output_details = json_object(usage.get("completion_tokens_details"))
    cached, written = cache_parts(
        input_tokens,
        as_int(prompt_details.get("cached_tokens") or usage.get("cache_read_input_tokens"),
               "usage_object.cached_tokens"),
        as_int(usage.get("cache_creation_input_tokens")
               or prompt_details.get("cache_creation_tokens"),
               "usage_object.cache_creation_input_tokens"))
    reasoning = min(output_tokens, as_int(output_details.get("reasoning_tokens"),
                                          "usage_object.reasoning_tokens"))
    call_type = str(row.get("call_type") or "")
    category, endpoint = call_category(call_type)
    latency = ttft = None
    if row.get("endTime") not in (None, ""):
        end = utc_time(row["endTime"], "endTime")
        latency = _millis(end, start)
        first = row.get("completionStartTime")
        if first not in (None, ""):
            first_at = utc_time(first, "completionStartTime")
            if first_at < end:  # LiteLLM sets it to endTime when nothing was streamed
                ttft = _millis(first_at, start)
    elif row.get("request_duration_ms") not in (None, ""):
        latency = min(MAX_LATENCY_MS, as_int(row["request_duration_ms"], "request_duration_ms"))
    metadata = {name: value for name, value in (
        ("source", KIND), ("call_type", _short(call_type)),
        ("model_group", _short(row.get("model_group"))),
        ("provider", _short(row.get("custom_llm_provider"))),
        ("user", _short(row.get("user"))), ("end_user", _short(row.get("end_user"))),
        ("session_id", _short(row.get("session_id"))),
        ("team", _short(meta.get("user_api_key_team_alias"))),
        ("cache_hit", _short(row.get("cache_hit")) if str(row.get("cache_hit")).lower()
         == "true" else None)) if value}
    event: dict[str, Any] = {
        "id": record_id(KIND, instance, request_id), "ts": start, "model": model,
        "model_category": category, "endpoint": endpoint,
        "status_code": _status_code(row, meta),
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "cached_input_tokens": cached, "cache_write_tokens": written,
        "reasoning_tokens": reasoning, "cost": money(row.get("spend"), "spend"),
        "latency_ms": latency, "ttft_ms": ttft, "metadata": metadata,
    }
    key_hash = str(row.get("api_key") or "").strip()
    key = None
    if key_hash:
        alias = str(meta.get("user_api_key_alias") or "").strip()
        key = SourceKey(key_hash, alias or f"litellm key {key_hash[:8]}")
    return Mapped(event, key)


def is_csv(source: str) -> bool:
    return not is_database_url(source)


def csv_rows(path: Path) -> tuple[int, Iterator[dict[str, Any]]]:
    """The rows of a CSV export of the table (a header row of its column names)."""
    if not path.is_file():
        raise SourceError(f"{path}: no such file (give a CSV export of {TABLE} or a "
                          "PostgreSQL URL)")

    def rows() -> Iterator[dict[str, Any]]:
        # utf-8-sig: spreadsheets start their CSV files with a byte-order mark.
        with path.open(encoding="utf-8-sig", newline="") as handle:
            for row in csv.DictReader(handle):
                yield {name: value for name, value in row.items() if name is not None}

    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            reader = csv.DictReader(handle)
            header = reader.fieldnames or []
            if "request_id" not in header:
                raise SourceError(f"{path}: not a CSV export of {TABLE} (no request_id "
                                  "column in its header)")
            total = sum(1 for _ in reader)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise SourceError(f"{path}: not a readable CSV file: {exc}") from None
    return total, rows()


def table_rows(table: ForeignTable, batch_size: int) -> Iterator[dict[str, Any]]:
    for batch in table.batches("request_id", COLUMNS, batch_size):
        yield from batch
