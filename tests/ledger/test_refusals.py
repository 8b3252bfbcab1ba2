"""Refusals past a bound per key and minute are counted into one record per kind and minute:
few rows, every count exact (``ledger/refusals.py``, ``Recorder.record_refusal``)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import replace

import pytest
from sqlalchemy import func, select

from tallygate.domain.records import CallRecord, new_call_id
from tallygate.ledger.ingest import ingest_events
from tallygate.ledger.maintenance import check_rollups
from tallygate.ledger.recorder import Recorder
from tallygate.ledger.refusals import MINUTE_US, RefusalFolder
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import UsageQuery, usage_breakdown, usage_summary, usage_trend
from tallygate.ledger.timerange import resolve_range
from tallygate.store.database import Database
from tallygate.store.schema import calls
from tallygate.store.usage import CallFilter

US = 1_000_000


def refusal(ts_us: int, status: int = 403, key: str = "key-a",
            model: str = "m-chat") -> CallRecord:
    return CallRecord(id=new_call_id(), ts_us=ts_us, model=model, call_type="model",
                      api_key_id=key, model_category="chat",
                      endpoint="/v1/chat/completions", status_code=status, latency_ms=1,
                      metadata={"request_id": "req"})


def _rows(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(calls)).scalar_one())


def _query(tz: str = "UTC") -> UsageQuery:
    return UsageQuery(CallFilter(), resolve_range("1d", None, None, tz))


def test_the_folder_records_a_bounded_number_one_by_one_and_counts_the_rest() -> None:
    folder = RefusalFolder(records_per_minute=3)
    minute = 1_000 * MINUTE_US
    one_by_one = [folder.admit(refusal(minute + n)) for n in range(10)]
    assert one_by_one == [True] * 3 + [False] * 7
    assert folder.admit(refusal(minute + 10, key="key-b"))  # another key has its own share
    for n in range(5):  # another kind of refusal of the same key: its own count
        assert not folder.admit(refusal(minute + 20 + n, status=429))
    served = replace(refusal(minute + 30, status=200))
    assert folder.admit(served)  # only refusals are ever counted
    assert folder.held == 12
    assert folder.ended(minute + MINUTE_US - 1) == []  # the minute is not over yet
    aggregates = folder.ended(minute + MINUTE_US)
    assert sorted((r.status_code, r.repeats) for r in aggregates) == [(403, 7), (429, 5)]
    for record in aggregates:
        assert record.ts_us // MINUTE_US == minute // MINUTE_US  # stays in its minute
        assert record.latency_ms is None and record.metadata is None
    assert max(r.ts_us for r in aggregates) == minute + 24  # the newest refusal counted
    assert folder.held == 0 and folder.ended(minute + 5 * MINUTE_US) == []
    # A new minute: a new share one by one.
    assert folder.admit(refusal(minute + MINUTE_US))


def test_a_kind_counted_once_is_handed_over_as_that_refusal_itself() -> None:
    folder = RefusalFolder(records_per_minute=0)
    first = refusal(5 * MINUTE_US)
    assert not folder.admit(first)
    assert folder.drain() == [first]


@pytest.mark.parametrize("records_per_minute", [0, 10])
def test_a_flood_over_two_minutes_writes_few_rows_and_every_figure_counts_each_refusal(
        db: Database, records_per_minute: int) -> None:
    ledger = Ledger(db)
    # Two whole minutes just past: the recorder's loop hands them over as they are over.
    this_minute = time.time_ns() // 1000 // MINUTE_US * MINUTE_US
    minutes = (this_minute - 3 * MINUTE_US, this_minute - 2 * MINUTE_US)
    flood = [refusal(start + n * 100_000, status=status)
             for start in minutes for status in (403, 429) for n in range(500)]

    async def scenario() -> None:
        recorder = Recorder(ledger, flush_interval_s=0.01,
                            refusal_records_per_minute=records_per_minute)
        await recorder.start()
        for record in flood:
            await recorder.record_refusal(record)
        for _ in range(300):  # the ended minutes are written without waiting for stop
            await asyncio.sleep(0.01)
            if recorder.refusals.held == 0 and recorder.queue_depth == 0:
                break
        assert recorder.refusals.held == 0
        await recorder.stop()

    asyncio.run(scenario())
    # Per key and minute: the share one by one, and one record per kind (403, 429).
    assert _rows(db) == 2 * (records_per_minute + 2)
    cards = usage_summary(ledger, _query())["cards"]
    assert cards["model_calls"] == 2000
    assert cards["failed_calls"] == 1000 and cards["rate_limited_calls"] == 1000
    assert cards["success_calls"] == 0
    (row,) = usage_breakdown(ledger, _query("Asia/Kathmandu"), ["api_key"])["rows"]
    assert (row["calls"], row["failed_calls"], row["rate_limited_calls"]) == (2000, 1000, 1000)
    assert row["peak_rpm"] == 1000
    trend = usage_trend(ledger, _query(), "requests", "minute")
    assert sorted(v for s in trend["series"] for v in s["values"] if v) == [1000, 1000]
    assert check_rollups(ledger).ok


def test_stop_writes_the_counts_of_the_minute_under_way(db: Database) -> None:
    ledger = Ledger(db)

    async def scenario() -> None:
        recorder = Recorder(ledger, flush_interval_s=30, refusal_records_per_minute=2)
        await recorder.start()
        now = time.time_ns() // 1000
        for n in range(300):
            await recorder.record_refusal(refusal(now + n))
        assert recorder.refusals.held == 298
        await recorder.stop()
        assert recorder.refusals.held == 0

    asyncio.run(scenario())
    assert _rows(db) == 3
    assert usage_summary(ledger, _query())["cards"]["failed_calls"] == 300


def test_a_strict_refusal_recorded_one_by_one_is_committed_before_it_returns(
        db: Database) -> None:
    ledger = Ledger(db)

    async def scenario() -> None:
        recorder = Recorder(ledger, flush_interval_s=30, refusal_records_per_minute=1)
        await recorder.start()
        now = time.time_ns() // 1000
        await recorder.record_refusal(refusal(now), commit=True)
        assert _rows(db) == 1
        await recorder.record_refusal(refusal(now + 1), commit=True)  # counted: no wait
        assert _rows(db) == 1 and recorder.refusals.held == 1
        await recorder.stop()

    asyncio.run(scenario())
    assert _rows(db) == 2


def test_an_aggregate_written_twice_is_counted_once(db: Database) -> None:
    # Its id is made once: a retried batch or a spool replay offers the same id again.
    ledger = Ledger(db)
    folder = RefusalFolder(records_per_minute=0)
    now = time.time_ns() // 1000
    for n in range(40):
        folder.admit(refusal(now + n))
    (aggregate,) = folder.drain()
    assert ledger.store([aggregate]).accepted == 1
    assert ledger.store([aggregate]).duplicates == 1
    assert usage_summary(ledger, _query())["cards"]["failed_calls"] == 40


def test_events_may_stand_for_several_calls(db: Database) -> None:
    ledger = Ledger(db)
    ts = time.time() - 60
    base = {"ts": ts, "model": "m-chat", "status_code": 200, "input_tokens": 30}
    result = ingest_events(ledger, [
        {**base, "id": "several", "repeats": 3},
        {**base, "id": "one"},
        {**base, "id": "zero", "repeats": 0},
        {**base, "id": "timed", "repeats": 2, "latency_ms": 40},
    ])
    assert result.accepted == 2
    assert sorted(e.field for e in result.errors) == ["latency_ms", "repeats"]
    cards = usage_summary(ledger, _query())["cards"]
    assert cards["model_calls"] == 4 and cards["success_calls"] == 4
    assert cards["input_tokens"] == 60  # an event's tokens are the totals of its calls


def test_an_aggregate_keeps_its_repeats_through_the_spool() -> None:
    from tallygate.ledger.spool import decode_record, encode_records

    folder = RefusalFolder(records_per_minute=0)
    for n in range(7):
        folder.admit(refusal(MINUTE_US + n, status=429))
    (aggregate,) = folder.drain()
    (line,) = encode_records([aggregate]).splitlines()
    assert decode_record(line) == aggregate and decode_record(line).repeats == 7
