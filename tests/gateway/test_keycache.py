"""The key cache: one database read however many calls arrive together, keys in use read
again ahead of time, and nothing read before a change kept after it."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

from tallygate.gateway import keycache
from tallygate.gateway.keycache import KeyCache
from tallygate.keys.secrets import hash_secret


class FakeStore:
    """``find_by_hash`` with a count of reads, a value to return and a gate to hold reads."""

    def __init__(self) -> None:
        self.reads = 0
        self.value: Any = "key-v1"
        self.fail = False
        self.gate = threading.Event()
        self.gate.set()

    def find_by_hash(self, db: object, digest: str) -> Any:
        self.reads += 1
        assert digest == hash_secret("sk-secret")
        value, fail = self.value, self.fail  # what the database holds when the read begins
        self.gate.wait(5)
        if fail:
            raise OSError("database unreachable")
        return value


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def store(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore()
    monkeypatch.setattr(keycache.key_store, "find_by_hash", fake.find_by_hash)
    return fake


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(keycache, "monotonic", fake.monotonic)
    return fake


def test_calls_that_arrive_together_share_one_read(store: FakeStore, clock: Clock) -> None:
    async def scenario() -> list[Any]:
        cache = KeyCache(db=None, ttl_s=2.0)  # type: ignore[arg-type]
        store.gate.clear()
        lookups = [asyncio.ensure_future(cache.lookup("sk-secret")) for _ in range(25)]
        await asyncio.sleep(0.05)
        store.gate.set()
        return await asyncio.gather(*lookups)

    assert asyncio.run(scenario()) == ["key-v1"] * 25
    assert store.reads == 1


def test_a_key_in_use_is_read_again_before_it_expires(store: FakeStore, clock: Clock) -> None:
    async def scenario() -> None:
        cache = KeyCache(db=None, ttl_s=2.0)  # type: ignore[arg-type]
        assert await cache.lookup("sk-secret") == "key-v1"
        clock.now += 0.5  # three quarters of its time left: no read
        assert await cache.lookup("sk-secret") == "key-v1"
        assert store.reads == 1
        store.value = "key-v2"  # changed by another process
        clock.now += 1.0  # half a second left: answered at once, read again behind it
        assert await cache.lookup("sk-secret") == "key-v1"
        await asyncio.sleep(0.05)
        assert store.reads == 2
        clock.now += 1.0  # past the first read's expiry, within the second's
        assert await cache.lookup("sk-secret") == "key-v2"
        assert store.reads == 2

    asyncio.run(scenario())


def test_a_read_started_before_a_change_is_not_kept(store: FakeStore, clock: Clock) -> None:
    async def scenario() -> None:
        cache = KeyCache(db=None, ttl_s=2.0)  # type: ignore[arg-type]
        store.gate.clear()
        before = asyncio.ensure_future(cache.lookup("sk-secret"))
        await asyncio.sleep(0.05)
        cache.clear()  # the key was disabled through this process, after that read began
        store.value = "key-disabled"
        store.gate.set()
        assert await before == "key-v1"  # it asked before the change
        assert await cache.lookup("sk-secret") == "key-disabled"
        assert store.reads == 2

    asyncio.run(scenario())


def test_a_known_key_outlives_an_outage_and_an_unknown_one_fails(store: FakeStore,
                                                                  clock: Clock) -> None:
    async def scenario() -> None:
        cache = KeyCache(db=None, ttl_s=2.0)  # type: ignore[arg-type]
        assert await cache.lookup("sk-secret") == "key-v1"
        store.fail = True
        clock.now += 1.5  # a refresh in the background fails: the key is still served
        assert await cache.lookup("sk-secret") == "key-v1"
        await asyncio.sleep(0.05)
        clock.now += 10  # expired, and the read fails: the key as last read
        assert await cache.lookup("sk-secret") == "key-v1"
        cache.clear()
        with pytest.raises(OSError):
            await cache.lookup("sk-secret")

    asyncio.run(scenario())


def test_without_a_cache_every_call_reads(store: FakeStore, clock: Clock) -> None:
    async def scenario() -> None:
        cache = KeyCache(db=None, ttl_s=0)  # type: ignore[arg-type]
        for _ in range(3):
            assert await cache.lookup("sk-secret") == "key-v1"

    asyncio.run(scenario())
    assert store.reads == 3


def test_closing_waits_for_reads_under_way(store: FakeStore, clock: Clock) -> None:
    async def scenario() -> None:
        cache = KeyCache(db=None, ttl_s=2.0)  # type: ignore[arg-type]
        store.gate.clear()
        lookup = asyncio.ensure_future(cache.lookup("sk-secret"))
        await asyncio.sleep(0.05)
        cache.clear()  # no longer shared, still holding a connection
        asyncio.get_running_loop().call_later(0.1, store.gate.set)
        await cache.close()
        assert store.gate.is_set() and not cache._under_way  # it waited for the read
        assert await lookup == "key-v1"

    asyncio.run(scenario())


def test_a_key_is_trusted_from_when_its_read_began(store: FakeStore, clock: Clock) -> None:
    # A slow read must not stretch how long another process's change goes unseen.
    async def scenario() -> None:
        cache = KeyCache(db=None, ttl_s=2.0)  # type: ignore[arg-type]
        store.gate.clear()
        lookup = asyncio.ensure_future(cache.lookup("sk-secret"))
        await asyncio.sleep(0.05)
        clock.now += 1.5  # the database took 1.5 s to answer
        store.gate.set()
        assert await lookup == "key-v1"
        clock.now += 0.6  # 2.1 s after the read began: expired, read again
        store.value = "key-v2"
        assert await cache.lookup("sk-secret") == "key-v2"

    asyncio.run(scenario())


def test_clearing_from_another_thread_while_reads_finish(store: FakeStore,
                                                         clock: Clock) -> None:
    # The key API's routes run in a thread pool: they change the key, then clear the cache
    # from there, while reads that began before the change finish on the event loop.
    async def scenario() -> None:
        cache = KeyCache(db=None, ttl_s=60.0, unknown_per_s=0)  # type: ignore[arg-type]
        for round_ in range(100):
            store.value = f"key-v{round_}"
            store.gate.clear()
            lookups = asyncio.gather(*(cache.lookup("sk-secret") for _ in range(5)))
            await asyncio.sleep(0)  # the read begins, holding the old key

            def change(round_: int = round_) -> None:
                store.value = f"key-after-{round_}"
                store.gate.set()  # the old read finishes while the cache is cleared
                cache.clear()

            await asyncio.to_thread(change)
            await lookups
            assert await cache.lookup("sk-secret") == f"key-after-{round_}"
            cache.clear()

    asyncio.run(scenario())
