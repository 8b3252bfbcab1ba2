"""Redis unreachable: the documented ``redis_failure`` behaviour, never a crash.

``open`` (the default) lets the calls of keys with limits through unchecked and logs it once;
``closed`` refuses them with an OpenAI-shaped 503. Keys without limits never notice. When Redis
answers again, limits hold again and the usage the process could not count meanwhile is added
(test_counter_rebuild.py tests that no other process's counter is reset).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest

from tallygate.app import create_app
from tallygate.config import Route, RoutePrice, load_settings
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.store.database import Database
from tests.conftest import RECENT, ping_redis_or_skip
from tests.reliability.support import ADMIN, CHAT, wait_until
from tests.servers import free_port, serve_app

# Not the database the other Redis tests use (and clean before and after): re-reading quota
# periods drops every quota counter of the database.
REDIS_URL = os.environ.get("TALLYGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
REDIS_DB = 14


class TcpProxy:
    """A TCP relay to Redis that can be cut (every connection closed, new ones refused the
    moment they open) and restored: Redis 'stopped' without touching the shared server."""

    def __init__(self, host: str, port: int) -> None:
        self.target = (host, port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = True
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            self.open = False
            for sock in self._sockets:
                with suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
            self._sockets.clear()

    def restore(self) -> None:
        self.open = True

    def close(self) -> None:
        self.cut()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open:
                client.close()
                continue
            server = socket.create_connection(self.target)
            with self._lock:
                self._sockets += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        with suppress(OSError):
            sink.shutdown(socket.SHUT_WR)


@pytest.fixture
def redis_proxy() -> Iterator[TcpProxy]:
    import redis

    parsed = urlparse(REDIS_URL)
    host, port = parsed.hostname or "127.0.0.1", parsed.port or 6379
    client = redis.Redis(host=host, port=port, db=REDIS_DB)
    ping_redis_or_skip(client, REDIS_URL)
    proxy = TcpProxy(host, port)
    yield proxy
    proxy.close()
    for name in client.scan_iter("tallygate:*"):
        client.delete(name)
    client.close()


@contextmanager
def gateway_with_redis(db: Database, upstream: str, redis_url: str,
                       **settings: Any) -> Iterator[str]:
    routes = [Route(model=CHAT, base_url=f"{upstream}/v1", category="chat",
                    price=RoutePrice(input_per_million=1, output_per_million=1))]
    app = create_app(load_settings(database_url=db.url, admin_token=ADMIN, routes=routes,
                                   redis_url=redis_url, flush_interval_ms=10,
                                   key_cache_seconds=0, spool_dir=None, **settings))
    with serve_app(app) as url:
        yield url


def new_key(db: Database, **limits: Any) -> str:
    return KeyService(db).create(KeyCreate(name="redis", **limits), "test").key


def call(url: str, key: str, **fake: Any) -> httpx.Response:
    body: dict[str, Any] = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}]}
    if fake:
        body["fake"] = fake
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})


def unreachable_redis() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


def test_fail_open_lets_calls_through_and_says_so(
        sqlite_db: Database, upstream: str, caplog: pytest.LogCaptureFixture) -> None:
    limited = new_key(sqlite_db, rpm_limit=2, tpm_limit=10, quota_tokens=10)
    free = new_key(sqlite_db)
    with caplog.at_level(logging.WARNING, logger="tallygate"), \
            gateway_with_redis(sqlite_db, upstream, unreachable_redis()) as url:
        statuses = [call(url, limited).status_code for _ in range(6)]
        assert statuses == [200] * 6  # limits not enforced, no crash
        assert call(url, free).status_code == 200
    unavailable = [r for r in caplog.records if "limit counters unavailable" in r.message]
    assert len(unavailable) == 1 and "redis_failure = open" in unavailable[0].message


def test_fail_closed_answers_503_for_keys_with_limits(sqlite_db: Database,
                                                      upstream: str) -> None:
    limited = new_key(sqlite_db, rpm_limit=100)
    free = new_key(sqlite_db)
    with gateway_with_redis(sqlite_db, upstream, unreachable_redis(),
                            redis_failure="closed") as url:
        refused = call(url, limited)
        assert refused.status_code == 503
        assert refused.json() == {"error": {
            "message": "This API key's limits cannot be checked right now; try again shortly.",
            "type": "api_error", "code": "limits_unavailable", "param": None}}
        assert int(refused.headers["retry-after"]) >= 1
        assert call(url, free).status_code == 200
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}) as admin:
            wait_until(lambda: admin.get("/api/v1/usage/summary", params={"period": RECENT}
                                         ).json()["cards"]["model_calls"] == 2)
            calls = admin.get("/api/v1/usage/calls", params={"period": RECENT}).json()["data"]
    assert sorted(c["status_code"] for c in calls) == [200, 503]


def test_limits_hold_again_when_redis_comes_back(sqlite_db: Database, upstream: str,
                                                 redis_proxy: TcpProxy) -> None:
    rpm_key = new_key(sqlite_db, rpm_limit=3)
    quota_key = new_key(sqlite_db, quota_tokens=100)
    with gateway_with_redis(sqlite_db, upstream,
                            f"redis://127.0.0.1:{redis_proxy.port}/{REDIS_DB}") as url:
        assert [call(url, rpm_key).status_code for _ in range(4)] == [200, 200, 200, 429]
        assert call(url, quota_key, input_tokens=30, output_tokens=10).status_code == 200

        redis_proxy.cut()
        assert [call(url, rpm_key).status_code for _ in range(3)] == [200] * 3  # unchecked
        # Used while nothing could count it: 40 + 70 = 110 tokens, over the quota of 100.
        assert call(url, quota_key, input_tokens=60, output_tokens=10).status_code == 200

        redis_proxy.restore()
        # Within a second the counters are tried again: the limits hold once more...
        wait_until(lambda: call(url, rpm_key).status_code == 429, timeout=10)
        # ...and what the outage's calls used was added to the quota.
        assert call(url, quota_key).status_code == 429
