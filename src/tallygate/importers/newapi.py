"""New API's and One API's ``logs`` table: from SQLite, PostgreSQL or MySQL/MariaDB.

Columns from ``type Log struct`` in ``model/log.go`` (GORM names them in snake case):

- New API (QuantumNous/new-api, formerly Calcium-Ion/new-api): ``id``, ``created_at`` (Unix
  seconds), ``type`` (LogTypeConsume = 2, LogTypeError = 5; top-ups, management, system and
  refund rows are not calls), ``username``, ``token_name``, ``token_id``, ``model_name``,
  ``quota``, ``prompt_tokens``, ``completion_tokens``, ``use_time`` (seconds), ``is_stream``,
  ``channel_id``, ``group`` and ``other``, JSON whose ``cache_tokens`` are cache reads and
  ``cache_write_tokens`` (newer) or ``cache_creation_tokens`` / ``cache_creation_tokens_5m``
  + ``cache_creation_tokens_1h`` cache writes; ``claude: true`` or ``usage_semantic:
  "anthropic"`` marks Anthropic's usage, whose prompt tokens exclude the cache tokens.
- One API (songquanpeng/one-api): the same first columns without ``token_id``, ``use_time``
  and ``other``; ``elapsed_time`` is in milliseconds; only LogTypeConsume = 2 is a call.

Both ship with ``QuotaPerUnit = 500 * 1000.0`` quota per US dollar (common/constants.go).
"""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from typing import Any

from tallygate.domain.categories import category_for_endpoint
from tallygate.domain.records import MAX_LATENCY_MS
from tallygate.importers.common import (
    Mapped,
    Skip,
    SourceKey,
    as_int,
    cache_parts,
    json_object,
    quota_cost,
    record_id,
    unix_time,
)
from tallygate.store.foreign import ForeignTable

TABLE = "logs"
DEFAULT_QUOTA_PER_UNIT = Decimal(500_000)
LOG_TYPE_CONSUME = 2
LOG_TYPE_ERROR = 5  # New API only; One API's 5 is LogTypeTest

COLUMNS = ("id", "created_at", "type", "username", "token_name", "token_id", "model_name",
           "quota", "prompt_tokens", "completion_tokens", "use_time", "elapsed_time",
           "is_stream", "channel_id", "group", "other")

_TYPE_NAMES = {
    "new-api": {0: "unknown", 1: "top-up", 3: "management", 4: "system", 6: "refund"},
    "one-api": {0: "unknown", 1: "top-up", 3: "management", 4: "system", 5: "test"},
}


def _skip_type(kind: str, log_type: int) -> Skip:
    name = _TYPE_NAMES[kind].get(log_type, f"type {log_type}")
    return Skip(f"not a consumption row ({name})")


def _cache_tokens(other: dict[str, Any], prompt: int) -> tuple[int, int, int]:
    """(input tokens, cache reads, cache writes) from the prompt tokens and ``other``."""
    read = as_int(other.get("cache_tokens"), "other.cache_tokens")
    if other.get("cache_write_tokens") not in (None, ""):
        written = as_int(other.get("cache_write_tokens"), "other.cache_write_tokens")
    else:
        split = (as_int(other.get("cache_creation_tokens_5m"), "other.cache_creation_tokens_5m")
                 + as_int(other.get("cache_creation_tokens_1h"),
                          "other.cache_creation_tokens_1h"))
        written = max(as_int(other.get("cache_creation_tokens"),
                             "other.cache_creation_tokens"), split)
    anthropic = (other.get("claude") is True
                 or str(other.get("usage_semantic") or "").lower() == "anthropic")
    input_tokens = prompt + read + written if anthropic else prompt
    cached, written = cache_parts(input_tokens, read, written)
    return input_tokens, cached, written


def _error_status(other: dict[str, Any]) -> int:
    try:
        code = int(str(other.get("status_code")).strip())
    except ValueError:
        return 500
    return code if 400 <= code <= 599 else 500


def map_row(kind: str, row: dict[str, Any], quota_per_unit: Decimal,
            instance: str | None = None) -> Mapped:
    """One ``logs`` row of ``kind`` ("new-api" or "one-api") as a call record, or
    :class:`Skip` with the reason."""
    log_type = as_int(row.get("type"), "type")
    calls = (LOG_TYPE_CONSUME, LOG_TYPE_ERROR) if kind == "new-api" else (LOG_TYPE_CONSUME,)
    if log_type not in calls:
        raise _skip_type(kind, log_type)
    model = str(row.get("model_name") or "").strip()
    if not model:
        raise Skip("no model")
    ts = unix_time(row.get("created_at"), "created_at")
    if as_int_signed(row.get("quota")) < 0:
        # New API's task re-settlement logs the difference, which may be a refund.
        raise Skip("negative quota (a settlement correction)")
    other = json_object(row.get("other"))
    prompt = as_int(row.get("prompt_tokens"), "prompt_tokens")
    input_tokens, cached, written = _cache_tokens(other, prompt)
    # New API's use_time is in whole seconds, One API's elapsed_time in milliseconds; an
    # older schema without the column leaves the latency unknown rather than 0.
    column, scale = ("use_time", 1000) if kind == "new-api" else ("elapsed_time", 1)
    latency = None if row.get(column) is None else as_int(row[column], column) * scale
    path = other.get("request_path")
    endpoint = path[:200] if isinstance(path, str) and path.startswith("/") else None
    metadata = {name: value for name, value in (
        ("source", kind), ("stream", bool(row.get("is_stream")) or None),
        ("channel_id", as_int(row.get("channel_id"), "channel_id") or None),
        ("group", str(row.get("group") or "")[:200] or None),
        ("user", str(row.get("username") or "")[:200] or None)) if value is not None}
    event: dict[str, Any] = {
        "id": record_id(kind, instance, row.get("id")), "ts": ts, "model": model,
        "model_category": category_for_endpoint(endpoint), "endpoint": endpoint,
        "status_code": 200 if log_type == LOG_TYPE_CONSUME else _error_status(other),
        "input_tokens": input_tokens,
        "output_tokens": as_int(row.get("completion_tokens"), "completion_tokens"),
        "cached_input_tokens": cached, "cache_write_tokens": written,
        "cost": quota_cost(row.get("quota"), quota_per_unit),
        "latency_ms": None if latency is None else min(latency, MAX_LATENCY_MS),
        "metadata": metadata,
    }
    return Mapped(event, _source_key(kind, row))


def as_int_signed(value: Any) -> int:
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _source_key(kind: str, row: dict[str, Any]) -> SourceKey | None:
    """New API's tokens have ids; One API's logs name a token only by its name, which is
    unique per user, so its identity is the user's and the token's names together."""
    name = str(row.get("token_name") or "").strip()
    user = str(row.get("username") or "").strip()
    token_id = as_int_signed(row.get("token_id"))
    if token_id > 0:
        return SourceKey(f"token:{token_id}", name or f"token {token_id}", user or None)
    if not name:
        return None
    return SourceKey(f"user:{user}\0token:{name}", name, user or None)


def table_rows(table: ForeignTable, batch_size: int) -> Iterator[dict[str, Any]]:
    for batch in table.batches("id", COLUMNS, batch_size):
        yield from batch
