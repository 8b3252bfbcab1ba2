"""The recorder: batched writes off the request path, and nothing lost or counted twice."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from tallygate.domain.records import CallRecord
from tallygate.ledger.recorder import Recorder
from tallygate.ledger.service import Ledger
from tallygate.store.calls import InsertResult
from tallygate.store.database import Database
from tallygate.store.schema import calls, rollup_15m

US = 1_000_000


def _records(count: int, prefix: str = "r") -> list[CallRecord]:
    now = datetime.now(UTC)
    out = []
    for i in range(count):
        ts = now - timedelta(seconds=i)
        out.append(CallRecord(id=f"{prefix}-{i}", ts_us=int(ts.timestamp()) * US + ts.microsecond,
                              model="m", call_type="model", input_tokens=10, total_tokens=10,
                              cost_nano=5))
    return out


def _stored(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(calls)).scalar_one())


def _rolled_up(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.coalesce(func.sum(rollup_15m.c.calls), 0)))
                   .scalar_one())


async def _settled(recorder: Recorder) -> None:
    """A committed batch leaves the queue when the recorder's task next runs."""
    for _ in range(500):
        if recorder.queue_depth == 0:
            return
        await asyncio.sleep(0.01)
    raise AssertionError("records stayed queued after they were written")


class FlakyLedger(Ledger):
    """A ledger whose store fails its first ``failures`` writes (a database outage)."""

    failures = 0
    attempts = 0

    def store(self, records: Sequence[CallRecord]) -> InsertResult:
        self.attempts += 1
        if self.failures > 0:
            self.failures -= 1
            raise ConnectionError("the database went away")
        return super().store(records)


def test_records_are_written_within_the_flush_interval(db: Database) -> None:
    async def scenario() -> float:
        recorder = Recorder(Ledger(db), flush_interval_s=0.05)
        await recorder.start()
        try:
            started = time.perf_counter()
            for record in _records(30):
                recorder.record(record)
            assert recorder.queue_depth == 30  # record() itself does not write
            while _stored(db) < 30:
                assert time.perf_counter() - started < 5, "never written"
                await asyncio.sleep(0.01)
            elapsed = time.perf_counter() - started
            await _settled(recorder)
            return elapsed
        finally:
            await recorder.stop()

    # Written by the background task alone (no flush, no stop). How fast is for the
    # freshness benchmark; a unit test on a loaded machine only bounds it loosely.
    assert asyncio.run(scenario()) < 5
    assert _rolled_up(db) == 30


def test_a_full_batch_is_written_without_waiting_for_the_interval(db: Database) -> None:
    async def scenario() -> None:
        recorder = Recorder(Ledger(db), flush_interval_s=30, max_batch=10)
        await recorder.start()
        try:
            started = time.perf_counter()
            for record in _records(25):
                recorder.record(record)
            while _stored(db) < 20:
                assert time.perf_counter() - started < 5, "a full batch waited"
                await asyncio.sleep(0.01)
        finally:
            await recorder.stop()
        assert recorder.stats.records_written == 25 and recorder.stats.flushes >= 3

    asyncio.run(scenario())
    assert _stored(db) == 25


def test_stop_writes_everything_still_waiting(db: Database) -> None:
    async def scenario() -> Recorder:
        recorder = Recorder(Ledger(db), flush_interval_s=30, max_batch=7)
        await recorder.start()
        for record in _records(50):
            recorder.record(record)
        await asyncio.sleep(0)
        await recorder.stop()
        return recorder

    recorder = asyncio.run(scenario())
    assert _stored(db) == 50 and _rolled_up(db) == 50
    assert recorder.queue_depth == 0 and recorder.stats.records_written == 50


def test_record_and_commit_returns_only_once_the_record_is_readable(db: Database) -> None:
    async def scenario() -> None:
        recorder = Recorder(Ledger(db), flush_interval_s=30)
        await recorder.start()
        try:
            first, second, third = _records(3)
            recorder.record(first)  # batched: may wait
            await recorder.record_and_commit(second)
            assert _stored(db) == 2  # the one before it went along
            others = _records(20, prefix="c")
            await asyncio.gather(*(recorder.record_and_commit(r) for r in others))
            assert _stored(db) == 22
            recorder.record(third)
        finally:
            await recorder.stop()

    asyncio.run(scenario())
    assert _stored(db) == 23


def test_flush_writes_now_and_duplicates_are_counted_once(db: Database) -> None:
    async def scenario() -> Recorder:
        recorder = Recorder(Ledger(db), flush_interval_s=30)
        await recorder.start()
        try:
            records = _records(5)
            for record in records + records[:2]:
                recorder.record(record)
            await recorder.flush()
            assert _stored(db) == 5 and recorder.queue_depth == 0
            recorder.record(records[0])
            await recorder.flush()
        finally:
            await recorder.stop()
        return recorder

    recorder = asyncio.run(scenario())
    assert (recorder.stats.records_written, recorder.stats.duplicates) == (5, 3)
    assert _rolled_up(db) == 5


@pytest.mark.parametrize("failures", [1, 3])
def test_a_failed_write_is_retried_and_nothing_is_lost(db: Database, failures: int) -> None:
    ledger = FlakyLedger(db)
    ledger.failures = failures

    async def scenario() -> Recorder:
        recorder = Recorder(ledger, flush_interval_s=0.01, max_batch=8)
        await recorder.start()
        try:
            for record in _records(20):
                recorder.record(record)
            waited = _records(3, prefix="strict")
            # A strict write waits through the outage instead of failing or returning early.
            await asyncio.wait_for(asyncio.gather(*(recorder.record_and_commit(r)
                                                    for r in waited)), timeout=10)
            assert _stored(db) == 23
        finally:
            await recorder.stop()
        return recorder

    recorder = asyncio.run(scenario())
    assert recorder.stats.failures == failures and ledger.attempts > failures
    assert _stored(db) == 23 and _rolled_up(db) == 23  # nothing lost, nothing twice
    assert recorder.stats.records_written == 23


def test_stop_during_an_outage_still_writes_everything(db: Database) -> None:
    ledger = FlakyLedger(db)
    ledger.failures = 2

    async def scenario() -> None:
        recorder = Recorder(ledger, flush_interval_s=0.01)
        await recorder.start()
        for record in _records(12):
            recorder.record(record)
        await asyncio.wait_for(recorder.stop(), timeout=10)

    asyncio.run(scenario())
    assert _stored(db) == 12 and _rolled_up(db) == 12
