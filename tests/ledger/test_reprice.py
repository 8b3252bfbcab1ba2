"""``pricing recompute``: a price correction reprices raw records and their rollups together."""

from __future__ import annotations

import contextlib
import threading
import time
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import event, func, select

from tallygate.domain.pricing import Discount, Price
from tallygate.domain.records import CallRecord
from tallygate.ledger.maintenance import check_rollups
from tallygate.ledger.reprice import reprice
from tallygate.ledger.service import Ledger
from tallygate.store import prices as price_store
from tallygate.store.database import Database
from tallygate.store.reprice import RepriceCounts, reprice_calls
from tallygate.store.schema import TIERS, calls, rollup_1m, rollup_15m
from tallygate.store.usage import CallFilter

US = 1_000_000


def _sum(db: Database, table: Any, **where: Any) -> int:
    query = select(func.coalesce(func.sum(table.c.cost_nano), 0))
    for name, value in where.items():
        query = query.where(table.c[name] == value)
    with db.read() as conn:
        return int(conn.execute(query).scalar_one())


def _records(now_s: int) -> list[CallRecord]:
    out = []
    for i in range(40):
        model = ("chat", "embed", "unpriced")[i % 3]
        out.append(CallRecord(
            id=f"c{i:03d}", ts_us=(now_s - 3600 + i * 60) * US, model=model, call_type="model",
            api_key_id=("k1", "k2", None)[i % 3 if i % 2 else 0], model_category="chat",
            status_code=500 if i % 7 == 0 else 200, input_tokens=1000 + i,
            output_tokens=100 + i, cached_input_tokens=i, total_tokens=1100 + 2 * i,
            cost_nano=12345 if model == "unpriced" else 0))
    return out


def test_recompute_reprices_raw_and_rollups_in_one_go(ledger: Ledger) -> None:
    now_s = int(time.time()) // 60 * 60
    start_us, end_us = (now_s - 7200) * US, (now_s + 60) * US
    ledger.set_price(Price("chat", 0, Decimal("1"), Decimal("2")))
    ledger.set_price(Price("embed", 0, Decimal("0.1"), Decimal(0), per_call=Decimal("0.001")))
    records = _records(now_s)
    ledger.store([r if r.model == "unpriced" else
                  CallRecord(**{**_fields(r), "cost_nano": ledger.cost_of(
                      r.model, r.ts_us, r.input_tokens, r.cached_input_tokens, r.output_tokens,
                      r.status_code, r.api_key_id)}) for r in records])
    before = _sum(ledger.db, calls)
    assert before == _sum(ledger.db, rollup_15m) == _sum(ledger.db, rollup_1m)

    # A correction: chat was twice as expensive from 30 minutes ago, and k1 has 10 % off.
    corrected_from = (now_s - 1800) * US
    ledger.set_price(Price("chat", corrected_from, Decimal("2"), Decimal("4")))
    price_store.set_discount(ledger.db, Discount("k1", 0, Decimal(10)))

    dry = reprice(ledger, start_us, end_us, dry_run=True)
    assert dry.changed > 0 and not dry.written
    assert _sum(ledger.db, calls) == before  # a dry run changes nothing

    report = reprice(ledger, start_us, end_us)
    assert report.written and report.changed == dry.changed
    assert report.examined == len(records)
    assert report.unpriced == sum(r.model == "unpriced" for r in records)
    assert report.before_nano == before
    expected = sum(
        12345 if r.model == "unpriced" else ledger.cost_of(
            r.model, r.ts_us, r.input_tokens, r.cached_input_tokens, r.output_tokens,
            r.status_code, r.api_key_id) for r in records)
    assert report.after_nano == expected == _sum(ledger.db, calls)
    # Every rollup tier moved by exactly the same amounts, per key and model.
    assert [_sum(ledger.db, tier.table) for tier in TIERS] == [expected] * len(TIERS)
    for key in ("k1", "k2", None):
        for model in ("chat", "embed", "unpriced"):
            raw = sum(cost for k, m, cost in _stored(ledger) if k == key and m == model)
            assert _sum(ledger.db, rollup_15m, api_key_id=key or "", model=model) == raw
    assert check_rollups(ledger).ok
    shown = report.as_dict("USD")
    assert shown["changed"] == report.changed and Decimal(shown["after"]) * 10**9 == expected
    assert {m["model"] for m in shown["models"]} <= {"chat", "embed"}

    # Run again: nothing left to change.
    again = reprice(ledger, start_us, end_us)
    assert again.changed == 0 and not again.written and again.before_nano == expected


