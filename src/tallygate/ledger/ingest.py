"""Turning reported events into stored records: per-item validation, pricing, idempotent write."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from tallygate.domain.records import CallRecord
from tallygate.ledger.records import CallEvent
from tallygate.ledger.service import Ledger
from tallygate.store.calls import InsertResult


@dataclass(frozen=True, slots=True)
class ItemError:
    index: int
    id: str | None
    field: str | None
    message: str

    def as_dict(self) -> dict[str, Any]:
        return {"index": self.index, "id": self.id, "field": self.field, "message": self.message}


@dataclass(slots=True)
class IngestResult:
    accepted: int = 0
    duplicates: int = 0
    errors: list[ItemError] = field(default_factory=list)
    refused: int = 0  # valid records older than the purge floor (each also in ``errors``)
    # The records this batch added to the ledger (neither duplicates nor refused), for a
    # caller that counts them elsewhere too (a key's limit counters); ``add`` leaves them
    # out, so that a long import does not hold every record it wrote.
    stored: list[CallRecord] = field(default_factory=list, repr=False)

    def add(self, other: IngestResult) -> None:
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.errors.extend(other.errors)
        self.refused += other.refused

    def as_dict(self) -> dict[str, Any]:
        return {"accepted": self.accepted, "duplicates": self.duplicates,
                "rejected": len(self.errors), "refused": self.refused,
                "errors": [e.as_dict() for e in self.errors]}


_TEXT_FIELDS = ("id", "model", "api_key_id", "endpoint", "upstream_model")


def _first_error(exc: ValidationError) -> tuple[str | None, str]:
    error = exc.errors(include_url=False)[0]
    # A record is flat, so its top-level field is the one to name; deeper parts of the
    # location are pydantic's (the union member it tried: "ts.datetime", "metadata.k.str").
    location = str(error["loc"][0]) if error["loc"] else ""
    message = error["msg"].removeprefix("Value error, ")
    # Model-level checks name their field at the start of the message ("total_tokens: …").
    if not location and ": " in message:
        location, message = message.split(": ", 1)
    return location or None, message


def validate_events(ledger: Ledger, items: Sequence[Any],
                    first_index: int = 0) -> tuple[list[CallRecord], list[ItemError]]:
    """Valid items become records (priced, with the key's discount, when they carry no
    cost); the others, errors."""
    records, errors, _ = _validated(ledger, items, first_index)
    return records, errors


def _validated(ledger: Ledger, items: Sequence[Any], first_index: int
               ) -> tuple[list[CallRecord], list[ItemError], list[int]]:
    """``validate_events``, plus the index of each record's item."""
    records: list[CallRecord] = []
    indexes: list[int] = []
    errors: list[ItemError] = []
    for offset, item in enumerate(items):
        index = first_index + offset
        item_id = item.get("id") if isinstance(item, dict) else None
        item_id = item_id if isinstance(item_id, str) else None
        try:
            event = CallEvent.model_validate(item)
        except ValidationError as exc:
            name, message = _first_error(exc)
            errors.append(ItemError(index, item_id, name, message))
            continue
        except (OverflowError, OSError):
            # Seconds beyond what a datetime holds; ts is the only field made from a number.
            errors.append(ItemError(index, item_id, "ts", "is out of range"))
            continue
        nul = next((name for name in _TEXT_FIELDS if "\x00" in (getattr(event, name) or "")),
                   None)
        if nul is not None:
            # PostgreSQL refuses NUL in text: one such item would fail the whole batch.
            errors.append(ItemError(index, item_id, nul, "must not contain NUL characters"))
            continue
        if event.metadata and any(isinstance(value, float) and not math.isfinite(value)
                                  for value in event.metadata.values()):
            # NaN and Infinity are not JSON: stored, they would break every JSON answer.
            errors.append(ItemError(index, item_id, "metadata",
                                    "numbers must be finite (no NaN or Infinity)"))
            continue
        record = event.to_record(0)
        if event.cost is None:
            cost = ledger.cost_of(record.model, record.ts_us, record.input_tokens,
                                  record.cached_input_tokens, record.output_tokens,
                                  record.status_code, record.api_key_id,
                                  cache_write_tokens=record.cache_write_tokens,
                                  units=record.units, calls=record.repeats)
            record = event.to_record(cost)
        records.append(record)
        indexes.append(index)
    return records, errors, indexes


def ingest_events(ledger: Ledger, items: Sequence[Any], first_index: int = 0) -> IngestResult:
    """Validate, price and store a batch; invalid items are reported, valid ones kept, and
    those older than the purge floor refused, each with an error naming ``ts``."""
    records, errors, indexes = _validated(ledger, items, first_index)
    stored = ledger.store(records)
    if stored.refused:
        message = refused_message(stored.floor_us)
        errors.extend(ItemError(index, record.id, "ts", message)
                      for index, record in zip(indexes, records, strict=True)
                      if record.id in stored.refused_ids)
        errors.sort(key=lambda error: error.index)
    return IngestResult(stored.accepted, stored.duplicates, errors, stored.refused,
                        _newly_stored(records, stored))


def _newly_stored(records: Sequence[CallRecord], stored: InsertResult) -> list[CallRecord]:
    """The records ``stored`` says were added, each id once."""
    wanted = stored.accepted_ids
    seen: set[str] = set()
    added = []
    for record in records:
        if record.id not in seen and (wanted is None or record.id in wanted):
            seen.add(record.id)
            added.append(record)
    return added


def refused_message(floor_us: int) -> str:
    """Why a record older than the purge floor is refused."""
    floor = datetime.fromtimestamp(floor_us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return (f"older than the ledger's purge floor {floor}; raw records before it were "
            "purged, so this id cannot be checked for duplicates")
