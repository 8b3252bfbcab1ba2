"""Writing call records: raw rows and every rollup tier in one transaction, once per id.

The database sums the rollup deltas itself, from exactly the rows the transaction inserted:
on SQLite the rows past the largest rowid before the insert, on PostgreSQL the rows of the
batch's temporary table that the insert did not skip. Those rows are read once into
quarter-hour sums (and, inside the minute window, minute sums); each coarser tier's sums are
added up from the next finer one's, a few rows per bucket.
Python does no per-record arithmetic, and a retried or concurrent batch adds each call to
the rollups once.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from sqlalchemy import BigInteger, Boolean, Column, Integer, String, Text

from tallygate.domain.records import CallRecord
from tallygate.store.database import Database
from tallygate.store.retention import floor_for_insert
from tallygate.store.schema import (
    MEASURE_OF_CALL,
    MINUTE_S,
    NULLABLE_DIMENSIONS,
    ROLLUP_MEASURES,
    TIERS,
    Tier,
    calls,
)

CALL_COLUMNS = tuple(column.name for column in calls.columns)
# The CallRecord attribute stored in each column, in CALL_COLUMNS order.
_RECORD_FIELDS = ("id", "ts_us", "api_key_id", "model", "model_category", "call_type",
                  "endpoint", "status_code", "input_tokens", "output_tokens",
                  "cached_input_tokens", "reasoning_tokens", "total_tokens", "cost_nano",
                  "latency_ms", "ttft_ms", "estimated", "cache_write_tokens", "units", "unit",
                  "upstream_model", "repeats", "metadata")
assert len(_RECORD_FIELDS) == len(CALL_COLUMNS) and CALL_COLUMNS[-1] == "metadata"
# Past ``ts`` each field has its column's name: a column added in the wrong place fails here.
assert _RECORD_FIELDS[2:] == CALL_COLUMNS[2:]
_record_values = attrgetter(*_RECORD_FIELDS)
_record_id = attrgetter("id")
_record_ts = attrgetter("ts_us")
US = 1_000_000


def _copy_type(column: Column[Any]) -> str:
    """The PostgreSQL type whose binary format a column takes (varchar's is text's)."""
    if isinstance(column.type, Boolean):
        return "bool"
    if isinstance(column.type, BigInteger):
        return "int8"
    if isinstance(column.type, Integer):
        return "int4"
    assert isinstance(column.type, String | Text), column
    return "text"


_COPY_TYPES = [_copy_type(column) for column in calls.columns]



@dataclass(frozen=True, slots=True)
class InsertResult:
    """What became of the records offered: ``accepted + duplicates + refused`` of them.

    ``refused``: records older than the purge floor (``floor_us``, read in the insert's
    own transaction), none of them stored in any tier: raw records before the floor may
    have been purged, so their ids cannot be checked for duplicates.
    """

    accepted: int
    duplicates: int
    accepted_ids: frozenset[str] | None = None  # None: every record offered was accepted
    refused: int = 0
    refused_ids: frozenset[str] = frozenset()
    floor_us: int = 0


def _metadata_json(metadata: dict[str, Any]) -> str:
    return json.dumps(metadata, separators=(",", ":"))


def record_row(r: CallRecord) -> tuple[Any, ...]:
    """The record as a row of ``calls``, in ``CALL_COLUMNS`` order."""
    row: tuple[Any, ...] = _record_values(r)
    return row if r.metadata is None else (*row[:-1], _metadata_json(r.metadata))


def record_rows(records: Sequence[CallRecord]) -> Iterator[tuple[Any, ...]]:
    """``record_row`` of each record, made one at a time.

    Streaming the rows (each freed once bound) keeps the garbage collector from running
    over the whole process several times per batch; most records have no metadata, so their
    row is the attribute getter's tuple itself.
    """
    return (row if row[-1] is None else (*row[:-1], _metadata_json(row[-1]))
            for row in map(_record_values, records))


def insert_calls(db: Database, records: Sequence[CallRecord], *,
                 minute_cutoff_s: int | None = None) -> InsertResult:
    """Store ``records`` and their rollups atomically; ids already stored count as duplicates.

    Concurrent and retried batches are safe: a record's id is its idempotency key, and its
    rollup contribution is added only by the transaction that inserted it. Minute rollups
    are not written for minutes before ``minute_cutoff_s`` (already past their retention).
    Records older than the purge floor are refused, all or nothing per record: the floor is
    read in this same write transaction (``store/retention.py``).
    """
    batch = _unique_by_id(records)
    if not batch:
        return InsertResult(0, len(records))
    minute_from_us = 0
    if minute_cutoff_s is not None:
        # A minute bucket is >= the cutoff exactly when its calls are >= the cutoff rounded up.
        minute_from_us = -(-minute_cutoff_s // MINUTE_S) * MINUTE_S * US
    with db.write() as conn:
        raw = conn.connection.driver_connection
        assert raw is not None
        cursor = raw.cursor()
        try:
            floor_us = floor_for_insert(cursor, postgres=not db.is_sqlite)
        finally:
            cursor.close()
        below = [r for r in batch if r.ts_us < floor_us] if floor_us else []
        if below:
            batch = [r for r in batch if r.ts_us >= floor_us]
        minutes = bool(batch) and (minute_cutoff_s is None
                                   or max(map(_record_ts, batch)) >= minute_from_us)
        skipped: set[str] = set()
        if batch:
            insert = _insert_sqlite if db.is_sqlite else _insert_postgres
            skipped = insert(raw, batch, minute_from_us if minutes else None)
    accepted = len(batch) - len(skipped)
    if accepted == len(records):
        return InsertResult(accepted, 0, floor_us=floor_us)
    refused_ids = frozenset(r.id for r in below)
    # A refused id offered again in the batch is refused again, not a duplicate.
    refused = sum(1 for r in records if r.id in refused_ids)
    return InsertResult(accepted, len(records) - accepted - refused,
                        frozenset(r.id for r in batch if r.id not in skipped),
                        refused, refused_ids, floor_us)


def _unique_by_id(records: Sequence[CallRecord]) -> list[CallRecord]:
    """The first record of each id, sorted by id: every writer takes its locks in the same
    order (no deadlocks on PostgreSQL), and time-ordered ids append to the index."""
    ids = list(map(_record_id, records))
    if len(set(ids)) == len(ids):
        return sorted(records, key=_record_id)
    unique: dict[str, CallRecord] = {}
    for record in records:
        unique.setdefault(record.id, record)
    return sorted(unique.values(), key=_record_id)


def _insert_sql(db_paramstyle: str) -> str:
    marks = ", ".join([db_paramstyle] * len(CALL_COLUMNS))
    return (f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) VALUES ({marks}) "
            "ON CONFLICT (id) DO NOTHING")


def _scratch(tier: Tier) -> str:
    """The per-connection temporary table of a batch's sums at ``tier``'s grain."""
    return f"tallygate_batch_{tier.name}"


def _source(tier: Tier) -> Tier | None:
    """The tier whose batch sums ``tier``'s are added up from (each is a few rows per bucket),
    or ``None``: the batch's raw rows.

    A finer tier with the same dimensions if there is one, else the smallest tier of the
    same grain with all of them. Minute sums only cover the minute window, so only minute
    tiers are built on them.
    """
    earlier = TIERS[:TIERS.index(tier)]
    finer = [t for t in earlier if t.dimensions == tier.dimensions
             and (tier.windowed or not t.windowed)]
    if finer:
        return finer[-1]
    wider = [t for t in earlier if t.grain_s == tier.grain_s
             and set(tier.dimensions) <= set(t.dimensions)]
    return wider[-1] if wider else None


def _scratch_table_sql(tier: Tier, *, postgres: bool) -> str:
    columns = ", ".join(["bucket BIGINT", *(f"{d} TEXT" for d in tier.dimensions),
                         *(f"{m} BIGINT" for m in ROLLUP_MEASURES)])
    if postgres:
        return (f"CREATE TEMPORARY TABLE IF NOT EXISTS {_scratch(tier)} ({columns}) "
                "ON COMMIT DELETE ROWS")
    return f"CREATE TEMP TABLE IF NOT EXISTS {_scratch(tier)} ({columns})"


def _scratch_sql(tier: Tier, raw_source: str, raw_where: str) -> str:
    """Sum the batch per ``tier``'s bucket and dimensions into its scratch table: from the
    raw rows (``raw_source`` matching ``raw_where``) or from a finer tier's scratch table.

    """
    source = _source(tier)
    columns = ", ".join(["bucket", *tier.dimensions, *ROLLUP_MEASURES])
    if source is None:
        return f"INSERT INTO {_scratch(tier)} ({columns}) {_raw_sums(tier, raw_source, raw_where)}"
    grain = tier.grain_s
    groups = ", ".join(str(i + 1) for i in range(1 + len(tier.dimensions)))
    values = [f"bucket / {grain} * {grain}", *tier.dimensions,
              *(f"sum({m})" for m in ROLLUP_MEASURES)]
    return (f"INSERT INTO {_scratch(tier)} ({columns}) SELECT {', '.join(values)} "
            f"FROM {_scratch(source)} GROUP BY {groups}")


def _tier_sql(tier: Tier, *, postgres: bool, sums: str | None = None) -> str:
    """Add the batch's sums to ``tier``: those of its scratch table, or ``sums`` (a select
    of bucket, dimensions and measures). On PostgreSQL the rows go in key order, the lock
    order every writer shares; SQLite has one writer, and the scratch rows come out in group
    order anyway."""
    keys = ("bucket", *tier.dimensions)
    columns = ", ".join((*keys, *ROLLUP_MEASURES))
    order = f" ORDER BY {', '.join(keys)}" if postgres else ""
    updates = ", ".join(f"{m} = {tier.name}.{m} + excluded.{m}" for m in ROLLUP_MEASURES)
    source = f"({sums}) AS s" if sums else _scratch(tier)
    # "WHERE 1 = 1" keeps SQLite from reading ON CONFLICT as a join's ON.
    return (f"INSERT INTO {tier.name} ({columns}) SELECT {columns} FROM {source} "
            f"WHERE 1 = 1{order} ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}")


# Up to this many new rows, each tier sums them directly: fewer statements than filling the
# scratch tables, for the recorder's small batches of live traffic.
DIRECT_ROLLUP_MAX = 500


def _raw_sums(tier: Tier, raw_source: str, where: str) -> str:
    """The select of ``raw_source``'s rows matching ``where``, summed per ``tier``'s bucket
    and dimensions. ``ts`` is never negative, so integer division is the floor the tiers
    bucket with."""
    values = [f"ts / {tier.grain_s * US} * {tier.grain_s} AS bucket",
              *(f"coalesce({d}, '') AS {d}" if d in NULLABLE_DIMENSIONS else d
                for d in tier.dimensions),
              *(f"sum({MEASURE_OF_CALL[m]}) AS {m}" for m in ROLLUP_MEASURES)]
    groups = ", ".join(str(i + 1) for i in range(1 + len(tier.dimensions)))
    return f"SELECT {', '.join(values)} FROM {raw_source} WHERE {where} GROUP BY {groups}"


def _roll_up(cursor: Any, *, postgres: bool, raw_source: str, raw_where: str,
             raw_params: tuple[Any, ...], minute_from_us: int | None, rows: int) -> None:
    """Add the batch to every tier; minute tiers only from ``minute_from_us`` on (``None``:
    the batch has no minute still inside the window)."""
    mark = "%s" if postgres else "?"
    for tier in TIERS:
        if tier.windowed and minute_from_us is None:
            continue
        where, params = raw_where, raw_params
        if tier.windowed:
            where, params = f"{raw_where} AND ts >= {mark}", (*raw_params, minute_from_us)
        if rows <= DIRECT_ROLLUP_MAX:
            cursor.execute(_tier_sql(tier, postgres=postgres,
                                     sums=_raw_sums(tier, raw_source, where)), params)
            continue
        cursor.execute(_scratch_table_sql(tier, postgres=postgres))
        if not postgres:
            cursor.execute(f"DELETE FROM {_scratch(tier)}")
        if _source(tier) is not None:
            cursor.execute(_scratch_sql(tier, raw_source, raw_where))
        else:
            cursor.execute(_scratch_sql(tier, raw_source, where), params)
        cursor.execute(_tier_sql(tier, postgres=postgres))


def _insert_sqlite(raw: Any, batch: list[CallRecord], minute_from_us: int | None) -> set[str]:
    """Insert, then roll up the new rows; returns the ids that were already stored.

    The write lock is held (BEGIN IMMEDIATE) and SQLite gives each new row a rowid past the
    largest one (it only picks others once that reaches 2**63 - 1), so the rows with a rowid
    above ``before`` are exactly this insert's.
    """
    cursor = raw.cursor()
    try:
        before = cursor.execute("SELECT coalesce(max(rowid), 0) FROM calls").fetchone()[0]
        changes = raw.total_changes
        cursor.executemany(_insert_sql("?"), record_rows(batch))
        inserted = raw.total_changes - changes
        skipped: set[str] = set()
        if inserted < len(batch):
            fresh = {row[0] for row in cursor.execute("SELECT id FROM calls WHERE rowid > ?",
                                                      (before,))}
            skipped = {r.id for r in batch} - fresh
        if inserted:
            _roll_up(cursor, postgres=False, raw_source="calls", raw_where="rowid > ?",
                     raw_params=(before,), minute_from_us=minute_from_us, rows=inserted)
        return skipped
    finally:
        cursor.close()


def _insert_postgres(raw: Any, batch: list[CallRecord], minute_from_us: int | None) -> set[str]:
    """COPY (binary: nothing to parse) into a temporary table, INSERT … ON CONFLICT DO
    NOTHING from it, roll it up.

    When the insert skipped some ids, the temporary table first loses every row that this
    transaction did not insert itself (``xmin`` is the inserting transaction).
    """
    columns = ", ".join(CALL_COLUMNS)
    with raw.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE IF NOT EXISTS tallygate_batch "
                       "(LIKE calls INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        with cursor.copy(f"COPY tallygate_batch ({columns}) FROM STDIN (FORMAT BINARY)") as copy:
            copy.set_types(_COPY_TYPES)
            for row in record_rows(batch):
                copy.write_row(row)
        cursor.execute(f"INSERT INTO calls ({columns}) SELECT {columns} FROM tallygate_batch "
                       "ORDER BY id ON CONFLICT (id) DO NOTHING")
        inserted = cursor.rowcount
        skipped: set[str] = set()
        if inserted < len(batch):
            cursor.execute("DELETE FROM tallygate_batch b WHERE NOT EXISTS (SELECT 1 FROM calls c "
                           "WHERE c.id = b.id AND c.xmin = pg_current_xact_id()::xid) "
                           "RETURNING b.id")
            skipped = {row[0] for row in cursor.fetchall()}
        if inserted:
            _roll_up(cursor, postgres=True, raw_source="tallygate_batch", raw_where="true",
                     raw_params=(), minute_from_us=minute_from_us, rows=inserted)
    return skipped


def upsert_sql(db: Database, tier: Tier, *, replace: bool = False) -> str:
    """Add (or, with ``replace``, set) measures of a tier's row, creating it if needed."""
    keys = ("bucket", *tier.dimensions)
    columns = (*keys, *ROLLUP_MEASURES)
    marks = ", ".join([db.paramstyle] * len(columns))
    updates = ", ".join(
        f"{m} = excluded.{m}" if replace else f"{m} = {tier.name}.{m} + excluded.{m}"
        for m in ROLLUP_MEASURES
    )
    return (f"INSERT INTO {tier.name} ({', '.join(columns)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}")
