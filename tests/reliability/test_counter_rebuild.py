"""A Redis hiccup in one process (§15): the counters the other processes keep are not reset,
what this process could not count meanwhile is added once Redis answers, and a counter
started from the ledger includes what is still on its way there (the recorder's unwritten
batch and the spool)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tallygate.domain.records import CallRecord, now_us
from tallygate.gateway.counters import MemoryCounters, RedisCounters
from tallygate.gateway.limits import Limits
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.ledger.recorder import Recorder
from tallygate.ledger.service import Ledger
from tallygate.ledger.spool import Spool, SpoolingStore
from tallygate.store.database import Database
from tallygate.store.keys import StoredKey, get_key
from tests.reliability.test_redis_outage import TcpProxy, redis_proxy

__all__ = ["redis_proxy"]  # the fixture, shared with the outage tests


def _quota_key(db: Database, quota: int = 10_000) -> StoredKey:
    created = KeyService(db).create(KeyCreate(name="quota", quota_tokens=quota), "test")
    key = get_key(db, created.id)
    assert key is not None
    return key


def _record(key: StoredKey, n: int, tokens: int) -> CallRecord:
    return CallRecord(id=f"in-flight-{n}", ts_us=now_us(), model="m", call_type="model",
                      api_key_id=key.id, total_tokens=tokens, input_tokens=tokens,
                      cost_nano=tokens * 1000)


# A database of its own (test_redis_outage.py empties database 14 while it runs).
COUNTER_DB = 11


@pytest.fixture
def shared_redis(redis_proxy: TcpProxy) -> Iterator[str]:
    """The Redis behind the proxy, reached directly, in a database emptied around the test."""
    import redis

    host, port = redis_proxy.target
    client = redis.Redis(host=host, port=port, db=COUNTER_DB)
    client.flushdb()
    yield f"redis://{host}:{port}/{COUNTER_DB}"
    client.flushdb()
    client.close()


def test_one_process_losing_redis_resets_no_other_process_counter(
        sqlite_db: Database, shared_redis: str, redis_proxy: TcpProxy) -> None:
    key = _quota_key(sqlite_db)
    period = "total"

    async def scenario() -> tuple[int, int]:
        steady = Limits(RedisCounters(shared_redis), Ledger(sqlite_db))
        hiccup = Limits(RedisCounters(f"redis://127.0.0.1:{redis_proxy.port}/{COUNTER_DB}"),
                        Ledger(sqlite_db))
        assert await hiccup.check(key, "m", None, time.time()) is None  # counter started: 0
        await steady.count(key, 300, 300_000, time.time())  # another process's calls
        redis_proxy.cut()
        assert await hiccup.check(key, "m", None, time.time()) is None  # open: unchecked
        await hiccup.count(key, 100, 100_000, time.time())  # not counted: Redis is away
        redis_proxy.restore()
        await asyncio.sleep(1.1)  # the counters are tried again after a second
        assert await hiccup.check(key, "m", None, time.time()) is None
        used = await steady.counters.period_used(key.id, period, 60, _never_loaded)
        await steady.counters.close()
        await hiccup.counters.close()
        return used

    # Before: the hiccup deleted every quota counter (0 from the empty ledger, 300 lost).
    assert asyncio.run(scenario()) == (400, 400_000)


async def _never_loaded() -> tuple[int, int]:
    raise AssertionError("the counter was dropped and had to be read from the ledger")


def test_a_counter_started_from_the_ledger_includes_the_unwritten_batch(
        sqlite_db: Database) -> None:
    key = _quota_key(sqlite_db, quota=1_000)
    ledger = Ledger(sqlite_db)

    async def scenario() -> None:
        recorder = Recorder(ledger)  # not started: what it is given stays in memory
        ledger.store([_record(key, 0, 400)])  # already in the database
        recorder.record(_record(key, 1, 700))  # recorded, not yet written
        limits = Limits(MemoryCounters(), ledger, in_flight=recorder)
        refusal = await limits.check(key, "m", None, time.time())
        # Before: the counter started at 400 (the database alone) and let this call through.
        assert refusal is not None and refusal.code == "insufficient_quota"
        used = await limits.counters.period_used(key.id, "total", 60, _never_loaded)
        assert used == (1_100, 1_100_000)
        await recorder.flush()  # written now: a counter started again counts it once
        fresh = Limits(MemoryCounters(), ledger, in_flight=recorder)
        await fresh.check(key, "m", None, time.time())
        assert await fresh.counters.period_used(key.id, "total", 60, _never_loaded) == \
            (1_100, 1_100_000)

    asyncio.run(scenario())


def test_spooled_usage_counts_until_it_is_replayed(sqlite_db: Database,
                                                   tmp_path: Path) -> None:
    key = _quota_key(sqlite_db)
    ledger = Ledger(sqlite_db)
    down = True

    def store(records: list[CallRecord]) -> object:
        if down:
            raise OSError("database away")
        return ledger.store(records)

    spooling = SpoolingStore(store, Spool(tmp_path / "spool"))  # type: ignore[arg-type]
    spooling.store([_record(key, n, 50) for n in range(4)])
    assert spooling.spooling
    assert spooling.spooled_usage(key.id, 0) == (200, 200_000)
    assert spooling.spooled_usage("another-key", 0) == (0, 0)
    assert spooling.spooled_usage(key.id, now_us() + 86_400_000_000) == (0, 0)  # from tomorrow
    down = False
    assert spooling.replay() == 4
    assert spooling.spooled_usage(key.id, 0) == (0, 0)  # in the database now, counted there
