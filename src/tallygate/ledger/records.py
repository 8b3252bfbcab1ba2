"""The validation of incoming call records (``POST /api/v1/usage/events``, imports)."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt, field_validator, model_validator

from tallygate.domain.categories import (
    CALL_TYPES,
    MODEL_CATEGORIES,
    UNITS,
    category_for_endpoint,
)
from tallygate.domain.money import to_nano
from tallygate.domain.records import (
    EARLIEST_TS,
    FUTURE_SLACK_S,
    MAX_LATENCY_MS,
    MAX_METADATA_BYTES,
    MAX_REPEATS,
    MAX_TOKENS_PER_CALL,
    MAX_UNITS_PER_CALL,
    CallRecord,
)

TokenCount = Annotated[StrictInt, Field(ge=0, le=MAX_TOKENS_PER_CALL)]


class CallEvent(BaseModel):
    """A call record as another service reports it (``POST /api/v1/usage/events``, import)."""

    model_config = {"extra": "forbid", "str_strip_whitespace": True}

    id: str = Field(min_length=1, max_length=128)
    ts: datetime | float
    model: str = Field(min_length=1, max_length=200)
    call_type: Literal["model", "service", "internal"] = "model"
    api_key_id: str | None = Field(None, max_length=64)
    model_category: Literal[MODEL_CATEGORIES] | None = None  # type: ignore[valid-type]
    endpoint: str | None = Field(None, max_length=200)
    status_code: Annotated[StrictInt, Field(ge=100, le=599)] = 200
    input_tokens: TokenCount = 0
    output_tokens: TokenCount = 0
    cached_input_tokens: TokenCount = 0
    reasoning_tokens: TokenCount = 0
    total_tokens: TokenCount | None = None
    cost: Decimal | None = Field(None, ge=0, le=Decimal(1_000_000))
    latency_ms: Annotated[StrictInt, Field(ge=0, le=MAX_LATENCY_MS)] | None = None
    ttft_ms: Annotated[StrictInt, Field(ge=0, le=MAX_LATENCY_MS)] | None = None
    estimated: StrictBool = False
    metadata: dict[str, str | int | float | bool | None] | None = None
    cache_write_tokens: TokenCount = 0
    units: Annotated[StrictInt, Field(ge=0, le=MAX_UNITS_PER_CALL)] = 0
    unit: Literal[UNITS] | None = None  # type: ignore[valid-type]
    upstream_model: str | None = Field(None, min_length=1, max_length=200)
    repeats: Annotated[StrictInt, Field(ge=1, le=MAX_REPEATS)] = 1

    @field_validator("ts")
    @classmethod
    def _ts_in_range(cls, value: datetime | float) -> datetime:
        if isinstance(value, bool):
            raise ValueError("must be an RFC 3339 time or a number of seconds")
        if isinstance(value, int | float):
            if not EARLIEST_TS.timestamp() <= value <= time.time() + FUTURE_SLACK_S:
                raise ValueError("must be a number of seconds between 2000-01-01 and now")
            value = datetime.fromtimestamp(value, UTC)
        if value.tzinfo is None:
            raise ValueError("must carry a time-zone offset (e.g. 2026-11-27T10:00:00Z)")
        if value < EARLIEST_TS:
            raise ValueError("is before 2000-01-01")
        if value.timestamp() > time.time() + FUTURE_SLACK_S:
            raise ValueError("is in the future")
        return value

    @field_validator("cost")
    @classmethod
    def _cost_exact(cls, value: Decimal | None) -> Decimal | None:
        if value is not None and value != value.quantize(Decimal("1e-9")):
            raise ValueError("has more than 9 decimal places")
        return value

    @field_validator("metadata")
    @classmethod
    def _metadata_small(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is not None and len(repr(value).encode()) > MAX_METADATA_BYTES:
            raise ValueError(f"is larger than {MAX_METADATA_BYTES} bytes")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> CallEvent:
        if self.cached_input_tokens > self.input_tokens:
            raise ValueError("cached_input_tokens: cannot exceed input_tokens")
        if self.cached_input_tokens + self.cache_write_tokens > self.input_tokens:
            # Both are parts of the input: cache reads, cache writes, and the rest.
            raise ValueError("cache_write_tokens: cached_input_tokens + cache_write_tokens "
                             "cannot exceed input_tokens")
        if self.units and self.unit is None:
            raise ValueError("unit: required when units is not 0 (one of "
                             f"{', '.join(UNITS)})")
        if self.reasoning_tokens > self.output_tokens:
            raise ValueError("reasoning_tokens: cannot exceed output_tokens")
        if self.repeats > 1 and (self.latency_ms is not None or self.ttft_ms is not None):
            # A latency is one call's: averages and percentiles could not weigh it rightly.
            raise ValueError("latency_ms: a record of several calls (repeats > 1) carries "
                             "no latency_ms or ttft_ms")
        total = self.input_tokens + self.output_tokens
        if self.total_tokens is not None and self.total_tokens != total:
            raise ValueError("total_tokens: must equal input_tokens + output_tokens")
        return self

    def to_record(self, priced_cost_nano: int) -> CallRecord:
        """The stored record; ``priced_cost_nano`` is used when the event names no cost."""
        assert isinstance(self.ts, datetime)
        ts_us = int(self.ts.timestamp()) * 1_000_000 + self.ts.microsecond
        return CallRecord(
            id=self.id,
            ts_us=ts_us,
            model=self.model,
            call_type=self.call_type,
            api_key_id=self.api_key_id,
            model_category=self.model_category or category_for_endpoint(self.endpoint),
            endpoint=self.endpoint,
            status_code=self.status_code,
            input_tokens=self.input_tokens,
            output_tokens=self.output_tokens,
            cached_input_tokens=self.cached_input_tokens,
            reasoning_tokens=self.reasoning_tokens,
            total_tokens=self.input_tokens + self.output_tokens,
            cost_nano=priced_cost_nano if self.cost is None else to_nano(self.cost),
            latency_ms=self.latency_ms,
            ttft_ms=self.ttft_ms,
            estimated=self.estimated,
            metadata=self.metadata,
            cache_write_tokens=self.cache_write_tokens,
            units=self.units,
            unit=self.unit,
            upstream_model=self.upstream_model,
            repeats=self.repeats,
        )


assert set(CALL_TYPES) == {"model", "service", "internal"}
