"""The call record: one call, as the ledger stores it, and the time helpers every layer uses.

The bottom layer (``tallygate.domain``): it imports nothing of tallygate but the domain."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tallygate.domain.money import format_amount

MAX_TOKENS_PER_CALL = 1_000_000_000
MAX_UNITS_PER_CALL = 1_000_000_000
MAX_LATENCY_MS = 86_400_000
MAX_METADATA_BYTES = 4096
MAX_REPEATS = 1_000_000_000
EARLIEST_TS = datetime(2000, 1, 1, tzinfo=UTC)
FUTURE_SLACK_S = 300


@dataclass(frozen=True, slots=True)
class CallRecord:
    """One call. ``ts_us`` is microseconds since the Unix epoch (UTC); cost is in nano-units."""

    id: str
    ts_us: int
    model: str
    call_type: str
    api_key_id: str | None = None
    model_category: str = "other"
    endpoint: str | None = None
    status_code: int = 200
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    total_tokens: int = 0
    cost_nano: int = 0
    latency_ms: int | None = None
    ttft_ms: int | None = None
    estimated: bool = False
    metadata: dict[str, Any] | None = field(default=None, hash=False, compare=False)
    # Input tokens written to a prompt cache (Anthropic's cache_creation_input_tokens), part
    # of ``input_tokens`` as cache reads are; priced by ``cache_write_per_million``.
    cache_write_tokens: int = 0
    # What a call is billed by besides tokens: ``units`` of ``unit`` (images, seconds of
    # audio, characters, search units, pages, requests), priced by ``per_unit``.
    units: int = 0
    unit: str | None = None
    # The model the upstream says it ran (the answer's ``model``), beside the public name.
    upstream_model: str | None = None
    # How many calls the record stands for: above 1 for refusals the gateway aggregated
    # (``ledger/refusals.py``) or an event that says so. Tokens, units and cost are the
    # totals of them all; such a record carries no latency.
    repeats: int = 1

    def as_dict(self) -> dict[str, Any]:
        """The record as the API shows it: RFC 3339 time, exact decimal cost."""
        return {
            "id": self.id,
            "ts": format_ts(self.ts_us),
            "api_key_id": self.api_key_id,
            "model": self.model,
            "model_category": self.model_category,
            "call_type": self.call_type,
            "endpoint": self.endpoint,
            "status_code": self.status_code,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_input_tokens": self.cached_input_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "total_tokens": self.total_tokens,
            "cost": format_amount(self.cost_nano),
            "latency_ms": self.latency_ms,
            "ttft_ms": self.ttft_ms,
            "estimated": self.estimated,
            "metadata": self.metadata,
            "cache_write_tokens": self.cache_write_tokens,
            "units": self.units,
            "unit": self.unit,
            "upstream_model": self.upstream_model,
            "repeats": self.repeats,
        }


def format_ts(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_us() -> int:
    return time.time_ns() // 1000


def new_call_id() -> str:
    """A UUIDv7: time-ordered, so fresh records append to the primary-key index."""
    ms = time.time_ns() // 1_000_000
    rand = random.getrandbits(80)  # unique, not secret: no need for the OS's randomness
    low62 = rand & ((1 << 62) - 1)
    value = (ms << 80) | (0x7 << 76) | ((rand >> 68) << 64) | (0b10 << 62) | low62
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


