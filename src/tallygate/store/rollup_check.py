"""Rollups rebuilt from raw records, read back as stored, and rewritten: for ``db check``."""

from __future__ import annotations

from sqlalchemy import delete, func, select

from tallygate.store.calls import upsert_sql
from tallygate.store.database import Database
from tallygate.store.schema import ROLLUP_MEASURES, calls, rollup_1m, rollup_15m
from tallygate.store.usage import raw_measure

RollupKey = tuple[int, str, str, str, str]
_TABLES = {"rollup_15m": rollup_15m, "rollup_1m": rollup_1m}
US = 1_000_000


def raw_time_span(db: Database) -> tuple[int, int] | None:
    """Seconds of the oldest and newest raw record, or None without any."""
    with db.read() as conn:
        low, high = conn.execute(select(func.min(calls.c.ts), func.max(calls.c.ts))).one()
    return None if low is None else (int(low) // US, int(high) // US)


def rollups_from_raw(db: Database, grain_s: int, start_s: int,
                     end_s: int) -> dict[RollupKey, tuple[int, ...]]:
    bucket = (calls.c.ts // (grain_s * US) * grain_s).label("bucket")
    key = func.coalesce(calls.c.api_key_id, "").label("api_key_id")
    inner = select(bucket, key, calls.c.model, calls.c.model_category, calls.c.call_type,
                   *(raw_measure(m) for m in ROLLUP_MEASURES)).where(
        calls.c.ts >= start_s * US, calls.c.ts < end_s * US).subquery()
    groups = [inner.c.bucket, inner.c.api_key_id, inner.c.model, inner.c.model_category,
              inner.c.call_type]
    query = select(*groups, *(func.sum(inner.c[m]) for m in ROLLUP_MEASURES)).group_by(*groups)
    with db.read() as conn:
        return {tuple(row[:5]): tuple(int(v) for v in row[5:])
                for row in conn.execute(query)}


def stored_rollups(db: Database, table_name: str, start_s: int,
                   end_s: int) -> dict[RollupKey, tuple[int, ...]]:
    table = _TABLES[table_name]
    query = select(table).where(table.c.bucket >= start_s, table.c.bucket < end_s)
    with db.read() as conn:
        return {tuple(row[:5]): tuple(int(v) for v in row[5:])
                for row in conn.execute(query)}


def write_rollups(db: Database, table_name: str,
                  rows: dict[RollupKey, tuple[int, ...] | None]) -> int:
    """Set each row to the given measures; ``None`` deletes the row."""
    table = _TABLES[table_name]
    with db.write() as conn:
        for key, measures in rows.items():
            if measures is None:
                conn.execute(delete(table).where(
                    table.c.bucket == key[0], table.c.api_key_id == key[1],
                    table.c.model == key[2], table.c.model_category == key[3],
                    table.c.call_type == key[4]))
        upserts = [(*key, *measures) for key, measures in rows.items() if measures is not None]
        if upserts:
            raw = conn.connection.driver_connection
            assert raw is not None
            cursor = raw.cursor()
            try:
                cursor.executemany(upsert_sql(db, table_name, replace=True), upserts)
            finally:
                cursor.close()
    return len(rows)