def test_recompute_only_touches_the_range_and_the_filter(ledger: Ledger) -> None:
    now_s = int(time.time()) // 60 * 60
    ledger.set_price(Price("chat", 0, Decimal("1"), Decimal("2")))
    ledger.store(_records(now_s))  # all stored at cost 0 (or 12345): repricing changes them
    ledger.set_price(Price("chat", 0, Decimal("3"), Decimal("2")))
    middle_us = (now_s - 1800) * US
    report = reprice(ledger, middle_us, (now_s + 60) * US, CallFilter(api_key_ids=("k1",)))
    changed = {key for key, model, cost in _stored(ledger) if cost and model == "chat"}
    assert changed and changed <= {"k1"}
    with ledger.db.read() as conn:
        earliest = conn.execute(select(func.min(calls.c.ts)).where(
            calls.c.cost_nano != 0, calls.c.model == "chat")).scalar_one()
    assert earliest >= middle_us
    assert report.changed == len([1 for _, model, cost in _stored(ledger)
                                  if cost and model == "chat"])
    assert check_rollups(ledger).ok


def _fields(record: CallRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in record.__slots__}  # type: ignore[attr-defined]


def _stored(ledger: Ledger) -> list[tuple[Any, ...]]:
    with ledger.db.read() as conn:
        return [tuple(row) for row in conn.execute(
            select(calls.c.api_key_id, calls.c.model, calls.c.cost_nano))]


def _repriced_setup(ledger: Ledger, now_s: int) -> int:
    """Records stored at one price, then a correction from the epoch: returns the raw sum
    every tier must hold once repriced."""
    ledger.set_price(Price("chat", 0, Decimal("1"), Decimal("2")))
    ledger.set_price(Price("embed", 0, Decimal("0.1"), Decimal(0), per_call=Decimal("0.001")))
    ledger.store([CallRecord(**{**_fields(r), "cost_nano": ledger.cost_of(
        r.model, r.ts_us, r.input_tokens, r.cached_input_tokens, r.output_tokens,
        r.status_code, r.api_key_id)}) for r in _records(now_s)])
    ledger.set_price(Price("chat", 0, Decimal("3"), Decimal("7")))
    ledger.set_price(Price("embed", 0, Decimal("0.3"), Decimal(1), per_call=Decimal("0.002")))
    return sum(ledger.cost_of(r.model, r.ts_us, r.input_tokens, r.cached_input_tokens,
                              r.output_tokens, r.status_code, r.api_key_id)
               if r.model != "unpriced" else 0 for r in _records(now_s))


def _new_cost(ledger: Ledger, hook: Any = None) -> Any:
    prices, discounts = ledger.prices(), ledger.discounts()

    def new_cost(row: Any) -> int | None:
        if hook is not None:
            hook()
        if prices.price_at(row.model, row.ts) is None:
            return None
        return prices.cost_nano(row.model, row.ts, row.input_tokens, row.cached_input_tokens,
                                row.output_tokens, row.status_code,
                                discounts.percent_at(row.api_key_id, row.ts))
    return new_cost


def _assert_every_tier_is(ledger: Ledger, expected: int) -> None:
    assert _sum(ledger.db, calls) == expected
    assert [_sum(ledger.db, tier.table) for tier in TIERS] == [expected] * len(TIERS)
    assert check_rollups(ledger).ok


def test_two_recomputes_at_once_move_the_rollups_once(ledger: Ledger) -> None:
    """Both read every cost before either writes (a barrier between reading a cost and
    writing it, with a timeout: once one of them holds the records, the other cannot reach
    it); the rollups must still move by the difference once, not twice."""
    now_s = int(time.time()) // 60 * 60
    expected = _repriced_setup(ledger, now_s)
    barrier = threading.Barrier(2)

    def meet() -> None:
        # Broken after a timeout: the other one waits for this one's locks, as it should.
        with contextlib.suppress(threading.BrokenBarrierError):
            barrier.wait(timeout=1)

    results: list[Any] = []

    def run() -> None:
        try:
            results.append(reprice_calls(
                ledger.db, (now_s - 7200) * US, (now_s + 60) * US, CallFilter(),
                _new_cost(ledger, meet), write=True,
                minute_cutoff_s=ledger.minute_floor_s() - 60))
        except BaseException as exc:  # noqa: BLE001 - shown by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert all(isinstance(r, RepriceCounts) for r in results), results
    _assert_every_tier_is(ledger, expected)
    # Between them every changed call was repriced once: the second saw the first's costs.
    assert sum(r.changed for r in results) == sum(
        1 for r in _records(now_s) if r.model != "unpriced" and r.input_tokens)


