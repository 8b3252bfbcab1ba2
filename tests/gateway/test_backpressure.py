"""Backpressure: a key's calls in flight (``max_concurrency``), in one process and across
gateways sharing Redis, and a bounded wait for a pooled upstream connection.

The upstream is the late-usage fake of test_stream_settling, which can hold its answer back
(``headers_delay_s``) so that calls overlap for as long as a test needs.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from tallygate.app import create_app
from tallygate.config import Route, load_settings
from tallygate.gateway.counters import RedisCounters
from tallygate.gateway.limits import Limits
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tallygate.store.keys import get_key
from tests.conftest import emptied_redis
from tests.gateway.test_stream_settling import (
    CHAT,
    LateUsageUpstream,
    Served,
    leave_after,
    serve_gateway,
    stream_body,
    upstream,
)
from tests.reliability.support import ADMIN, new_key, wait_until
from tests.servers import free_port, serve_app

# A database of its own: the cleanup below empties it, and test_processes.py runs at the
# same time on another worker against database 15.
REDIS_URL = os.environ.get("TALLYGATE_TEST_BACKPRESSURE_REDIS_URL", "redis://127.0.0.1:6379/12")
CLAUDE = "claude-busy"


@pytest.fixture
def redis_url() -> Iterator[str]:
    yield from emptied_redis(REDIS_URL)


__all__ = ["upstream"]  # the late-usage upstream fixture, shared


def _chat(url: str, key: str, body: dict[str, Any]) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})


def _exactly(records: list[dict[str, Any]], count: int) -> list[dict[str, Any]] | None:
    return records if len(records) == count else None


def _at_once(calls: list[tuple[str, dict[str, Any]]], key: str) -> list[httpx.Response]:
    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(lambda call: _chat(call[0], key, call[1]), calls))


@pytest.mark.parametrize("counters", ["memory", "redis"])
def test_a_keys_calls_in_flight_are_bounded_and_their_slots_come_back(
        db: Database, upstream: tuple[str, LateUsageUpstream], counters: str,
        request: pytest.FixtureRequest) -> None:
    settings: dict[str, Any] = {}
    if counters == "redis":
        settings["redis_url"] = request.getfixturevalue("redis_url")
    with ExitStack() as stack:
        # With Redis, two gateways (each with its own counters) share the limit.
        gateways = [stack.enter_context(serve_gateway(db, upstream[0], **settings))
                    for _ in range(2 if counters == "redis" else 1)]
        key_id, key = new_key(db.url, max_concurrency=2)
        slow = stream_body(False, headers_delay_s=1.0)
        answers = _at_once([(gateways[i % len(gateways)].url, slow) for i in range(4)], key)
        assert sorted(a.status_code for a in answers) == [200, 200, 429, 429]
        for refused in (a for a in answers if a.status_code == 429):
            assert refused.json()["error"]["code"] == "concurrency_limit_exceeded"
            assert refused.headers["retry-after"] == "1"
        records = wait_until(lambda: _exactly(gateways[0].records(key_id), 4), timeout=10)
        assert sorted(r["status_code"] for r in records) == [200, 200, 429, 429]

        # Every slot came back: two calls at once go through again, on any gateway.
        again = _at_once([(g.url, stream_body(False)) for g in gateways] * (
            2 // len(gateways)), key)
        assert [a.status_code for a in again] == [200, 200]

        # A client that leaves mid-stream gives its slot back once the call is settled.
        one_id, one = new_key(db.url, max_concurrency=1)
        leave_after(gateways[-1].url, one, stream_body(False), b'"two "')
        wait_until(lambda: gateways[0].records(one_id), timeout=10)
        assert _chat(gateways[0].url, one, stream_body(False)).status_code == 200


def test_a_slot_a_crashed_process_held_frees_when_its_lease_ends(redis_url: str) -> None:
    async def scenario() -> list[bool]:
        crashed, other = RedisCounters(redis_url), RedisCounters(redis_url)
        try:
            now = time.time()
            taken = [await crashed.acquire_slot("k", 1, "call-1", 0.5, now),
                     await other.acquire_slot("k", 1, "call-2", 0.5, now)]
            # call-1's process died: no release ever comes; its lease ends.
            taken.append(await other.acquire_slot("k", 1, "call-3", 0.5, now + 0.6))
            await other.release_slot("k", "call-3")
            taken.append(await other.acquire_slot("k", 1, "call-4", 0.5, now + 0.6))
            return taken
        finally:
            await crashed.close()
            await other.close()

    assert asyncio.run(scenario()) == [True, False, True, True]


@pytest.mark.parametrize("redis_failure", ["open", "closed"])
def test_a_concurrency_limit_with_redis_down_follows_redis_failure(
        sqlite_db: Database, redis_failure: str) -> None:
    created = KeyService(sqlite_db).create(KeyCreate(name="c", max_concurrency=1), "test")
    key = get_key(sqlite_db, created.id)
    assert key is not None

    async def check() -> Any:
        counters = RedisCounters(f"redis://127.0.0.1:{free_port()}/0")
        limits = Limits(counters, Ledger(sqlite_db), redis_failure=redis_failure)
        try:
            return await limits.check(key, "m", None, time.time(), "call-1")
        finally:
            await counters.close()

    refusal = asyncio.run(check())
    if redis_failure == "open":
        assert refusal is None
    else:
        assert (refusal.status, refusal.code) == (503, "limits_unavailable")


def test_a_call_waits_for_a_pooled_connection_only_so_long(
        db: Database, upstream: tuple[str, LateUsageUpstream]) -> None:
    base = f"{upstream[0]}/v1"
    routes = [Route(model=CHAT, base_url=base, category="chat"),
              Route(model=CLAUDE, base_url=base, protocol="anthropic")]
    app = create_app(load_settings(database_url=db.url, admin_token=ADMIN, routes=routes,
                                   flush_interval_ms=10, key_cache_seconds=0,
                                   upstream_max_connections=1, upstream_pool_wait_s=0.3))
    with serve_app(app) as url:
        served = Served(url, app, db.url)
        key_id, key = new_key(db.url)
        holder = threading.Thread(target=_chat, args=(url, key, {
            "model": CHAT, "messages": [], "fake": {"headers_delay_s": 2.0, "answer": "{}"}}))
        holder.start()
        try:
            wait_until(lambda: served.connections_in_use() == 1 or None, timeout=10)
            started = time.monotonic()
            busy = _chat(url, key, stream_body(False))
            waited = time.monotonic() - started
            anthropic = httpx.post(f"{url}/v1/messages", timeout=30, headers={
                "x-api-key": key, "anthropic-version": "2023-06-01"}, json={
                "model": CLAUDE, "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}]})
        finally:
            holder.join()
        assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
        assert busy.json()["error"]["code"] == "upstream_busy"
        assert 0.25 <= waited < 1.5
        assert anthropic.status_code == 503 and anthropic.headers["retry-after"] == "1"
        assert anthropic.json()["type"] == "error"
        assert anthropic.json()["error"]["type"] == "overloaded_error"
        records = wait_until(lambda: _exactly(served.records(key_id), 3), timeout=10)
        assert sorted(r["status_code"] for r in records) == [200, 503, 503]
        # The pool serves again once its connection is free.
        assert _chat(url, key, stream_body(False)).status_code == 200
