"""Reading every call record of a range for an export: page by page, flat memory, no long
transaction.

``iter_calls`` pages with a new query per 5 000 rows on pooled connections, each of which
keeps its own page cache (128 MiB on SQLite), so a scan of millions of rows would leave up to
that much memory behind per connection. An export instead reads on one connection, with a
small page cache for the scan on SQLite (restored afterwards), a page at a time by keyset
(the last page's ``(ts, id)``), each page in a read transaction of its own that ends before
the page is handed on. A slow download therefore never holds a snapshot open: SQLite's WAL
can checkpoint and PostgreSQL's vacuum can proceed while it runs. The price is that an
export is no longer one snapshot: a record stored during it, older than the page being
read, is included; one newer than that is not (as for any range read a moment earlier).
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import ColumnElement, select, tuple_

from tallygate.domain.records import CallRecord
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
    ``GET /api/v1/usage/calls``), read ``batch_size`` at a time."""
    conditions = [calls.c.ts >= start_us, calls.c.ts < end_us, *call_conditions(f)]
    order = (calls.c.ts.desc(), calls.c.id.desc())
    with db.read() as conn:
        previous_cache = None
        if db.is_sqlite:
            previous_cache = conn.exec_driver_sql("PRAGMA cache_size").scalar()
            conn.exec_driver_sql(f"PRAGMA cache_size = -{SCAN_CACHE_KIB}")
        try:
            after: tuple[int, str] | None = None
            while True:
                page = select(calls).where(*conditions)
                if after is not None:
                    # ``ts <= last`` as well: a plain range the ts index serves.
                    page = page.where(calls.c.ts <= after[0],
                                      tuple_(calls.c.ts, calls.c.id) < tuple_(*after))
                rows = conn.execute(page.order_by(*order).limit(batch_size)).all()
                conn.rollback()  # end the read transaction before the page goes out
                yield from (record_from_row(row) for row in rows)
                if len(rows) < batch_size:
                    return
                after = (rows[-1].ts, rows[-1].id)
        finally:
            if previous_cache is not None:
                # Shrinking the cache frees the scan's pages; the dashboard's queries get
                # their large cache back.
                conn.exec_driver_sql(f"PRAGMA cache_size = {int(previous_cache)}")
