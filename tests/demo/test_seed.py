from __future__ import annotations

import time
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from tallygate.demo.generate import DEMO_ROUTES, SPIKE_KEY, SPIKE_MODEL
from tallygate.demo.profiles import DEMO_KEY, DEMO_KEYS, INTERNAL_KEY
from tallygate.demo.seed import DemoSeedError, seed_demo
from tallygate.domain.records import now_us
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.store import prices as price_store
from tallygate.store.database import Database
from tallygate.store.schema import calls, rollup_15m


def _count_calls(db: Database) -> tuple[int, int]:
    """(raw records, calls in the 15-minute rollups)."""
    with db.read() as conn:
        raw = conn.execute(select(func.count()).select_from(calls)).scalar_one()
        rolled = conn.execute(select(func.sum(rollup_15m.c.calls))).scalar_one()
    return int(raw), int(rolled or 0)


def test_sixty_days_seed_in_reasonable_time(sqlite_db: Database) -> None:
    ledger, keys = Ledger(sqlite_db), KeyService(sqlite_db)
    now = now_us()
    reports: list[tuple[int, int]] = []
    started = time.perf_counter()
    seeded = seed_demo(ledger, keys, now_us=now, progress=lambda done, total:
                       reports.append((done, total)))
    elapsed = time.perf_counter() - started
    assert elapsed < 60  # about 5 s on a 2-core machine; only a gross slowdown fails

    assert 150_000 <= seeded.records <= 300_000
    assert _count_calls(sqlite_db) == (seeded.records, seeded.records)
    assert reports[-1] == (60, 60)
    assert [done for done, _ in reports] == sorted(done for done, _ in reports)
    assert seeded.end_us == now and seeded.end_us - seeded.start_us == 60 * 86_400_000_000
    assert seeded.spike is not None
    assert (seeded.spike.key_name, seeded.spike.model) == (SPIKE_KEY, SPIKE_MODEL)


def test_keys_with_limits_and_prices(sqlite_db: Database) -> None:
    ledger, keys = Ledger(sqlite_db), KeyService(sqlite_db)
    now = now_us()
    seeded = seed_demo(ledger, keys, now_us=now, days=2)
    stored = {key.name: key for key in keys.list()}
    assert set(stored) == {key.name for key in DEMO_KEYS} == set(seeded.key_ids)
    assert [name for name, key in stored.items() if key.internal] == [INTERNAL_KEY]
    assert {name: key.id for name, key in stored.items()} == dict(seeded.key_ids)

    demo = keys.authenticate(seeded.demo_key)
    assert demo is not None and demo.name == DEMO_KEY == seeded.demo_key_name
    assert not demo.internal and demo.allowed_models is None and demo.expires_at is None
    for name, secret in seeded.secrets.items():
        found = keys.authenticate(secret)
        assert found is not None and found.name == name

    assert any(key.rpm_limit for key in stored.values())
    assert any(key.quota_tokens and key.quota_period == "monthly" for key in stored.values())
    assert any(key.budget for key in stored.values())
    expiring = [key for key in stored.values() if key.expires_at is not None]
    assert expiring and all(
        key.expires_at is not None
        and key.expires_at - key.created_at < timedelta(days=14) for key in expiring)

    assert seeded.spike is None  # two days do not reach back to it
    prices = {price.model: price for price in price_store.list_prices(sqlite_db)}
    assert prices == {route.model: route.price() for route in DEMO_ROUTES}


def test_only_an_empty_database_is_seeded(sqlite_db: Database) -> None:
    ledger, keys = Ledger(sqlite_db), KeyService(sqlite_db)
    seed_demo(ledger, keys, now_us=now_us(), days=1)
    before = _count_calls(sqlite_db)
    with pytest.raises(DemoSeedError, match="already has API keys"):
        seed_demo(ledger, keys, now_us=now_us(), days=1)
    assert _count_calls(sqlite_db) == before
    assert len(keys.list()) == len(DEMO_KEYS)


def test_a_database_with_any_key_is_refused(sqlite_db: Database) -> None:
    keys = KeyService(sqlite_db)
    keys.create(KeyCreate(name="someone-real"), "admin")
    with pytest.raises(DemoSeedError, match="someone-real"):
        seed_demo(Ledger(sqlite_db), keys, now_us=now_us(), days=1)


def test_seeding_works_on_every_database(ledger: Ledger) -> None:
    seeded = seed_demo(ledger, KeyService(ledger.db), now_us=now_us(), days=1)
    assert seeded.records > 1000
    assert _count_calls(ledger.db) == (seeded.records, seeded.records)


def test_every_key_was_created_before_its_first_call(sqlite_db: Database) -> None:
    ledger, keys = Ledger(sqlite_db), KeyService(sqlite_db)
    seeded = seed_demo(ledger, keys, now_us=now_us(), days=3)
    with sqlite_db.read() as conn:
        first_calls = dict(conn.execute(select(calls.c.api_key_id, func.min(calls.c.ts))
                                        .group_by(calls.c.api_key_id)).all())
    stored = {key.id: key for key in keys.list()}
    assert set(first_calls) <= set(stored)
    for key_id, first_us in first_calls.items():
        created_us = round(stored[key_id].created_at.timestamp() * 1_000_000)
        assert created_us < first_us, stored[key_id].name
        assert created_us >= seeded.start_us - 86_400_000_000
    from tallygate.store.meta import list_audit
    created = {entry["target"]: entry["ts"] for entry in list_audit(sqlite_db)
               if entry["action"] == "key.create"}
    assert created == {key_id: round(key.created_at.timestamp() * 1_000_000)
                       for key_id, key in stored.items()}
