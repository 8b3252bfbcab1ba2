"""A flood of made-up secrets (§15): the keys that exist keep their pace, memory stays
bounded, and a repeated or rate-limited junk secret costs no database read."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tallygate.app import create_app
from tallygate.config import load_settings
from tallygate.gateway import keycache
from tallygate.gateway.keycache import AddressBudget, KeyCache, LookupRefused
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.secrets import hash_secret
from tallygate.keys.service import KeyService
from tallygate.store.database import Database
from tests.security.support import ADMIN

REAL = "sk-the-real-one"


class SlowStore:
    """Every read takes ``delay_s`` of a thread, as a database under load; only REAL exists."""

    def __init__(self, delay_s: float = 0.002) -> None:
        self.delay_s = delay_s
        self.reads: list[str] = []
        self.lock = threading.Lock()

    def find_by_hash(self, db: object, digest: str) -> Any:
        with self.lock:
            self.reads.append(digest)
        time.sleep(self.delay_s)
        return "the-key" if digest == hash_secret(REAL) else None


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> SlowStore:
    fake = SlowStore()
    monkeypatch.setattr(keycache.key_store, "find_by_hash", fake.find_by_hash)
    return fake


def test_a_known_key_does_not_wait_behind_a_flood(store: SlowStore) -> None:
    async def scenario() -> float:
        cache = KeyCache(db=None, ttl_s=0.2, unknown_per_s=0)  # type: ignore[arg-type]
        assert await cache.lookup(REAL) == "the-key"
        await asyncio.sleep(0.25)  # its entry lapsed: the next call must read it again
        flood = [asyncio.ensure_future(cache.lookup(f"sk-junk-{n}", f"10.0.{n // 250}.{n % 250}"))
                 for n in range(2_000)]
        await asyncio.sleep(0)
        began = time.perf_counter()
        assert await cache.lookup(REAL, "192.0.2.1") == "the-key"
        waited = time.perf_counter() - began
        answers = await asyncio.gather(*flood, return_exceptions=True)
        refused = [a for a in answers if isinstance(a, LookupRefused)]
        assert refused and all(a.status == 503 for a in refused)  # the reads in all: bounded
        assert all(a is None for a in answers if not isinstance(a, LookupRefused))
        await cache.close()
        return waited

    # Before: the known key's read queued behind 2 000 junk reads of 2 ms on two threads
    # (about 2 s); now it has its own thread.
    assert asyncio.run(scenario()) < 0.2
    assert len(store.reads) <= keycache.MAX_PENDING + 2


def test_a_repeated_junk_secret_costs_one_read(store: SlowStore) -> None:
    async def scenario() -> None:
        cache = KeyCache(db=None, ttl_s=5.0)  # type: ignore[arg-type]
        for _ in range(200):
            assert await cache.lookup("sk-junk", "198.51.100.1") is None
        await cache.close()

    asyncio.run(scenario())
    assert len(store.reads) == 1


def test_one_address_gets_a_bounded_number_of_reads(store: SlowStore) -> None:
    async def scenario() -> list[Any]:
        cache = KeyCache(db=None, ttl_s=5.0, unknown_per_s=10)  # type: ignore[arg-type]
        answers: list[Any] = []
        for n in range(500):
            try:
                answers.append(await cache.lookup(f"sk-junk-{n}", "198.51.100.1"))
            except LookupRefused as exc:
                answers.append(exc.status)
        # another address, and the real key from the flooding address, still get through
        assert await cache.lookup("sk-other-junk", "198.51.100.2") is None
        assert await cache.lookup(REAL, "198.51.100.2") == "the-key"
        await cache.close()
        return answers

    answers = asyncio.run(scenario())
    assert 20 <= answers.count(None) <= 40  # a burst of 20, and what refills while it runs
    assert answers.count(429) == 500 - answers.count(None)
    assert len(store.reads) == answers.count(None) + 2


def test_junk_never_pushes_the_real_keys_out(store: SlowStore) -> None:
    async def scenario() -> KeyCache:
        cache = KeyCache(db=None, ttl_s=60.0, unknown_per_s=0,  # type: ignore[arg-type]
                         max_entries=1_000)
        assert await cache.lookup(REAL) == "the-key"
        for n in range(5_000):
            await cache.lookup(f"sk-junk-{n}", "203.0.113.5")
        reads = len(store.reads)
        assert await cache.lookup(REAL) == "the-key"
        assert len(store.reads) == reads  # still cached: the old cache was wiped at its bound
        await cache.close()
        return cache

    cache = asyncio.run(scenario())
    assert len(cache) <= 1_001


def test_the_address_budget_is_bounded() -> None:
    budget = AddressBudget(per_s=1, max_addresses=100)
    for n in range(10_000):
        budget.take(f"addr-{n}", 0.0)
    assert len(budget) == 100


def test_the_gateway_answers_a_flooding_address_with_429(db: Database) -> None:
    secret = KeyService(db).create(KeyCreate(name="real"), "test").key
    app = create_app(load_settings(database_url=db.url, admin_token=ADMIN,
                                   unknown_key_lookups_per_second=1))
    with TestClient(app, client=("198.51.100.9", 4000)) as client:
        statuses = [client.get("/v1/models", headers={"Authorization": f"Bearer sk-made-up-{n}"})
                    for n in range(5)]
        assert [s.status_code for s in statuses[:2]] == [401, 401]
        flooded = statuses[-1]
        assert flooded.status_code == 429 and flooded.headers["retry-after"] == "1"
        assert flooded.json()["error"]["code"] == "too_many_unknown_keys"
        real = client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
        assert real.status_code == 429  # never seen from here either: it waits its turn
        time.sleep(1.1)  # the address's budget refills at one a second
        real = client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
        assert real.status_code == 200
        for _ in range(20):  # and, known now, it no longer counts against the budget
            assert client.get("/v1/models", headers={
                "Authorization": f"Bearer {secret}"}).status_code == 200
