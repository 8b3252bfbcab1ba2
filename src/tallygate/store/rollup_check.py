"""Rollups rebuilt from raw records, read back as stored, and rewritten: for ``db check``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, func, select

from tallygate.store.calls import upsert_sql
from tallygate.store.database import Database
from tallygate.store.schema import ROLLUP_MEASURES, TIER_BY_NAME, calls
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
    tier = TIER_BY_NAME[tier_name]
    grain = tier.grain_s
    bucket = (calls.c.ts // (grain * US) * grain).label("bucket")
    key = func.coalesce(calls.c.api_key_id, "").label("api_key_id")
    dims = [key if d == "api_key_id" else calls.c[d] for d in tier.dimensions]
    inner = select(bucket, *dims, *(raw_measure(m) for m in ROLLUP_MEASURES)).where(
        calls.c.ts >= start_s * US, calls.c.ts < end_s * US).subquery()
    groups = [inner.c.bucket, *(inner.c[d] for d in tier.dimensions)]
    query = select(*groups, *(func.sum(inner.c[m]) for m in ROLLUP_MEASURES)).group_by(*groups)
    width = len(groups)
    with db.read() as conn:
        return {tuple(row[:width]): tuple(int(v) for v in row[width:])
                for row in conn.execute(query)}


def stored_rollups(db: Database, tier_name: str, start_s: int,
                   end_s: int) -> dict[RollupKey, tuple[int, ...]]:
    tier = TIER_BY_NAME[tier_name]
    table = tier.table
    width = 1 + len(tier.dimensions)
    query = select(table.c.bucket, *(table.c[d] for d in tier.dimensions),
                   *(table.c[m] for m in ROLLUP_MEASURES)).where(
        table.c.bucket >= start_s, table.c.bucket < end_s)
    with db.read() as conn:
        return {tuple(row[:width]): tuple(int(v) for v in row[width:])
                for row in conn.execute(query)}


def write_rollups(db: Database, tier_name: str,
                  rows: dict[RollupKey, tuple[int, ...] | None]) -> int:
    """Set each row to the given measures; ``None`` deletes the row."""
    tier = TIER_BY_NAME[tier_name]
    table = tier.table
    key_columns = [table.c.bucket, *(table.c[d] for d in tier.dimensions)]
    with db.write() as conn:
        # In key order: the lock order of every writer (no deadlock with live inserts).
        for key, measures in sorted(rows.items(), key=lambda item: item[0]):
            if measures is None:
                conn.execute(delete(table).where(
                    *(column == value for column, value in zip(key_columns, key, strict=True))))
        upserts = [(*key, *measures) for key, measures in sorted(
            rows.items(), key=lambda item: item[0]) if measures is not None]
        if upserts:
            raw = conn.connection.driver_connection
            assert raw is not None
            cursor = raw.cursor()
            try:
                cursor.executemany(upsert_sql(db, tier, replace=True), upserts)
            finally:
                cursor.close()
    return len(rows)
