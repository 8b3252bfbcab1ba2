"""The purge floor: recorded, day-aligned, only forward, read atomically by every insert."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import func, select, text

from tallygate.ledger.service import Ledger
from tallygate.store.calls import InsertResult, insert_calls
from tallygate.store.database import Database
from tallygate.store.retention import (
    DAY_US,
    PURGE_FLOOR,
    delete_in_batches,
    purge_before,
    purge_floor_us,
    raise_purge_floor,
)
from tallygate.store.schema import TIERS, calls, ledger_state
from tests.store.test_calls import make_record

US = 1_000_000
MIDNIGHT_US = 1_790_035_200 * US  # a UTC midnight


def _rows(db: Database) -> dict[str, int]:
    tables = [calls, *(tier.table for tier in TIERS)]
    with db.read() as conn:
        return {table.name: int(conn.execute(select(func.count()).select_from(table))
                                .scalar_one()) for table in tables}


def test_the_floor_is_a_utc_midnight_and_only_moves_forward(db: Database) -> None:
    assert purge_floor_us(db) == 0
    assert raise_purge_floor(db, MIDNIGHT_US + 5 * 3600 * US) == MIDNIGHT_US
    assert raise_purge_floor(db, MIDNIGHT_US - 10 * DAY_US) == MIDNIGHT_US  # never back
    assert purge_before(db, raw_before_us=MIDNIGHT_US - DAY_US, minute_before_s=0) == (0, 0)
    assert purge_floor_us(db) == MIDNIGHT_US
    assert raise_purge_floor(db, MIDNIGHT_US + DAY_US) == MIDNIGHT_US + DAY_US


def test_a_record_below_the_floor_is_refused_whole(db: Database) -> None:
    raise_purge_floor(db, MIDNIGHT_US)
    below = make_record(1, id="below", ts_us=MIDNIGHT_US - 1)
    at = make_record(2, id="at", ts_us=MIDNIGHT_US)
    empty = _rows(db)
    result = insert_calls(db, [below, at, below], minute_cutoff_s=None)
    assert result == InsertResult(1, 0, frozenset({"at"}), 2, frozenset({"below"}),
                                  MIDNIGHT_US)
    stored = _rows(db)
    assert stored["calls"] == 1 and stored["rollup_1d"] == 1  # "at" alone, in every tier
    assert all(n == 1 for n in stored.values()), stored
    assert insert_calls(db, [at]) == InsertResult(0, 1, frozenset(), 0, frozenset(),
                                                  MIDNIGHT_US)
    only_below = insert_calls(db, [below])
    assert (only_below.accepted, only_below.duplicates, only_below.refused) == (0, 0, 1)
    assert empty["calls"] == 0 and _rows(db) == stored


def test_the_purge_deletes_in_batches_below_the_floor(db: Database) -> None:
    records = [make_record(n, id=f"r{n:04d}", ts_us=MIDNIGHT_US - DAY_US + n * 7 * US)
               for n in range(1000)]
    kept = [make_record(n, id=f"k{n}", ts_us=MIDNIGHT_US + n * US) for n in range(5)]
    insert_calls(db, records + kept, minute_cutoff_s=None)
    assert purge_before(db, raw_before_us=MIDNIGHT_US + 3600 * US, minute_before_s=0,
                        batch_rows=64) == (1000, 0)
    with db.read() as conn:
        assert sorted(conn.execute(select(calls.c.id)).scalars()) == [k.id for k in kept]
    assert delete_in_batches(db, calls, calls.c.ts < MIDNIGHT_US + 2 * US, 1) == 2


def test_a_truncated_state_table_comes_back_on_the_next_insert(db: Database) -> None:
    with db.write() as conn:
        conn.execute(ledger_state.delete())
    assert insert_calls(db, [make_record(1)]).accepted == 1
    assert raise_purge_floor(db, MIDNIGHT_US) == MIDNIGHT_US
    assert insert_calls(db, [make_record(2, ts_us=MIDNIGHT_US - 1)]).refused == 1


def _in_thread(work: Any) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []
    thread = threading.Thread(target=lambda: out.append(work()))
    thread.start()
    return thread, out


@pytest.mark.postgres
def test_on_postgres_a_purge_and_an_insert_serialize_on_the_floor(
        postgres_url: str) -> None:
    from tests.conftest import _empty_postgres

    db = _empty_postgres(postgres_url)
    try:
        raise_purge_floor(db, MIDNIGHT_US - 10 * DAY_US)
        # A purge raising the floor, not yet committed: an insert of a record below the new
        # floor waits for it, then sees the new floor and refuses the record.
        with db.engine.connect() as purge:
            purge.execute(text("UPDATE ledger_state SET value = :v WHERE name = :n"),
                          {"v": MIDNIGHT_US, "n": PURGE_FLOOR})
            thread, out = _in_thread(lambda: insert_calls(
                db, [make_record(1, id="late", ts_us=MIDNIGHT_US - US)]))
            time.sleep(0.5)
            assert thread.is_alive()  # held back by the purge's floor update
            purge.commit()
        thread.join(10)
        assert out[0].refused == 1 and out[0].accepted == 0

        # An insert in flight (it read the floor): the purge's floor update waits for it.
        with db.engine.connect() as insert:
            value = insert.execute(text("SELECT value FROM ledger_state WHERE name = :n "
                                        "FOR SHARE"), {"n": PURGE_FLOOR}).scalar_one()
            assert value == MIDNIGHT_US
            thread, out = _in_thread(lambda: raise_purge_floor(db, MIDNIGHT_US + DAY_US))
            time.sleep(0.5)
            assert thread.is_alive()
            insert.commit()
        thread.join(10)
        assert out == [MIDNIGHT_US + DAY_US]
    finally:
        db.dispose()


def test_the_migration_records_the_floor_an_earlier_purge_left(db: Database) -> None:
    from alembic import command

    ledger = Ledger(db)
    records = [make_record(n, id=f"m{n}", ts_us=MIDNIGHT_US - 3 * DAY_US + n * 3600 * US)
               for n in range(72)]
    ledger.store(records)
    config = db._alembic_config()
    command.downgrade(config, "0005")
    command.upgrade(config, "head")
    assert purge_floor_us(db) == 0  # nothing was purged

    command.downgrade(config, "0005")
    with db.write() as conn:  # a purge of an earlier tallygate, at an arbitrary instant
        conn.execute(calls.delete().where(calls.c.ts < MIDNIGHT_US - 2 * DAY_US + 5 * 3600 * US))
    command.upgrade(config, "head")
    assert purge_floor_us(db) == MIDNIGHT_US - DAY_US  # the midnight after the cut

    command.downgrade(config, "0005")
    with db.write() as conn:
        conn.execute(calls.delete())
    command.upgrade(config, "head")
    assert purge_floor_us(db) == MIDNIGHT_US  # the day after the last call
