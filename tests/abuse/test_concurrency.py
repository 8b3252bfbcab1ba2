"""A key's ``max_concurrency`` across two gateway processes sharing Redis, under a burst:
the upstream itself counts the calls it holds at once, and never sees more than the limit
(tests/gateway/test_backpressure.py tests the slots themselves, in-process)."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.abuse.floods import chat_bytes
from tests.conftest import ping_redis_or_skip
from tests.reliability.support import new_key, start_gateway
from tests.servers import serve_app

# A database number no other test uses (tests/gateway use 15), emptied before and after.
REDIS_URL = os.environ.get("TALLYGATE_TEST_ABUSE_REDIS_URL", "redis://127.0.0.1:6379/13")
LIMIT = 3


class CountingUpstream:
    """Answers a chat completion after ``hold_s``; remembers the most it held at once."""

    def __init__(self, hold_s: float = 0.3) -> None:
        self.hold_s = hold_s
        self.now = self.most = self.calls = 0
        self._lock = threading.Lock()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        with self._lock:
            self.now += 1
            self.calls += 1
            self.most = max(self.most, self.now)
        try:
            await asyncio.sleep(self.hold_s)
        finally:
            with self._lock:
                self.now -= 1
        body = orjson.dumps({"id": "c1", "object": "chat.completion", "model": "m",
                             "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                 "role": "assistant", "content": "ok"}}],
                             "usage": {"prompt_tokens": 3, "completion_tokens": 1,
                                       "total_tokens": 4}})
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture
def redis_url() -> Iterator[str]:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    ping_redis_or_skip(client, REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


def test_max_concurrency_holds_across_two_processes_sharing_redis(
        workdir: Path, database_url: str, redis_url: str) -> None:
    counting = CountingUpstream()
    with serve_app(counting) as upstream:
        env = {"TALLYGATE_REDIS_URL": redis_url}
        gateways = [start_gateway(workdir, database_url, upstream, env=env, name=f"redis-{n}")
                    for n in range(2)]
        try:
            _, key = new_key(database_url, name="limited", max_concurrency=LIMIT)
            headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}

            def call(number: int) -> int:
                url = gateways[number % 2].url
                return httpx.post(f"{url}/v1/chat/completions", content=chat_bytes(),
                                  headers=headers, timeout=30).status_code

            # Three bursts of 24 calls at once, spread over both processes.
            with ThreadPoolExecutor(24) as pool:
                statuses = [s for _ in range(3) for s in pool.map(call, range(24))]
        finally:
            for gateway in gateways:
                gateway.stop()
    assert set(statuses) <= {200, 429}, statuses
    assert counting.most <= LIMIT, counting.most
    assert statuses.count(200) == counting.calls >= LIMIT
    assert statuses.count(429) > 0
