"""Storing call records: raw rows and every rollup tier in one transaction, each id once.

After every write the rollup tables must equal a rebuild from the raw rows (``tests/brute.py``),
on SQLite and on PostgreSQL, for retried, overlapping and concurrent batches alike.
"""

from __future__ import annotations

import json
import random
import sqlite3
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, select
from sqlalchemy.exc import DBAPIError

from tallygate.domain.records import CallRecord
from tallygate.store import calls as calls_store
from tallygate.store.calls import InsertResult, insert_calls
from tallygate.store.database import Database
from tallygate.store.schema import ROLLUP_MEASURES, TIERS, calls, rollup_1m
from tests import brute

US = 1_000_000
T0 = 1_793_499_300 * US  # 2026-11-01T02:15Z, on a quarter-hour, the New York fall-back day
STATUSES = (200, 204, 400, 429, 500, 503)


@pytest.fixture(autouse=True, params=["direct", "scratch"])
def rollup_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Every test here runs both ways of summing a batch into the tiers: straight from the
    new raw rows (small batches) and through the chain of scratch tables (large ones)."""
    if request.param == "scratch":
        monkeypatch.setattr(calls_store, "DIRECT_ROLLUP_MAX", 0)
    return str(request.param)


def make_record(n: int, **changes: Any) -> CallRecord:
    """Record ``n`` of a deterministic pool: times spread over ~2 days, every dimension
    varying, some on exact minute and quarter-hour boundaries."""
    rng = random.Random(n)
    input_tokens, output_tokens = rng.randrange(0, 5000), rng.randrange(0, 5000)
    values: dict[str, Any] = dict(
        id=f"call-{n:05d}",
        ts_us=T0 + rng.choice((rng.randrange(0, 2 * 86400 * US),
                               rng.randrange(0, 200) * 900 * US,
                               rng.randrange(0, 3000) * 60 * US - 1)),
        api_key_id=rng.choice(("key-a", "key-b", None)),
        model=rng.choice(("cltech/deepseek-r1-32b", "bge-m3")),
        model_category=rng.choice(("chat", "embedding")),
        call_type=rng.choice(("model", "service", "internal")),
        endpoint="/v1/chat/completions",
        status_code=rng.choice(STATUSES),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=rng.randrange(0, input_tokens + 1),
        reasoning_tokens=rng.randrange(0, output_tokens + 1),
        total_tokens=input_tokens + output_tokens,
        cost_nano=rng.randrange(0, 10**12),
        latency_ms=rng.choice((None, rng.randrange(0, 60_000))),
        ttft_ms=rng.choice((None, rng.randrange(0, 5_000))),
        estimated=rng.random() < 0.2,
        metadata=rng.choice((None, {"team": "search", "n": n})),
    )
    # Drawn after the fields above, so those stay what they were before these existed.
    values["cache_write_tokens"] = rng.randrange(0, input_tokens - values["cached_input_tokens"]
                                                 + 1)
    values["unit"] = rng.choice((None, "image", "second", "character", "search_unit", "page",
                                 "request"))
    values["units"] = 0 if values["unit"] is None else rng.randrange(1, 10_000)
    values["upstream_model"] = rng.choice((None, "deepseek-r1-32b-0528", "bge-m3-v2"))
    values.update(changes)
    return CallRecord(**values)


def stored_records(db: Database) -> list[CallRecord]:
    with db.read() as conn:
        rows = conn.execute(select(calls).order_by(calls.c.id)).all()
    return [CallRecord(
        id=row.id, ts_us=row.ts, api_key_id=row.api_key_id, model=row.model,
        model_category=row.model_category, call_type=row.call_type, endpoint=row.endpoint,
        status_code=row.status_code, input_tokens=row.input_tokens,
        output_tokens=row.output_tokens, cached_input_tokens=row.cached_input_tokens,
        reasoning_tokens=row.reasoning_tokens, total_tokens=row.total_tokens,
        cost_nano=row.cost_nano, latency_ms=row.latency_ms, ttft_ms=row.ttft_ms,
        estimated=bool(row.estimated),
        metadata=None if row.metadata is None else json.loads(row.metadata),
        cache_write_tokens=row.cache_write_tokens, units=row.units, unit=row.unit,
        upstream_model=row.upstream_model,
    ) for row in rows]


def stored_rollups(db: Database) -> dict[str, dict[tuple[Any, ...], tuple[int, ...]]]:
    tables = {}
    with db.read() as conn:
        for tier in TIERS:
            width = 1 + len(tier.dimensions)
            tables[tier.name] = {tuple(row[:width]): tuple(int(v) for v in row[width:])
                                 for row in conn.execute(select(
                                     tier.table.c.bucket,
                                     *(tier.table.c[d] for d in tier.dimensions),
                                     *(tier.table.c[m] for m in ROLLUP_MEASURES)))}
    return tables


def snapshot(db: Database) -> tuple[Any, ...]:
    return ([(r, r.metadata) for r in stored_records(db)], stored_rollups(db))


def assert_ledger_holds(db: Database, expected: Sequence[CallRecord], *,
                        minute_cutoff_s: int | None = None) -> None:
    """Each expected record stored once, as offered, and rollups equal to a rebuild."""
    raw = stored_records(db)
    assert [r.id for r in raw] == sorted(r.id for r in expected)
    by_id = {r.id: r for r in expected}
    assert all(r == by_id[r.id] and r.metadata == by_id[r.id].metadata for r in raw)
    assert stored_rollups(db) == {
        tier.name: brute.rollups(raw, tier.grain_s, minute_cutoff_s if tier.windowed else None,
                                 tier.dimensions)
        for tier in TIERS
    }


def test_a_batch_is_stored_with_both_rollups(db: Database) -> None:
    batch = [make_record(n) for n in range(300)]
    assert insert_calls(db, batch) == InsertResult(300, 0, None)
    assert_ledger_holds(db, batch)


def test_an_empty_batch_changes_nothing(db: Database) -> None:
    assert insert_calls(db, []) == InsertResult(0, 0, None)
    assert stored_records(db) == []


def test_a_retried_batch_counts_once(db: Database) -> None:
    batch = [make_record(n) for n in range(50)]
    insert_calls(db, batch)
    before = snapshot(db)
    retried = insert_calls(db, batch)
    assert (retried.accepted, retried.duplicates, retried.accepted_ids) == (0, 50, frozenset())
    assert snapshot(db) == before
    # The same ids with different content are still duplicates: the first write stands.
    changed = [make_record(n, input_tokens=1, total_tokens=1, cost_nano=7) for n in range(50)]
    assert insert_calls(db, changed).duplicates == 50
    assert snapshot(db) == before
    assert_ledger_holds(db, batch)


def test_duplicate_ids_within_a_batch_count_once_and_the_first_wins(db: Database) -> None:
    first = make_record(1)
    batch = [first, make_record(2), make_record(1, cost_nano=999), make_record(2), first]
    result = insert_calls(db, batch)
    assert (result.accepted, result.duplicates) == (2, 3)
    assert result.accepted_ids == frozenset({"call-00001", "call-00002"})
    assert_ledger_holds(db, [first, make_record(2)])


def test_a_batch_partly_overlapping_stored_ids_adds_only_the_new_ones(db: Database) -> None:
    insert_calls(db, [make_record(n) for n in range(0, 40, 2)])  # the even ones
    result = insert_calls(db, [make_record(n) for n in range(30, 50)])
    assert (result.accepted, result.duplicates) == (15, 5)
    assert result.accepted_ids == frozenset(
        make_record(n).id for n in range(30, 50) if n % 2 or n >= 40)
    assert_ledger_holds(db, [make_record(n) for n in range(50)
                             if n % 2 == 0 or n >= 30])


@pytest.mark.parametrize("shift_s", [0, 1, 59])
def test_minute_rollups_are_not_written_before_the_cutoff(db: Database, shift_s: int) -> None:
    cutoff = (T0 + 86400 * US) // US + shift_s  # on a minute, or just past one
    first_minute = -(-cutoff // 60) * 60 * US
    edge = [make_record(n, ts_us=ts) for n, ts in enumerate(
        (first_minute - 1, first_minute, first_minute + 59_999_999, first_minute - 60 * US),
        start=1000)]
    batch = [*edge, *(make_record(n) for n in range(200))]
    insert_calls(db, batch, minute_cutoff_s=cutoff)
    assert_ledger_holds(db, batch, minute_cutoff_s=cutoff)
    with db.read() as conn:
        minutes = set(conn.execute(select(rollup_1m.c.bucket)).scalars())
    assert first_minute // US in minutes and first_minute // US - 60 not in minutes


def test_a_batch_whose_rollup_cannot_be_written_leaves_no_raw_row(db: Database) -> None:
    """Raw rows and rollups commit together: two calls of one rollup row whose costs sum past
    a 64-bit integer fit the raw table but not the rollup, so the whole batch is refused."""
    insert_calls(db, [make_record(n) for n in range(10)])
    before = snapshot(db)
    huge = [make_record(n, ts_us=T0, api_key_id="key-a", model="m", model_category="chat",
                        call_type="model", cost_nano=2**62) for n in (100, 101)]
    with pytest.raises((sqlite3.Error, psycopg.Error, DBAPIError)):
        insert_calls(db, [*huge, *(make_record(n) for n in range(5, 30))])
    assert snapshot(db) == before
    # The database is still usable, and the good records go in on their own.
    insert_calls(db, [make_record(n) for n in range(5, 30)])
    assert_ledger_holds(db, [make_record(n) for n in range(30)])


def test_concurrent_overlapping_batches_store_each_id_once(db: Database) -> None:
    """Writers with their own connections pools (as separate processes would have) race on
    overlapping ids; every id ends up stored once and counted as accepted exactly once."""
    pool = [make_record(n) for n in range(1200)]
    writers = 6
    rng = random.Random(2026)
    plans = [[rng.sample(pool, 150) + rng.sample(pool[:50], 10) for _ in range(8)]
             for _ in range(writers)]
    results: list[list[InsertResult]] = [[] for _ in range(writers)]
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def write(index: int) -> None:
        own = Database(db.url)
        try:
            start.wait()
            for batch in plans[index]:
                results[index].append(insert_calls(own, batch))
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=write, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not errors, errors
    assert not any(thread.is_alive() for thread in threads)

    offered = [r for plan in plans for batch in plan for r in batch]
    distinct = {r.id for r in offered}
    everything = [result for per_writer in results for result in per_writer]
    assert sum(r.accepted for r in everything) == len(distinct)
    assert sum(r.duplicates for r in everything) == len(offered) - len(distinct)
    accepted_ids: Counter[str] = Counter()
    for per_writer, plan in zip(results, plans, strict=True):
        for result, batch in zip(per_writer, plan, strict=True):
            ids = {r.id for r in batch} if result.accepted_ids is None else result.accepted_ids
            accepted_ids.update(ids)
    assert set(accepted_ids) == distinct and set(accepted_ids.values()) == {1}
    assert_ledger_holds(db, [r for r in pool if r.id in distinct])


# Property: any sequence of batches --------------------------------------------------------


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(batches=st.lists(st.lists(st.integers(0, 40), max_size=25), max_size=5),
       cutoff=st.none() | st.integers(0, 200).map(lambda n: T0 // US + n * 900)
       | st.integers(T0 // US, T0 // US + 2 * 86400))
def test_any_sequence_of_batches_stores_each_id_once(
        db: Database, batches: list[list[int]], cutoff: int | None) -> None:
    with db.write() as conn:  # the db fixture lives across examples: start each one empty
        for table in (calls, *(tier.table for tier in TIERS)):
            conn.execute(delete(table))
    seen: set[int] = set()
    for numbers in batches:
        result = insert_calls(db, [make_record(n) for n in numbers], minute_cutoff_s=cutoff)
        new = {make_record(n).id for n in numbers if n not in seen}
        assert (result.accepted, result.duplicates) == (len(new), len(numbers) - len(new))
        assert result.accepted_ids == (None if len(new) == len(numbers) else frozenset(new))
        seen.update(numbers)
    assert_ledger_holds(db, [make_record(n) for n in seen], minute_cutoff_s=cutoff)