def test_concurrent_recomputes_through_the_ledger(db: Database) -> None:
    """The same through ``reprice`` itself, from two ledgers (two processes), repeatedly."""
    now_s = int(time.time()) // 60 * 60
    first, second = Ledger(db), Ledger(db)
    expected = _repriced_setup(first, now_s)
    for round_ in range(3):
        if round_:
            first.set_price(Price("chat", 0, Decimal(round_), Decimal(5)))
            expected = sum(first.cost_of(r.model, r.ts_us, r.input_tokens,
                                         r.cached_input_tokens, r.output_tokens,
                                         r.status_code, r.api_key_id)
                           if r.model != "unpriced" else 0 for r in _records(now_s))
        start = threading.Barrier(2)

        def run(ledger: Ledger, start: threading.Barrier = start) -> None:
            start.wait(timeout=10)
            reprice(ledger, (now_s - 7200) * US, (now_s + 60) * US)

        threads = [threading.Thread(target=run, args=(ledger,)) for ledger in (first, second)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        _assert_every_tier_is(first, expected)


def test_a_reprice_commits_in_bounded_consistent_batches(ledger: Ledger) -> None:
    """Each batch is a transaction of its own that moves raw and rollups together: a reprice
    interrupted half-way leaves every tier equal to its raw records, and a second run
    finishes it."""
    now_s = int(time.time()) // 60 * 60
    expected = _repriced_setup(ledger, now_s)
    before = _sum(ledger.db, calls)
    calls_made = [0]

    def fail_late() -> None:
        calls_made[0] += 1
        if calls_made[0] > 25:
            raise RuntimeError("interrupted")

    window = ((now_s - 7200) * US, (now_s + 60) * US)
    with pytest.raises(RuntimeError, match="interrupted"):
        reprice_calls(ledger.db, *window, CallFilter(), _new_cost(ledger, fail_late),
                      write=True, batch_size=7)
    part = _sum(ledger.db, calls)
    assert before != part != expected  # some batches committed, not all
    _assert_every_tier_is(ledger, part)
    counts = reprice_calls(ledger.db, *window, CallFilter(), _new_cost(ledger), write=True,
                           batch_size=7)
    assert counts.examined == len(_records(now_s)) and counts.transactions >= 2
    _assert_every_tier_is(ledger, expected)


def test_minute_rows_past_retention_are_not_walked(ledger: Ledger) -> None:
    """Repricing old calls updates no minute row below the cutoff (a year's reprice would
    otherwise spend millions of no-op UPDATEs under the write lock), and still moves every
    other tier."""
    now_s = int(time.time()) // 60 * 60
    old_s = now_s - 30 * 86400
    expected = _repriced_setup(ledger, old_s)
    assert _sum(ledger.db, rollup_1m) == 0  # the records are older than the minute window
    statements: list[tuple[str, int]] = []

    def watch(conn: Any, cursor: Any, statement: str, parameters: Any, context: Any,
              executemany: bool) -> None:
        if statement.lstrip().upper().startswith("UPDATE"):
            statements.append((statement.split()[1].strip('"'),
                               len(parameters) if executemany else 1))

    event.listen(ledger.db.engine, "before_cursor_execute", watch)
    try:
        report = reprice(ledger, (old_s - 7200) * US, (old_s + 60) * US)
    finally:
        event.remove(ledger.db.engine, "before_cursor_execute", watch)
    assert report.changed
    updated = {table for table, _ in statements}
    assert not {tier.name for tier in TIERS if tier.windowed} & updated, statements
    assert {tier.name for tier in TIERS if not tier.windowed} <= updated
    assert _sum(ledger.db, calls) == expected
    kept = [tier for tier in TIERS if not tier.windowed]
    assert [_sum(ledger.db, t.table) for t in kept] == [expected] * len(kept)
    assert check_rollups(ledger).ok


def test_recompute_prices_cache_writes_and_units(ledger: Ledger) -> None:
    """Repricing reads a call's cache writes and units: each at its own rate, exactly, and
    every tier (the upstream-model ones too) moves with the raw records."""
    now_s = int(time.time()) // 60 * 60
    ledger.store([
        CallRecord(id="write", ts_us=(now_s - 600) * US, model="claude", call_type="model",
                   input_tokens=1_000_000, cached_input_tokens=200_000,
                   cache_write_tokens=300_000, output_tokens=0, total_tokens=1_000_000,
                   upstream_model="claude-2026"),
        CallRecord(id="pages", ts_us=(now_s - 300) * US, model="ocr", call_type="service",
                   units=9, unit="page"),
    ])
    ledger.set_price(Price("claude", 0, Decimal("3"), Decimal(0),
                           cached_input_per_million=Decimal("0.3"),
                           cache_write_per_million=Decimal("3.75")))
    ledger.set_price(Price("ocr", 0, Decimal(0), Decimal(0), per_unit=Decimal("0.0015")))
    report = reprice(ledger, (now_s - 3600) * US, (now_s + 60) * US)
    # 0.5 × 3 + 0.2 × 0.3 + 0.3 × 3.75 = 1.5 + 0.06 + 1.125; 9 × 0.0015
    assert _sum(ledger.db, calls, id="write") == 2_685_000_000
    assert _sum(ledger.db, calls, id="pages") == 13_500_000
    assert report.after_nano == 2_698_500_000
    for tier in TIERS:
        assert _sum(ledger.db, tier.table) == 2_698_500_000, tier.name
    assert check_rollups(ledger).ok
