"""Retention never changes a figure, and the rollup check only compares whole buckets."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import func, select, update

from tallygate.domain.records import CallRecord
from tallygate.ledger import maintenance
from tallygate.ledger.ingest import ingest_events
from tallygate.ledger.maintenance import check_rollups, purge_expired
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import UsageQuery, usage_breakdown, usage_summary, usage_trend
from tallygate.ledger.timerange import resolve_range
from tallygate.store.calls import insert_calls
from tallygate.store.database import Database
from tallygate.store.schema import TIERS, calls, rollup_1d_upstream, rollup_1m, rollup_15m
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
        summary = usage_summary(ledger, query)
        # Where the minute window begins moves with the clock: two readings a minute boundary
        # apart differ there although no figure does.
        summary.pop("peak_window_start")
        out[tz] = (summary,
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
    floor_s = int(now - 30 * DAY) // DAY * DAY  # the UTC midnight before the retention's cut
    assert ledger.purge_floor_us() == floor_s * US
    assert report.checked_from_s == floor_s  # from the recorded floor, not the oldest record
    assert report.rows_compared > 0

    again = purge_expired(ledger)
    assert (again.raw_deleted, again.minute_rows_deleted) == (0, 0)


def test_a_purge_cuts_at_a_utc_midnight_and_the_check_compares_from_there(
        db: Database) -> None:
    # Raw records kept for less than the minute rollups: those are still compared.
    ledger = Ledger(db, raw_retention_days=1, minute_retention_days=7)
    midnight = (int(time.time()) - 3 * DAY) // DAY * DAY
    records = [_record("day-before", midnight - 100), _record("after-midnight", midnight + 500),
               _record("next-bucket", midnight + GRAIN_15M + 1)]
    _written_when_fresh(db, records)
    ledger.store([_record("recent", time.time() - 60)])
    query = UsageQuery(CallFilter(), resolve_range(
        None, datetime.fromtimestamp(midnight - DAY, UTC).isoformat(),
        datetime.fromtimestamp(midnight + DAY, UTC).isoformat(), "UTC"))
    assert usage_summary(ledger, query)["cards"]["model_calls"] == 3

    # Purge as if it were a day after an hour past that midnight: the cut is the midnight.
    result = purge_expired(ledger, now_s=midnight + 3600 + DAY)
    assert result.raw_deleted == 1
    assert ledger.purge_floor_us() == midnight * US
    assert usage_summary(ledger, query)["cards"]["model_calls"] == 3  # from the rollups

    report = check_rollups(ledger)
    assert report.ok, report.differences
    assert report.checked_from_s == midnight

    # A real difference above the floor is still found, and repaired.
    with db.write() as conn:
        conn.execute(update(rollup_15m).where(rollup_15m.c.bucket == midnight + GRAIN_15M)
                     .values(calls=5))
    found = check_rollups(ledger)
    assert [(d.table, d.key[0], d.stored and d.stored[0], d.rebuilt and d.rebuilt[0])
            for d in found.differences] == [("rollup_15m", midnight + GRAIN_15M, 5, 1)]
    assert check_rollups(ledger, repair=True).repaired == 1
    assert check_rollups(ledger).ok


def test_the_retention_boundary_and_no_retention(db: Database) -> None:
    now = 1_790_000_000.0
    kept_forever = Ledger(db)  # raw_retention_days = 0: raw records are never purged
    midnight = int(now - 30 * DAY) // DAY * DAY
    records = [_record("edge", now - 30 * DAY), _record("older", now - 30 * DAY - 0.000001),
               _record("midnight", midnight), _record("before", midnight - 0.000001),
               _record("ancient", now - 900 * DAY)]
    _written_when_fresh(db, records)
    assert purge_expired(kept_forever, now_s=now).raw_deleted == 0
    assert _count(db, calls) == 5
    assert _minute_rows(db) == 0  # minute rows past the window went
    assert kept_forever.purge_floor_us() == 0

    thirty = Ledger(db, raw_retention_days=30)
    assert purge_expired(thirty, now_s=now).raw_deleted == 2  # below the UTC midnight
    with db.read() as conn:
        assert sorted(conn.execute(select(calls.c.id)).scalars()) == [
            "edge", "midnight", "older"]
    assert thirty.purge_floor_us() == midnight * US
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


def test_a_repair_leaves_alone_the_days_a_purge_removed_since_the_check(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    """A gateway's hourly purge between the check's read and its repair: the day it purged
    no longer has its raw records, and must not be rewritten from what is left."""
    ledger = Ledger(db)
    day = (int(time.time()) - 3 * DAY) // DAY * DAY
    _written_when_fresh(db, [_record("cut", day + 2), _record("also-cut", day + 10),
                             _record("kept", day + DAY + 10)])
    with db.write() as conn:
        conn.execute(update(rollup_15m).where(rollup_15m.c.bucket == day).values(calls=5))
    compare = maintenance.compare_rollups

    def compare_then_purge(db_: Database, tier_name: str, lo: int, hi: int) -> Any:
        found = compare(db_, tier_name, lo, hi)
        purge_expired(Ledger(db, raw_retention_days=1), now_s=day + 2 * DAY + 60)
        return found

    monkeypatch.setattr(maintenance, "compare_rollups", compare_then_purge)
    check_rollups(ledger, repair=True)
    monkeypatch.undo()
    assert ledger.purge_floor_us() == (day + DAY) * US
    with db.read() as conn:
        calls_stored = conn.execute(select(rollup_15m.c.calls).where(
            rollup_15m.c.bucket == day)).scalar_one()
    assert calls_stored == 5  # not 0: its raw records were purged, not never there


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


def _event(call_id: str, ts_s: float, **fields: Any) -> dict[str, Any]:
    return {"id": call_id, "ts": datetime.fromtimestamp(ts_s, UTC).isoformat(), "model": "m",
            "api_key_id": "k", "input_tokens": 100, "output_tokens": 10, "cost": "0.001",
            **fields}


def test_ingesting_again_after_a_purge_counts_each_id_once(db: Database) -> None:
    now = time.time()
    ledger = Ledger(db, raw_retention_days=30)
    events = [_event(f"late-{i}", now - 40 * DAY - i * 60) for i in range(3)]
    assert ingest_events(ledger, events).accepted == 3
    assert purge_expired(ledger).raw_deleted == 3

    again = ingest_events(ledger, events)  # a client's retry, a replayed spool, a re-import
    today = datetime.fromtimestamp(now, UTC).date()
    query = UsageQuery(CallFilter(), resolve_range(
        None, (today - timedelta(days=45)).isoformat(), (today + timedelta(days=1)).isoformat(),
        "UTC"))
    assert usage_summary(ledger, query)["cards"]["model_calls"] == 3
    assert (again.accepted, again.duplicates, again.refused) == (0, 0, 3)
    floor = datetime.fromtimestamp(ledger.purge_floor_us() / US, UTC)
    assert floor.time() == datetime.min.time()  # a UTC midnight
    assert [(e.index, e.id, e.field) for e in again.errors] == [
        (0, "late-0", "ts"), (1, "late-1", "ts"), (2, "late-2", "ts")]
    assert again.errors[0].message == (
        f"older than the ledger's purge floor {floor:%Y-%m-%dT%H:%M:%SZ}; raw records before it "
        "were purged, so this id cannot be checked for duplicates")


def test_a_late_record_after_a_purge_leaves_the_purged_days_alone(db: Database) -> None:
    now = time.time()
    ledger = Ledger(db, raw_retention_days=30)
    day = (int(now) - 36 * DAY) // DAY * DAY
    _written_when_fresh(db, [_record(f"old-{i}", day + i * 1800 + 7) for i in range(48)])
    ledger.store([_record("recent", now - 3600)])
    purge_expired(ledger)
    today = datetime.fromtimestamp(now, UTC).date()
    start = (today - timedelta(days=50)).isoformat()
    end = (today + timedelta(days=1)).isoformat()
    before = _figures(ledger, start, end)
    assert before["UTC"][0]["cards"]["model_calls"] == 49

    late = ingest_events(ledger, [_event("late", now - 45 * DAY),
                                  _event("late-in-that-day", day + 5000)])
    check_rollups(ledger, repair=True)
    assert _figures(ledger, start, end) == before
    assert late.refused == 2 and late.accepted == 0
    assert check_rollups(ledger).ok


def test_a_raw_record_below_the_floor_is_never_compared_or_repaired(db: Database) -> None:
    # Refusal keeps records below the floor out; a row put there by hand (or by an older
    # tallygate) must still not make the repair rewrite the purged days from it.
    now = time.time()
    ledger = Ledger(db, raw_retention_days=30)
    day = (int(now) - 36 * DAY) // DAY * DAY
    _written_when_fresh(db, [_record(f"old-{i}", day + i * 1800 + 7) for i in range(48)])
    purge_expired(ledger)
    with db.write() as conn:
        conn.execute(calls.insert().values(
            id="stray", ts=(day + 100) * US, api_key_id="k", model="m", model_category="chat",
            call_type="model", status_code=200, input_tokens=1, output_tokens=1,
            cached_input_tokens=0, reasoning_tokens=0, total_tokens=2, cost_nano=1,
            estimated=False))
    today = datetime.fromtimestamp(now, UTC).date()
    start, end = (today - timedelta(days=40)).isoformat(), today.isoformat()
    before = usage_summary(ledger, UsageQuery(CallFilter(), resolve_range(None, start, end,
                                                                          "UTC")))
    report = check_rollups(ledger, repair=True)
    assert report.ok and report.repaired == 0
    assert report.checked_from_s == ledger.purge_floor_us() // US
    after = usage_summary(ledger, UsageQuery(CallFilter(), resolve_range(None, start, end,
                                                                         "UTC")))
    assert after["cards"] == before["cards"] and before["cards"]["model_calls"] == 48


def test_turning_retention_off_after_a_purge_rewrites_nothing(db: Database) -> None:
    now = time.time()
    thirty = Ledger(db, raw_retention_days=30)
    cut = now - 30 * DAY
    # Calls on both sides of the retention's cut, in the same quarter-hours.
    _written_when_fresh(db, [_record(f"c{i}", cut - 3 * 3600 + i * 37) for i in range(600)])
    thirty.store([_record("recent", now - 60)])
    purge_expired(thirty, now_s=now)
    today = datetime.fromtimestamp(now, UTC).date()
    start = (today - timedelta(days=35)).isoformat()
    end = (today + timedelta(days=1)).isoformat()
    before = _figures(thirty, start, end)
    assert before["UTC"][0]["cards"]["model_calls"] == 601

    forever = Ledger(db)  # raw_retention_days changed from 30 to 0
    report = check_rollups(forever, repair=True)
    assert _figures(forever, start, end) == before
    assert report.ok, report.differences[:3]
    assert report.checked_from_s == thirty.purge_floor_us() // US
    # The floor stays where the purge left it, whatever the settings now say.
    purge_expired(forever)
    purge_expired(Ledger(db, raw_retention_days=90))
    assert forever.purge_floor_us() == int(cut) // DAY * DAY * US


def test_a_partial_quarter_hour_edge_is_read_from_the_minutes_after_a_purge(
        db: Database) -> None:
    """Raw records purged, the minute rollups still there: an edge that is part of a
    quarter-hour comes from the minutes, and every figure stays the brute force's."""
    now = time.time()
    ledger = Ledger(db, raw_retention_days=3, minute_retention_days=7)
    records = [_record(f"r{i}", now - 6 * DAY + i * 37, input_tokens=i % 50,
                       api_key_id=f"k{i % 2}") for i in range(int(6 * DAY - 3600) // 37)]
    _written_when_fresh(db, records)
    purge_expired(ledger, now_s=now)

    def figures(start_s: float, end_s: float, **filters: Any) -> tuple[dict[str, Any], Any]:
        query = UsageQuery(CallFilter(**filters), resolve_range(
            None, datetime.fromtimestamp(start_s, UTC).isoformat(),
            datetime.fromtimestamp(end_s, UTC).isoformat(), "UTC"))
        return usage_summary(ledger, query), usage_breakdown(ledger, query, ["api_key"])

    quarter = (int(now) - 5 * DAY) // GRAIN_15M * GRAIN_15M
    start, end = quarter + 7 * 60, quarter + DAY + 4 * 60  # both edges partial quarter-hours
    for filters in ({}, {"api_key_ids": ("k1",)}):
        summary, breakdown = figures(start, end, **filters)
        inside = [r for r in records if start * US <= r.ts_us < end * US
                  and r.api_key_id in filters.get("api_key_ids", ("k0", "k1"))]
        assert summary["cards"]["model_calls"] == len(inside)
        assert summary["cards"]["input_tokens"] == sum(r.input_tokens for r in inside)
        assert sum(row["calls"] for row in breakdown["rows"]) == len(inside)
        assert summary["approximate"] == {"cards": False, "previous": False}
    assert ledger.purge_floor_us() > start * US
    # The previous period of a 1-day range ending at such an edge: exact too.
    summary, _ = figures(start + DAY, end + DAY)
    lo, hi = (datetime.fromisoformat(summary[name]).timestamp() * US
              for name in ("previous_start", "previous_end"))
    assert lo < ledger.purge_floor_us() and lo % (GRAIN_15M * US)
    assert summary["previous"]["model_calls"] == sum(lo <= r.ts_us < hi for r in records)
    assert summary["approximate"] == {"cards": False, "previous": False}

    # A partial minute below the floor, or an edge past the minute window: nothing exact
    # holds it any more, and the answer says so.
    assert figures(start + 13, end)[0]["approximate"] == {"cards": True, "previous": True}
    assert figures(now - 20 * DAY + 420, now)[0]["approximate"]["cards"] is True
    assert figures(now - 2 * DAY + 13, now)[0]["approximate"]["cards"] is False


def test_the_check_compares_and_repairs_the_new_measures_and_upstream_tiers(
        db: Database) -> None:
    ledger = Ledger(db)
    ts = time.time() - 3 * DAY
    ledger.store([_record("img", ts, units=4, unit="image", upstream_model="img-v2"),
                  _record("msg", ts + 1, input_tokens=100, cached_input_tokens=10,
                          cache_write_tokens=60, upstream_model="m-2026")])
    assert check_rollups(ledger).ok
    bucket = int(ts) // DAY * DAY
    with db.write() as conn:
        conn.execute(update(rollup_1d_upstream).where(rollup_1d_upstream.c.bucket == bucket,
                                                      rollup_1d_upstream.c.upstream_model
                                                      == "img-v2").values(units_image=5))
        conn.execute(update(rollup_15m).values(cache_write_tokens=0))
    found = check_rollups(ledger)
    assert {d.table for d in found.differences} == {"rollup_1d_upstream", "rollup_15m"}
    assert check_rollups(ledger, repair=True).repaired == 2
    assert check_rollups(ledger).ok
