"""Clients that send or read too slowly (``client_idle_timeout_s``), over raw sockets against
a real uvicorn server: a stalled request body gets 408 and never goes upstream (an upload
already passed on as it arrives is cut, answered 408 and recorded); a stream
client that stops reading is settled as one that left, and the upstream connection is freed.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest

from tallygate.app import create_app
from tallygate.config import Route, load_settings
from tallygate.store.database import Database
from tests.gateway.test_stream_settling import (
    EXPECTED,
    USAGE,
    LateUsageUpstream,
    Served,
    serve_gateway,
    stream_body,
    upstream,
)
from tests.reliability.support import ADMIN, new_key, wait_until
from tests.servers import serve_app

__all__ = ["upstream"]  # the late-usage upstream fixture, shared


@pytest.fixture
def served(db: Database, upstream: tuple[str, LateUsageUpstream]) -> Iterator[Served]:
    with serve_gateway(db, upstream[0], client_idle_timeout_s=1) as gateway:
        yield gateway


class LongStreamUpstream:
    """A stream of 4 000 events of 4 kB (far more than every buffer between the gateway and
    a client that reads nothing), then the usage and ``[DONE]``."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        while (await receive()).get("more_body"):
            pass
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")]})
        piece = _event({"id": "c1", "object": "chat.completion.chunk", "model": "m",
                        "choices": [{"index": 0, "delta": {"content": "x" * 4000}}]})
        for _ in range(4000):
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "more_body": True,
                    "body": _event({"id": "c1", "choices": [], "usage": USAGE})})
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


def _event(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _connect(url: str, receive_buffer: int | None = None) -> socket.socket:
    sock = socket.socket()
    if receive_buffer is not None:  # before connecting: the window it offers stays small
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1])))
    return sock


def _request_head(key: str, length: int) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
            b"authorization: Bearer " + key.encode() + b"\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(length).encode() + b"\r\n\r\n")


def test_a_client_that_stops_sending_its_body_gets_408_and_nothing_goes_upstream(
        served: Served, upstream: tuple[str, LateUsageUpstream]) -> None:
    _, key = new_key(served.db_url)
    raw = orjson.dumps(stream_body(False))
    before = upstream[1].requests
    with _connect(served.url) as sock:
        sock.sendall(_request_head(key, len(raw)) + raw[:len(raw) // 2])
        sock.settimeout(10)
        started = time.monotonic()
        answer = b""
        while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
            piece = sock.recv(65536)
            if not piece:
                break
            answer += piece
        waited = time.monotonic() - started
    assert answer.startswith(b"HTTP/1.1 408"), answer
    assert b'"request_timeout"' in answer
    assert 0.9 <= waited < 5
    assert upstream[1].requests == before


def test_a_stream_client_that_stops_reading_is_settled_as_one_that_left(
        db: Database) -> None:
    with serve_app(LongStreamUpstream()) as upstream, serve_gateway(
            db, upstream, client_idle_timeout_s=1,
            drain_max_bytes=64 * 1024 * 1024) as served:
        key_id, key = new_key(served.db_url)
        raw = orjson.dumps(stream_body(True))
        with _connect(served.url, receive_buffer=4096) as sock:
            sock.sendall(_request_head(key, len(raw)) + raw)
            # Reads nothing; the gateway must give up on it and settle the call meanwhile.
            record = wait_until(lambda: served.records(key_id), timeout=30)[0]
            assert served.connections_in_use() == 0
    assert record["status_code"] == 499
    assert {name: record[name] for name in EXPECTED} == EXPECTED


class ReadingUpstream:
    """Reads what it is sent and answers ``{}``; counts the uploads that began."""

    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        self.requests += 1
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})


def test_an_upload_that_stalls_is_cut_answered_408_and_recorded(db: Database) -> None:
    fake = ReadingUpstream()
    with serve_app(fake) as upstream, serve_app(create_app(load_settings(
            database_url=db.url, admin_token=ADMIN, flush_interval_ms=10, key_cache_seconds=0,
            client_idle_timeout_s=1, routes=[Route(
                model="ocr", base_url=f"{upstream}/v1", kind="service",
                path="/v1/ocr")]))) as url:
        key_id, key = new_key(db.url)
        with _connect(url) as sock:
            sock.sendall(_request_head(key, 1000).replace(b"/v1/chat/completions",
                                                          b"/v1/ocr") + b"x" * 100)
            sock.settimeout(10)
            answer = sock.recv(65536)
        assert answer.startswith(b"HTTP/1.1 408"), answer
        served = Served(url, None, db.url)
        assert served.one_record(key_id)["status_code"] == 408
