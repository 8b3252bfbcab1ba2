"""Writing call records: raw rows and both rollup grains in one transaction, once per id."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, delete, select

from tallygate.ledger.records import CallRecord
from tallygate.ledger.rollups import GRAIN_1M, GRAIN_15M, rollup_deltas
from tallygate.store.database import Database
from tallygate.store.schema import (
    ROLLUP_DIMENSIONS,
    ROLLUP_MEASURES,
    calls,
    rollup_1m,
    rollup_15m,
)

CALL_COLUMNS = tuple(column.name for column in calls.columns)
_SQLITE_MAX_VARIABLES = 32766


@dataclass(frozen=True, slots=True)
class InsertResult:
    accepted: int
    duplicates: int
    accepted_ids: frozenset[str] | None = None  # None: every record offered was accepted


def record_row(r: CallRecord) -> tuple[Any, ...]:
    """The record as a row of ``calls``, in ``CALL_COLUMNS`` order."""
    return (
        r.id, r.ts_us, r.api_key_id, r.model, r.model_category, r.call_type, r.endpoint,
        r.status_code, r.input_tokens, r.output_tokens, r.cached_input_tokens,
        r.reasoning_tokens, r.total_tokens, r.cost_nano, r.latency_ms, r.ttft_ms, r.estimated,
        None if r.metadata is None else json.dumps(r.metadata, separators=(",", ":")),
    )


def insert_calls(db: Database, records: Sequence[CallRecord], *,
                 minute_cutoff_s: int | None = None) -> InsertResult:
    """Store ``records`` and their rollups atomically; ids already stored count as duplicates.

    Concurrent and retried batches are safe: a record's id is its idempotency key, and its
    rollup contribution is added only by the transaction that inserted it.
    """
    unique: dict[str, CallRecord] = {}
    for record in records:
        unique.setdefault(record.id, record)
    # Sorted ids give every writer the same lock order (no deadlocks on PostgreSQL).
    batch = sorted(unique.values(), key=lambda r: r.id)
    if not batch:
        return InsertResult(0, len(records))
    with db.write() as conn:
        if db.is_sqlite:
            inserted = _insert_raw_sqlite(conn, batch)
        else:
            inserted = _insert_raw_postgres(conn, batch)
        new = batch if inserted is None else [r for r in batch if r.id in inserted]
        _add_rollups(db, conn, new, minute_cutoff_s)
    accepted = len(new)
    return InsertResult(accepted, len(records) - accepted,
                        None if accepted == len(records) else frozenset(r.id for r in new))


def _insert_sql(db_paramstyle: str) -> str:
    marks = ", ".join([db_paramstyle] * len(CALL_COLUMNS))
    return (f"INSERT INTO calls ({', '.join(CALL_COLUMNS)}) VALUES ({marks}) "
            "ON CONFLICT (id) DO NOTHING")


def _insert_raw_sqlite(conn: Connection, batch: list[CallRecord]) -> set[str] | None:
    """Returns the inserted ids, or None when all were inserted (the common case)."""
    raw = conn.connection.driver_connection
    assert raw is not None
    cursor = raw.cursor()
    before = raw.total_changes
    cursor.execute("SAVEPOINT tallygate_ingest")
    sql = _insert_sql(db_paramstyle="?")
    cursor.executemany(sql, [record_row(r) for r in batch])
    if raw.total_changes - before == len(batch):
        cursor.execute("RELEASE tallygate_ingest")
        return None
    # Some ids were already stored: undo and insert exactly the new ones.
    cursor.execute("ROLLBACK TO tallygate_ingest")
    cursor.execute("RELEASE tallygate_ingest")
    existing: set[str] = set()
    ids = [r.id for r in batch]
    for start in range(0, len(ids), _SQLITE_MAX_VARIABLES):
        chunk = ids[start:start + _SQLITE_MAX_VARIABLES]
        existing.update(conn.execute(select(calls.c.id).where(calls.c.id.in_(chunk))).scalars())
    fresh = [r for r in batch if r.id not in existing]
    cursor.executemany(sql, [record_row(r) for r in fresh])
    return {r.id for r in fresh}



def _insert_raw_postgres(conn: Connection, batch: list[CallRecord]) -> set[str] | None:
    """COPY into a temporary table, then one INSERT … ON CONFLICT DO NOTHING RETURNING id."""
    raw = conn.connection.driver_connection
    assert raw is not None
    columns = ", ".join(CALL_COLUMNS)
    with raw.cursor() as cursor:
        cursor.execute("CREATE TEMPORARY TABLE IF NOT EXISTS tallygate_batch "
                       "(LIKE calls INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
        with cursor.copy(f"COPY tallygate_batch ({columns}) FROM STDIN") as copy:
            for r in batch:
                copy.write_row(record_row(r))
        cursor.execute(f"INSERT INTO calls ({columns}) SELECT {columns} FROM tallygate_batch "
                       "ORDER BY id ON CONFLICT (id) DO NOTHING RETURNING id")
        inserted = {row[0] for row in cursor.fetchall()}
    return None if len(inserted) == len(batch) else inserted


def _add_rollups(db: Database, conn: Connection, records: Sequence[CallRecord],
                 minute_cutoff_s: int | None) -> None:
    if not records:
        return
    for table, grain, cutoff in ((rollup_15m, GRAIN_15M, None),
                                 (rollup_1m, GRAIN_1M, minute_cutoff_s)):
        deltas = rollup_deltas(records, grain, cutoff)
        if not deltas:
            continue
        rows = [(*key, *measures) for key, measures in sorted(deltas.items())]
        raw = conn.connection.driver_connection
        assert raw is not None
        cursor = raw.cursor()
        try:
            cursor.executemany(upsert_sql(db, table.name), rows)
        finally:
            cursor.close()


def upsert_sql(db: Database, table: str, *, replace: bool = False) -> str:
    """Add (or, with ``replace``, set) measures of a rollup row, creating it if needed."""
    keys = ("bucket", *ROLLUP_DIMENSIONS)
    columns = (*keys, *ROLLUP_MEASURES)
    marks = ", ".join([db.paramstyle] * len(columns))
    updates = ", ".join(
        f"{m} = excluded.{m}" if replace else f"{m} = {table}.{m} + excluded.{m}"
        for m in ROLLUP_MEASURES
    )
    return (f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks}) "
            f"ON CONFLICT ({', '.join(keys)}) DO UPDATE SET {updates}")


def purge_before(db: Database, *, raw_before_us: int | None,
                 minute_before_s: int) -> tuple[int, int]:
    """Delete raw records and minute rollups past their retention; 15-minute rollups stay."""
    with db.write() as conn:
        raw_deleted = 0
        if raw_before_us is not None:
            raw_deleted = conn.execute(delete(calls).where(calls.c.ts < raw_before_us)).rowcount
        minutes = conn.execute(delete(rollup_1m).where(rollup_1m.c.bucket < minute_before_s))
        return raw_deleted, minutes.rowcount


