"""What every importer of another gateway's history shares: keys made on the fly, the
conversion of the source's values, batching into the ledger and the summary."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Any

from tallygate.keys.schemas import KeyCreate, KeyUpdate
from tallygate.keys.service import KeyService
from tallygate.ledger.ingest import IngestResult, ItemError, ingest_events
from tallygate.ledger.service import Ledger
from tallygate.store import keys as key_store

IMPORTED_TAG = "imported"
# The tag that remembers which source key an imported key stands for (see source_key_tag).
SOURCE_TAG_PREFIX = "source:"
ACTOR = "import"
_NANO = Decimal("1e-9")
MAX_ID = 128


class Skip(Exception):
    """A source row that is not a call to record; the message is the reason counted."""


@dataclass(frozen=True, slots=True)
class SourceKey:
    """The key a source row names: ``identity`` is stable in the source (a hash, an id),
    ``name`` what its users call it."""

    identity: str
    name: str
    owner: str | None = None


@dataclass(slots=True)
class Mapped:
    """One source row as a call record for the ledger, and the key it belongs to."""

    event: dict[str, Any]
    key: SourceKey | None = None


@dataclass(slots=True)
class ImportSummary:
    rows_read: int = 0
    imported: int = 0
    duplicates: int = 0
    skipped: Counter[str] = field(default_factory=Counter)
    rejected: list[ItemError] = field(default_factory=list)
    keys_created: int = 0


def record_id(kind: str, instance: str | None, source_id: object) -> str:
    """``<kind>-<source id>`` (``<kind>-<instance>-<source id>`` with ``--instance``): ids of
    different sources cannot meet, and a re-import finds the same ids. An id too long for
    the ledger is replaced by a hash of it, the same on every import."""
    prefix = kind if not instance else f"{kind}-{instance}"
    text = f"{prefix}-{source_id}"
    if len(text) <= MAX_ID:
        return text
    return f"{prefix}-sha256-{hashlib.sha256(str(source_id).encode()).hexdigest()}"


def source_key_tag(kind: str, instance: str | None, identity: str) -> str:
    """The tag on an imported key that names the source key it stands for. A hash keeps
    it within a tag's 64 characters and keeps a LiteLLM key hash out of the tag text."""
    digest = hashlib.sha256(f"{kind}\0{instance or ''}\0{identity}".encode()).hexdigest()
    return f"{SOURCE_TAG_PREFIX}{kind}:{digest[:24]}"


class ImportedKeys:
    """Source keys to tallygate key ids: an already imported key is found again by its
    source tag; an unknown one becomes a new key, disabled (its secret was never handed
    out: it exists to carry the history) and tagged ``imported``."""

    def __init__(self, keys: KeyService, kind: str, instance: str | None) -> None:
        self.keys = keys
        self.kind = kind
        self.instance = instance
        self.created = 0
        self._by_tag: dict[str, str] = {}
        for stored in key_store.list_keys(keys.db):
            for tag in stored.tags:
                if tag.startswith(SOURCE_TAG_PREFIX):
                    self._by_tag.setdefault(tag, stored.id)

    def key_id(self, key: SourceKey) -> str:
        tag = source_key_tag(self.kind, self.instance, key.identity)
        found = self._by_tag.get(tag)
        if found is not None:
            return found
        name = key.name.replace("\x00", "").strip()[:200] or f"{self.kind} key"
        owner = (key.owner or "").replace("\x00", "")[:200] or None
        created = self.keys.create(KeyCreate(name=name, tags=[IMPORTED_TAG, tag],
                                             owner=owner), ACTOR)
        self.keys.update(created.id, KeyUpdate(status="disabled"), ACTOR)
        self._by_tag[tag] = created.id
        self.created += 1
        return created.id


# ---- values as the sources store them --------------------------------------------------

def as_int(value: Any, name: str) -> int:
    """A token count or duration: None and "" are 0; anything else not a whole number
    >= 0 skips the row."""
    if value is None or value == "":
        return 0
    if isinstance(value, bool):
        raise Skip(f"bad value: {name}")
    try:
        number = int(value) if not isinstance(value, float) else value
    except (TypeError, ValueError):
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise Skip(f"bad value: {name}") from None
    if isinstance(number, float):
        if not math.isfinite(number) or number != int(number):
            raise Skip(f"bad value: {name}")
        number = int(number)
    if number < 0:
        raise Skip(f"bad value: {name}")
    return number


