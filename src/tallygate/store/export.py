"""Reading every call record of a range for an export: one query, streamed, flat memory.

``iter_calls`` pages with a new query per 5 000 rows on pooled connections, each of which
keeps its own page cache (128 MiB on SQLite), so a scan of millions of rows would leave up to
that much memory behind per connection. An export instead reads on one connection, in one
read transaction (so it is one consistent snapshot of the ledger), fetching a batch at a time:
on SQLite with a small page cache for the scan, restored afterwards; on PostgreSQL through a
server-side cursor.
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import ColumnElement, select

from tallygate.ledger.records import CallRecord
from tallygate.store.database import Database
from tallygate.store.schema import calls
from tallygate.store.usage import CallFilter, filter_conditions, record_from_row

SCAN_CACHE_KIB = 8192  # SQLite page cache of the exporting connection


def call_conditions(f: CallFilter) -> list[ColumnElement[bool]]:
    """The filter's conditions on raw calls: the same ones every usage query applies."""
    return filter_conditions(calls, f)


def stream_calls(db: Database, f: CallFilter, start_us: int, end_us: int,
                 batch_size: int = 5000) -> Iterator[CallRecord]:
    """The records of ``[start_us, end_us)`` matching ``f``, newest first (the order of
    ``GET /api/v1/usage/calls``)."""
    query = (select(calls).where(calls.c.ts >= start_us, calls.c.ts < end_us,
                                 *call_conditions(f))
             .order_by(calls.c.ts.desc(), calls.c.id.desc()))
    with db.read() as conn:
        previous_cache = None
        if db.is_sqlite:
            previous_cache = conn.exec_driver_sql("PRAGMA cache_size").scalar()
            conn.exec_driver_sql(f"PRAGMA cache_size = -{SCAN_CACHE_KIB}")
        try:
            result = conn.execution_options(stream_results=True,
                                            yield_per=batch_size).execute(query)
            for rows in result.partitions():
                yield from (record_from_row(row) for row in rows)
        finally:
            if previous_cache is not None:
                # Shrinking the cache frees the scan's pages; the dashboard's queries get
                # their large cache back.
                conn.exec_driver_sql(f"PRAGMA cache_size = {int(previous_cache)}")
