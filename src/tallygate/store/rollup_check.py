"""Rollups rebuilt from raw records, read back as stored, and repaired: for ``db check``."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import Connection, delete, func, select, text
from sqlalchemy.exc import OperationalError

from tallygate.store.calls import upsert_sql
from tallygate.store.database import Database
from tallygate.store.retention import PURGE_FLOOR
from tallygate.store.schema import ROLLUP_MEASURES, TIER_BY_NAME, Tier, calls, ledger_state
from tallygate.store.usage import raw_dimension, raw_measure

RollupKey = tuple[Any, ...]  # (bucket, *the tier's dimensions)
# Rows that differ: ``{key: (stored, rebuilt)}``, ``None`` where there is no such row.
Differences = dict[RollupKey, tuple[tuple[int, ...] | None, tuple[int, ...] | None]]
US = 1_000_000


def raw_time_span(db: Database) -> tuple[int, int] | None:
    """Seconds of the oldest and newest raw record, or None without any."""
    with db.read() as conn:
        low, high = conn.execute(select(func.min(calls.c.ts), func.max(calls.c.ts))).one()
    return None if low is None else (int(low) // US, int(high) // US)


def compare_rollups(db: Database, tier_name: str, start_s: int, end_s: int
                    ) -> tuple[dict[RollupKey, tuple[int, ...]], dict[RollupKey, tuple[int, ...]]]:
    """``tier_name`` for ``[start_s, end_s)`` rebuilt from raw records, and as stored, read
    from one snapshot: calls recorded meanwhile are in both or in neither."""
    tier = TIER_BY_NAME[tier_name]
    with db.read() as conn:
        if not db.is_sqlite:  # SQLite's read transaction is one snapshot already (WAL)
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        return _rebuilt(conn, tier, start_s, end_s), _stored(conn, tier, start_s, end_s)


# How long a repair on PostgreSQL waits for the raw table's lock before it tries again (while
# it waits, new records queue behind it), and how often it tries.
LOCK_TIMEOUT = "2s"
LOCK_ATTEMPTS = 5


def repair_rollups(db: Database, tier_name: str, start_s: int, end_s: int) -> Differences:
    """Rebuild ``tier_name`` for ``[start_s, end_s)`` from the raw records and write the rows
    that differ; returns them as ``{key: (stored, rebuilt)}``.

    Reading and writing happen in one transaction that no new record can enter: on SQLite
    the write lock is held from the start, on PostgreSQL the raw table is locked in SHARE
    mode, which waits for the writers in flight and holds back new ones until the commit.
    Otherwise a call recorded between the read and the write would be added to the stored
    row, then overwritten by sums read a moment before it. Nothing below the purge floor,
    read in the same transaction, is compared or written: raw records there may be gone,
    whatever the range asked for (a purge may have raised the floor since it was chosen).
    """
    tier = TIER_BY_NAME[tier_name]
    for _ in range(LOCK_ATTEMPTS - 1):
        try:
            return _repair(db, tier, start_s, end_s)
        except OperationalError as exc:
            if getattr(exc.orig, "sqlstate", None) != "55P03":  # not the lock's time-out
                raise
            time.sleep(1.0)
    return _repair(db, tier, start_s, end_s)


def differences(rebuilt: dict[RollupKey, tuple[int, ...]],
                stored: dict[RollupKey, tuple[int, ...]]) -> Differences:
    """The rows that differ between the two readings of a tier."""
    return {key: (stored.get(key), rebuilt.get(key)) for key in rebuilt.keys() | stored.keys()
            if rebuilt.get(key) != stored.get(key)}


def _repair(db: Database, tier: Tier, start_s: int, end_s: int) -> Differences:
    with db.write() as conn:
        if not db.is_sqlite:
            conn.execute(text(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'"))
            # Holds a purge's deletes back until the commit; a floor it raised meanwhile
            # is below the raw records still here, so the sums read are whole.
            conn.execute(text("LOCK TABLE calls IN SHARE MODE"))
        floor = conn.execute(select(ledger_state.c.value).where(
            ledger_state.c.name == PURGE_FLOOR)).scalar()
        if floor:
            grain = tier.grain_s
            start_s = max(start_s, -(-(int(floor) // US) // grain) * grain)
            if start_s >= end_s:
                return {}
        wrong = differences(_rebuilt(conn, tier, start_s, end_s),
                            _stored(conn, tier, start_s, end_s))
        _write(conn, db, tier, {key: fixed for key, (_, fixed) in wrong.items()})
    return wrong


def _rebuilt(conn: Connection, tier: Tier, start_s: int,
             end_s: int) -> dict[RollupKey, tuple[int, ...]]:
    grain = tier.grain_s
    bucket = (calls.c.ts // (grain * US) * grain).label("bucket")
    dims = [raw_dimension(d) for d in tier.dimensions]
    inner = select(bucket, *dims, *(raw_measure(m) for m in ROLLUP_MEASURES)).where(
        calls.c.ts >= start_s * US, calls.c.ts < end_s * US).subquery()
    groups = [inner.c.bucket, *(inner.c[d] for d in tier.dimensions)]
    query = select(*groups, *(func.sum(inner.c[m]) for m in ROLLUP_MEASURES)).group_by(*groups)
    width = len(groups)
    return {tuple(row[:width]): tuple(int(v) for v in row[width:])
            for row in conn.execute(query)}


def _stored(conn: Connection, tier: Tier, start_s: int,
            end_s: int) -> dict[RollupKey, tuple[int, ...]]:
    table = tier.table
    width = 1 + len(tier.dimensions)
    query = select(table.c.bucket, *(table.c[d] for d in tier.dimensions),
                   *(table.c[m] for m in ROLLUP_MEASURES)).where(
        table.c.bucket >= start_s, table.c.bucket < end_s)
    return {tuple(row[:width]): tuple(int(v) for v in row[width:])
            for row in conn.execute(query)}


def _write(conn: Connection, db: Database, tier: Tier,
           rows: dict[RollupKey, tuple[int, ...] | None]) -> None:
    """Set each row to the given measures; ``None`` deletes the row. In key order: the lock
    order of every writer (no deadlock with live inserts)."""
    table = tier.table
    key_columns = [table.c.bucket, *(table.c[d] for d in tier.dimensions)]
    ordered = sorted(rows.items(), key=lambda item: item[0])
    for key, measures in ordered:
        if measures is None:
            conn.execute(delete(table).where(
                *(column == value for column, value in zip(key_columns, key, strict=True))))
    upserts = [(*key, *measures) for key, measures in ordered if measures is not None]
    if upserts:
        raw = conn.connection.driver_connection
        assert raw is not None
        cursor = raw.cursor()
        try:
            cursor.executemany(upsert_sql(db, tier, replace=True), upserts)
        finally:
            cursor.close()