def money(value: Any, name: str) -> Decimal:
    """A USD amount stored as a float (LiteLLM's ``spend``): its shortest decimal form,
    rounded to the ledger's nine places."""
    if value is None or value == "":
        return Decimal(0)
    try:
        amount = Decimal(repr(value) if isinstance(value, float) else str(value).strip())
    except InvalidOperation:
        raise Skip(f"bad value: {name}") from None
    if not amount.is_finite() or amount < 0:
        raise Skip(f"bad value: {name}")
    return amount.quantize(_NANO, rounding=ROUND_HALF_EVEN)


def quota_cost(quota: Any, quota_per_unit: Decimal) -> Decimal:
    """New API / One API quota to money: ``quota / quota_per_unit``, to nine places."""
    units = Decimal(as_int(quota, "quota"))
    return (units / quota_per_unit).quantize(_NANO, rounding=ROUND_HALF_EVEN)


def json_object(value: Any) -> dict[str, Any]:
    """A JSON column (a dict from PostgreSQL's json type, text elsewhere); {} if absent or
    not an object."""
    if isinstance(value, dict):
        return value
    if isinstance(value, bytes | bytearray):
        value = value.decode("utf-8", "replace")
    if isinstance(value, str) and value.strip():
        try:
            parsed = json.loads(value)
        except ValueError:
            return {}
        return parsed if isinstance(parsed, dict) else {}
    return {}


def utc_time(value: Any, name: str) -> datetime:
    """A timestamp column: a datetime (naive means UTC, as Prisma and the CSV export
    write them) or its text."""
    if isinstance(value, str):
        text = value.strip().replace(" ", "T", 1)
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        try:
            value = datetime.fromisoformat(text)
        except ValueError:
            raise Skip(f"bad value: {name}") from None
    if not isinstance(value, datetime):
        raise Skip(f"no {name}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def unix_time(value: Any, name: str) -> datetime:
    seconds = as_int(value, name)
    if seconds == 0:
        raise Skip(f"no {name}")
    try:
        return datetime.fromtimestamp(seconds, UTC)
    except (OverflowError, OSError, ValueError):
        raise Skip(f"bad value: {name}") from None


def cache_parts(input_tokens: int, cached: int, written: int) -> tuple[int, int]:
    """Cache reads and writes as parts of the input, as the ledger keeps them: a source
    that reports more than the input (a provider's own accounting) is held to it."""
    cached = min(cached, input_tokens)
    return cached, min(written, input_tokens - cached)


# ---- the run -------------------------------------------------------------------------

def map_rows(rows: Iterable[dict[str, Any]], mapper: Callable[[dict[str, Any]], Mapped]
             ) -> Iterator[Mapped | Skip]:
    """Each source row as a record, or the reason it is skipped."""
    for row in rows:
        try:
            yield mapper(row)
        except Skip as reason:
            yield reason


def run_import(ledger: Ledger, keys: ImportedKeys, rows: Iterable[Mapped | Skip], *,
               batch_size: int = 5000, progress: Callable[[int], None] | None = None
               ) -> ImportSummary:
    """Give each record its key and store them in batches (idempotent on the record ids).
    ``progress`` gets the rows read so far. Records the ledger refuses are listed in
    ``rejected`` by their id."""
    summary = ImportSummary()
    items: list[dict[str, Any]] = []

    def flush() -> None:
        result: IngestResult = ingest_events(ledger, items)
        summary.imported += result.accepted
        summary.duplicates += result.duplicates
        summary.rejected.extend(result.errors)
        items.clear()

    for row in rows:
        summary.rows_read += 1
        if isinstance(row, Skip):
            summary.skipped[str(row)] += 1
        else:
            if row.key is not None:
                row.event["api_key_id"] = keys.key_id(row.key)
            items.append(row.event)
            if len(items) >= batch_size:
                flush()
        if progress is not None and summary.rows_read % 500 == 0:
            progress(summary.rows_read)
    if items:
        flush()
    if progress is not None:
        progress(summary.rows_read)
    summary.keys_created = keys.created
    return summary
