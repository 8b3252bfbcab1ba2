"""Rollups rebuilt from raw records, read back as stored, and repaired: for ``db check``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete, func, select, text

from tallygate.store.calls import upsert_sql
from tallygate.store.database import Database
from tallygate.store.schema import ROLLUP_MEASURES, TIER_BY_NAME, Tier, calls
from tallygate.store.usage import raw_measure

RollupKey = tuple[Any, ...]  # (bucket, *the tier's dimensions)
US = 1_000_000


def raw_time_span(db: Database) -> tuple[int, int] | None:
    """Seconds of the oldest and newest raw record, or None without any."""
    with db.read() as conn:
        low, high = conn.execute(select(func.min(calls.c.ts), func.max(calls.c.ts))).one()
    return None if low is None else (int(low) // US, int(high) // US)


def rollups_from_raw(db: Database, tier_name: str, start_s: int,
                     end_s: int) -> dict[RollupKey, tuple[int, ...]]:
    """What ``tier_name`` should hold for ``[start_s, end_s)``, summed from raw records."""
    with db.read() as conn:
        return _rebuilt(conn, TIER_BY_NAME[tier_name], start_s, end_s)


def stored_rollups(db: Database, tier_name: str, start_s: int,
                   end_s: int) -> dict[RollupKey, tuple[int, ...]]:
    with db.read() as conn:
        return _stored(conn, TIER_BY_NAME[tier_name], start_s, end_s)


def repair_rollups(db: Database, tier_name: str, start_s: int, end_s: int
                   ) -> dict[RollupKey, tuple[tuple[int, ...] | None, tuple[int, ...] | None]]:
    """Rebuild ``tier_name`` for ``[start_s, end_s)`` from the raw records and write the rows
    that differ; returns them as ``{key: (stored, rebuilt)}``.

    Reading and writing happen in one transaction that no new record can enter: on SQLite
    the write lock is held from the start, on PostgreSQL the raw table is locked in SHARE
    mode, which waits for the writers in flight and holds back new ones until the commit.
    Otherwise a call recorded between the read and the write would be added to the stored
    row, then overwritten by sums read a moment before it.
    """
    tier = TIER_BY_NAME[tier_name]
    with db.write() as conn:
        if not db.is_sqlite:
            conn.execute(text("LOCK TABLE calls IN SHARE MODE"))
        rebuilt = _rebuilt(conn, tier, start_s, end_s)
        stored = _stored(conn, tier, start_s, end_s)
        wrong = {key: (stored.get(key), rebuilt.get(key)) for key in rebuilt.keys() | stored.keys()
                 if rebuilt.get(key) != stored.get(key)}
        _write(conn, db, tier, {key: fixed for key, (_, fixed) in wrong.items()})
    return wrong


def _rebuilt(conn: Connection, tier: Tier, start_s: int,
             end_s: int) -> dict[RollupKey, tuple[int, ...]]:
    grain = tier.grain_s
    bucket = (calls.c.ts // (grain * US) * grain).label("bucket")
    key = func.coalesce(calls.c.api_key_id, "").label("api_key_id")
    dims = [key if d == "api_key_id" else calls.c[d] for d in tier.dimensions]
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
