"""The purge floor and the purge: raw records and minute rollups past their retention.

The purge floor is the instant below which raw records may have been purged, recorded in
``ledger_state`` so that every process, whatever its settings, agrees on it. It is always
a UTC midnight (no quarter-hour, hour or day is ever half purged) and only moves forward.
At and above it every raw record ever accepted is still there; below it no record is
accepted any more (``store/calls.py`` reads it in the insert's own transaction), because its
id can no longer be checked against the ones purged.

A purge first raises the floor, in a transaction of its own, then deletes below it in
short transactions of at most ``PURGE_BATCH_ROWS`` rows each, pausing after each as long as
it took, so a writer never waits longer than about one batch for the purge
(docs/operations.md gives the measured bound).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import ColumnElement, Table, delete, select, text, tuple_

from tallygate.store.database import Database
from tallygate.store.schema import TIERS, calls, ledger_state

PURGE_FLOOR = "raw_purge_floor_us"
DAY_US = 86_400 * 1_000_000
# Rows one purge transaction deletes at most: ~10 ms of SQLite's write lock on a ledger of
# millions of calls, followed by as long a pause (bench/purge_batches.py measures it).
PURGE_BATCH_ROWS = 2000


def purge_floor_us(db: Database) -> int:
    """The recorded purge floor in µs since the epoch; 0 when no raw record was ever purged."""
    with db.read() as conn:
        value = conn.execute(select(ledger_state.c.value).where(
            ledger_state.c.name == PURGE_FLOOR)).scalar()
    return 0 if value is None else int(value)


def day_floor_us(instant_us: int) -> int:
    """The UTC midnight at or before ``instant_us`` (never before the epoch)."""
    return max(0, instant_us // DAY_US * DAY_US)


def raise_purge_floor(db: Database, floor_us: int) -> int:
    """Move the floor up to ``floor_us`` (rounded down to a UTC midnight) unless it is
    higher already; returns the floor now recorded. Its own short transaction: on PostgreSQL
    the row's update waits for the inserts that read the old floor (they hold the row FOR
    SHARE) and holds back new ones until it commits, so none can slip under it."""
    wanted = day_floor_us(floor_us)
    higher = "max" if db.is_sqlite else "greatest"
    with db.write() as conn:
        conn.execute(text(
            "INSERT INTO ledger_state (name, value) VALUES (:name, :value) "
            f"ON CONFLICT (name) DO UPDATE SET value = {higher}(ledger_state.value, "
            "excluded.value)"), {"name": PURGE_FLOOR, "value": wanted})
        return int(conn.execute(select(ledger_state.c.value).where(
            ledger_state.c.name == PURGE_FLOOR)).scalar_one())


def floor_for_insert(cursor: Any, *, postgres: bool) -> int:
    """The floor, read with the insert's own driver cursor inside its write transaction.

    On PostgreSQL the row is read FOR SHARE: a purge raising the floor waits for this
    transaction to commit (whose records were checked against the old floor and are then
    purged with the rest), and a purge that raised it first is seen committed here. On
    SQLite the insert holds the write lock already. A database whose row is gone (a TRUNCATE)
    gets it back at 0, so there is always a row to lock.
    """
    if not postgres:
        row = cursor.execute("SELECT value FROM ledger_state WHERE name = ?",
                             (PURGE_FLOOR,)).fetchone()
        return 0 if row is None else int(row[0])
    query = "SELECT value FROM ledger_state WHERE name = %s FOR SHARE"
    cursor.execute(query, (PURGE_FLOOR,))
    row = cursor.fetchone()
    if row is None:
        cursor.execute("INSERT INTO ledger_state (name, value) VALUES (%s, 0) "
                       "ON CONFLICT (name) DO NOTHING", (PURGE_FLOOR,))
        cursor.execute(query, (PURGE_FLOOR,))
        row = cursor.fetchone()
    return int(row[0])


def purge_before(db: Database, *, raw_before_us: int | None, minute_before_s: int,
                 batch_rows: int = PURGE_BATCH_ROWS) -> tuple[int, int]:
    """Raise the floor to ``raw_before_us``'s UTC midnight (``None``: raw records are kept),
    delete raw records below the recorded floor and minute rollups before
    ``minute_before_s``, ``batch_rows`` at a time. The other tiers are kept for ever.
    Returns (raw records, minute rollup rows) deleted."""
    raw_deleted = 0
    if raw_before_us is not None:
        floor = raise_purge_floor(db, raw_before_us)
        raw_deleted = delete_in_batches(db, calls, calls.c.ts < floor, batch_rows)
    minute_rows = 0
    for tier in TIERS:
        if tier.windowed:
            table = tier.table
            minute_rows += delete_in_batches(db, table, table.c.bucket < minute_before_s,
                                             batch_rows)
    return raw_deleted, minute_rows


def delete_in_batches(db: Database, table: Table, condition: ColumnElement[bool],
                      batch_rows: int) -> int:
    """Delete ``table``'s rows matching ``condition``, at most ``batch_rows`` of them per
    transaction; returns how many went."""
    key = list(table.primary_key.columns)
    chosen = select(*key).where(condition).limit(batch_rows)
    statement = delete(table).where(
        key[0].in_(chosen.scalar_subquery()) if len(key) == 1 else tuple_(*key).in_(chosen))
    deleted = 0
    while True:
        started = time.monotonic()
        with db.write() as conn:
            count = conn.execute(statement).rowcount
        deleted += count
        if count < batch_rows:
            return deleted
        # Neither the write lock nor SQLite's busy wait queues fairly: without a pause the
        # purge would take the lock straight back, batch after batch, while writers wait.
        time.sleep(min(time.monotonic() - started, 0.1))
