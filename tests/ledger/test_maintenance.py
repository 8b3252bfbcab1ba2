"""Retention never changes a figure, and the rollup check only compares whole buckets."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete, func, select, update

from tallygate.ledger import maintenance
from tallygate.ledger.maintenance import check_rollups, purge_expired
from tallygate.ledger.records import CallRecord
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import UsageQuery, usage_breakdown, usage_summary, usage_trend
from tallygate.ledger.timerange import resolve_range
from tallygate.store.calls import insert_calls
from tallygate.store.database import Database
from tallygate.store.schema import TIERS, calls, rollup_1m, rollup_15m
from tallygate.store.usage import CallFilter

US = 1_000_000
GRAIN_15M = 900
DAY = 86400


def _record(call_id: str, ts_s: float, **fields: Any) -> CallRecord:
    values: dict[str, Any] = {"model": "m", "call_type": "model", "input_tokens": 100,
                              "output_tokens": 10, "total_tokens": 110, "cost_nano": 1000,
                              "api_key_id": "k", "model_category": "chat"}
    values.update(fields)
    return CallRecord(id=call_id, ts_us=int(ts_s * US), **values)


def _count(db: Database, table: Any) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


def _figures(ledger: Ledger, start: str, end: str) -> dict[str, Any]:
    """Everything a page shows for the range, in two zones."""
    out = {}
    for tz in ("UTC", "Asia/Kathmandu"):
        query = UsageQuery(CallFilter(), resolve_range(None, start, end, tz))
        out[tz] = (usage_summary(ledger, query),
                   usage_trend(ledger, query, "cost", "day", "api_key"),
                   usage_trend(ledger, query, "requests", "hour"),
                   usage_breakdown(ledger, query, ["api_key", "model"]))
    return out


def _written_when_fresh(db: Database, records: list[CallRecord]) -> None:
    """As the recorder wrote them at the time: raw rows and every rollup tier."""
    insert_calls(db, records, minute_cutoff_s=None)


def _minute_rows(db: Database) -> int:
    return sum(_count(db, tier.table) for tier in TIERS if tier.windowed)


def test_purge_keeps_every_figure_and_the_check_passes(db: Database) -> None:
    now = time.time()
    ledger = Ledger(db, raw_retention_days=30, minute_retention_days=7)
    old = [_record(f"old-{i}", now - 40 * DAY - i * 97, api_key_id=f"k{i % 3}",
                   status_code=(200, 500, 429)[i % 3]) for i in range(30)]
    week_ago = [_record(f"week-{i}", now - 10 * DAY - i * 61, model="m2") for i in range(20)]
    fresh = [_record(f"fresh-{i}", now - 3600 - i * 13, call_type="internal")
             for i in range(15)]
    _written_when_fresh(db, old + week_ago)
    ledger.store(fresh)
    today = datetime.fromtimestamp(now, UTC).date()
    start = (today - timedelta(days=45)).isoformat()
    end = (today + timedelta(days=1)).isoformat()
    before = _figures(ledger, start, end)
    minute_rows_before = _minute_rows(db)

    result = purge_expired(ledger)
    assert result.raw_deleted == 30
    assert result.minute_rows_deleted == minute_rows_before - _minute_rows(db) > 0
    assert _count(db, calls) == 35
    with db.read() as conn:
        oldest_minute = conn.execute(select(func.min(rollup_1m.c.bucket))).scalar_one()
    assert oldest_minute >= ledger.minute_floor_s(now) - 120  # only the window is kept

    assert _figures(ledger, start, end) == before
    summary = before["UTC"][0]
    assert summary["cards"]["model_calls"] == 65 and summary["cards"]["internal_calls"] == 15

    report = check_rollups(ledger)
    assert report.ok, report.differences[:5]
    assert report.checked_from_s is not None and report.checked_from_s >= min(
        r.ts_us for r in week_ago) // US
    assert report.rows_compared > 0

    again = purge_expired(ledger)
    assert (again.raw_deleted, again.minute_rows_deleted) == (0, 0)


def test_a_retention_cut_inside_a_bucket_is_not_a_difference(db: Database) -> None:
    # Raw records kept for less than the minute rollups: those are still compared.
    ledger = Ledger(db, raw_retention_days=1, minute_retention_days=7)
    bucket = (int(time.time()) - 2 * DAY) // GRAIN_15M * GRAIN_15M
    inside = [_record("before-cut", bucket + 100), _record("after-cut", bucket + 500),
              _record("next-bucket", bucket + GRAIN_15M + 1)]
    _written_when_fresh(db, inside)
    ledger.store([_record("recent", time.time() - 60)])
    # The two buckets themselves (a calendar day could end between them, near midnight UTC).
    query = UsageQuery(CallFilter(), resolve_range(
        None, datetime.fromtimestamp(bucket, UTC).isoformat(),
        datetime.fromtimestamp(bucket + 2 * GRAIN_15M, UTC).isoformat(), "UTC"))
    assert usage_summary(ledger, query)["cards"]["model_calls"] == 3

    # Purge as if it were a day after a moment between the first two records.
    cut_s = bucket + 300
    result = purge_expired(ledger, now_s=cut_s + DAY)
    assert result.raw_deleted == 1
    assert usage_summary(ledger, query)["cards"]["model_calls"] == 3  # from the rollups

    report = check_rollups(ledger)
    assert report.ok, report.differences
    assert report.checked_from_s == bucket + GRAIN_15M  # the cut bucket is left out

    # A real difference after the cut is still found, and repaired.
    with db.write() as conn:
        conn.execute(update(rollup_15m).where(rollup_15m.c.bucket == bucket + GRAIN_15M)
                     .values(calls=5))
    found = check_rollups(ledger)
    assert [(d.table, d.key[0], d.stored and d.stored[0], d.rebuilt and d.rebuilt[0])
            for d in found.differences] == [("rollup_15m", bucket + GRAIN_15M, 5, 1)]
    assert check_rollups(ledger, repair=True).repaired == 1
    assert check_rollups(ledger).ok


def test_the_retention_boundary_and_no_retention(db: Database) -> None:
    now = 1_790_000_000.0
    kept_forever = Ledger(db)  # raw_retention_days = 0: raw records are never purged
    records = [_record("edge", now - 30 * DAY), _record("older", now - 30 * DAY - 0.000001),
               _record("ancient", now - 900 * DAY)]
    _written_when_fresh(db, records)
    assert purge_expired(kept_forever, now_s=now).raw_deleted == 0
    assert _count(db, calls) == 3
    assert _minute_rows(db) == 0  # minute rows past the window went

    thirty = Ledger(db, raw_retention_days=30)
    assert purge_expired(thirty, now_s=now).raw_deleted == 2  # "edge" is exactly 30 days
    with db.read() as conn:
        assert conn.execute(select(calls.c.id)).scalars().all() == ["edge"]
    assert check_rollups(thirty).ok


def test_check_on_an_empty_ledger_and_with_progress(db: Database) -> None:
    ledger = Ledger(db)
    empty = check_rollups(ledger)
    assert empty.ok and empty.checked_from_s is None and empty.rows_compared == 0
    now = time.time()
    ledger.store([_record(f"r{i}", now - i * DAY / 2) for i in range(7)])
    steps: list[tuple[int, int]] = []
    report = check_rollups(ledger, progress=lambda done, total: steps.append((done, total)))
    assert report.ok and steps and steps[-1][0] == steps[-1][1]
    assert [done for done, _ in steps] == list(range(1, len(steps) + 1))


def test_percentiles_are_not_shown_for_a_range_retention_cut_into(db: Database) -> None:
    # p50/p95 come from raw records: over a range whose oldest records were purged they would
    # describe only its recent part, so they are null and the answer says from when.
    now = time.time()
    ledger = Ledger(db, raw_retention_days=30)
    records = [_record(f"lat-{i}", now - 3600 - i * 60, latency_ms=100 * (i + 1))
               for i in range(20)]
    ledger.store(records)
    today = datetime.fromtimestamp(now, UTC).date()

    def breakdown(days_back: int) -> dict[str, Any]:
        query = UsageQuery(CallFilter(), resolve_range(
            None, (today - timedelta(days=days_back)).isoformat(),
            (today + timedelta(days=1)).isoformat(), "UTC"))
        return usage_breakdown(ledger, query, ["model"], with_percentiles=True)

    recent = breakdown(7)
    assert recent["percentiles"] == {"available": True, "reason": None}
    (row,) = recent["rows"]
    assert (row["p50_latency_ms"], row["p95_latency_ms"]) == (1000, 1900)
    assert row["p50_ttft_ms"] is None  # no call had one

    old = breakdown(45)
    assert old["percentiles"]["reason"] == "raw_records_purged"
    assert old["percentiles"]["raw_records_from"].startswith(
        (today - timedelta(days=30)).isoformat())
    (row,) = old["rows"]
    assert row["calls"] == 20 and row["p50_latency_ms"] is None

    # More calls than one view may sort: none either, and the answer says what the limit is.
    ledger.percentile_max_calls = 19
    busy = breakdown(7)
    assert busy["percentiles"] == {"available": False, "reason": "too_many_calls",
                                   "max_calls": 19}
    assert busy["rows"][0]["p95_latency_ms"] is None
    ledger.percentile_max_calls = 20
    assert breakdown(7)["rows"][0]["p95_latency_ms"] == 1900


def test_a_repair_reads_again_what_live_traffic_added_since_the_check(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """`db check --repair` under traffic: a call recorded between the check's read and its
    repair must not be overwritten by the sums read before it."""
    ledger = Ledger(db)
    bucket = int(time.time()) // GRAIN_15M * GRAIN_15M - 2 * GRAIN_15M
    _written_when_fresh(db, [_record("first", bucket + 10)])
    with db.write() as conn:
        conn.execute(update(rollup_15m).where(rollup_15m.c.bucket == bucket).values(calls=5))
    compare = maintenance.compare_rollups
    arrived: list[str] = []

    def compare_then_a_call_arrives(db_: Database, tier_name: str, lo: int, hi: int) -> Any:
        found = compare(db_, tier_name, lo, hi)
        if tier_name == rollup_15m.name and not arrived:
            _written_when_fresh(db, [_record("second", bucket + 20)])
            arrived.append("second")
        return found

    monkeypatch.setattr(maintenance, "compare_rollups", compare_then_a_call_arrives)
    assert check_rollups(ledger, repair=True).repaired == 1
    monkeypatch.undo()
    assert arrived == ["second"]
    assert check_rollups(ledger).ok
    with db.read() as conn:
        assert conn.execute(select(rollup_15m.c.calls).where(
            rollup_15m.c.bucket == bucket)).scalar_one() == 2


def test_a_repair_leaves_alone_the_buckets_a_purge_cut_into_since_the_check(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway's hourly purge between the check's read and its repair: the bucket it cut
    into no longer has all its raw records, and must not be rewritten from what is left."""
    ledger = Ledger(db, raw_retention_days=30)
    second = int(time.time()) // GRAIN_15M * GRAIN_15M - 4 * GRAIN_15M
    _written_when_fresh(db, [_record("oldest", second - GRAIN_15M + 100),
                             _record("cut", second + 2), _record("kept", second + 10)])
    with db.write() as conn:
        conn.execute(update(rollup_15m).where(rollup_15m.c.bucket == second).values(calls=5))
    compare = maintenance.compare_rollups

    def compare_then_purge(db_: Database, tier_name: str, lo: int, hi: int) -> Any:
        found = compare(db_, tier_name, lo, hi)
        with db.write() as conn:  # as purge_before does, up to a cutoff inside `second`'s bucket
            conn.execute(delete(calls).where(calls.c.ts < (second + 5) * US))
        return found

    monkeypatch.setattr(maintenance, "compare_rollups", compare_then_purge)
    check_rollups(ledger, repair=True)
    with db.read() as conn:
        calls_stored = conn.execute(select(rollup_15m.c.calls).where(
            rollup_15m.c.bucket == second)).scalar_one()
    assert calls_stored == 5  # not 1, the one raw record the purge left


