"""``pricing recompute``: a price correction reprices raw records and their rollups together."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from tallygate.ledger.maintenance import check_rollups
from tallygate.ledger.pricing import Discount, Price
from tallygate.ledger.records import CallRecord
from tallygate.ledger.reprice import reprice
from tallygate.ledger.service import Ledger
from tallygate.store import prices as price_store
from tallygate.store.database import Database
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