def test_totals_are_exact_after_another_process_purged_minutes_with_a_shorter_window(
        db: Database) -> None:
    """Minute rollups kept 7 days by this process, purged to 1 day by another: totals read
    only the minutes of the last 23 hours, which every window keeps."""
    now = time.time()
    records = [_record(f"r{i}", now - i * 97 - 7, input_tokens=i) for i in range(2700)]
    _written_when_fresh(db, records)
    purge_expired(Ledger(db, minute_retention_days=1), now_s=now)
    ledger = Ledger(db, minute_retention_days=7)
    for start_s in (now - 3 * DAY, now - DAY - 600, now - 23 * 3600 - 61, now - 5400):
        start = datetime.fromtimestamp(start_s, UTC).isoformat()
        end = datetime.fromtimestamp(now + 60, UTC).isoformat()
        query = UsageQuery(CallFilter(), resolve_range(None, start, end, "UTC"))
        cards = usage_summary(ledger, query)["cards"]
        inside = [r for r in records if start_s * US <= r.ts_us]
        assert cards["model_calls"] == len(inside), start
        assert cards["input_tokens"] == sum(r.input_tokens for r in inside), start


def test_repairs_while_a_writer_records_end_exact_and_never_deadlock(db: Database) -> None:
    """A writer keeps recording into the very buckets a repair rewrites (real threads, real
    locks): no deadlock, no lost call, and the rollups end equal to the raw records."""
    ledger = Ledger(db)
    now = time.time()
    bucket = int(now) // GRAIN_15M * GRAIN_15M
    _written_when_fresh(db, [_record("seed", bucket + 1)])
    stop = threading.Event()
    written: list[int] = []

    def record() -> None:
        batch = 0
        while not stop.is_set() and batch < 400:
            ledger.store([_record(f"w{batch}-{i}", bucket + 1 + (batch * 5 + i) % 600)
                          for i in range(5)])
            batch += 1
        written.append(batch)

    writer = threading.Thread(target=record)
    writer.start()
    try:
        for _ in range(3):
            with db.write() as conn:
                conn.execute(update(rollup_15m).where(rollup_15m.c.bucket == bucket)
                             .values(calls=rollup_15m.c.calls + 1000))
            check_rollups(ledger, repair=True)
    finally:
        stop.set()
        writer.join(timeout=60)
    assert not writer.is_alive() and written and written[0] > 0
    report = check_rollups(ledger)
    assert report.ok, report.differences[:3]
    with db.read() as conn:
        stored = conn.execute(select(rollup_15m.c.calls).where(
            rollup_15m.c.bucket == bucket)).scalar_one()
    assert stored == 1 + 5 * written[0]
