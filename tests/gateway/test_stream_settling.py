"""The upstream's usage is the bill, whatever the client does; every call ends in one record.

A fake upstream sends its usage late (a pause after the ``finish_reason`` chunk), and clients
leave at every point of a stream: before the headers, in the middle, after ``finish_reason``,
after ``[DONE]``. The ledger must hold the upstream's own input, output, cached and reasoning
tokens every time, with 499 unless the client got the ``[DONE]``; the counters must hold what
the ledger holds; an answer of any shape still gives one record; and the upstream connection
is always given back.
"""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest

from tallygate.app import create_app
from tallygate.config import Route, load_settings
from tallygate.gateway.counters import Counters, Loader
from tallygate.store.database import Database
from tests.reliability.support import ADMIN, new_key, wait_until
from tests.servers import serve_app

CHAT = "late-usage-model"
USAGE = {"prompt_tokens": 1000, "completion_tokens": 5000, "total_tokens": 6000,
         "prompt_tokens_details": {"cached_tokens": 300},
         "completion_tokens_details": {"reasoning_tokens": 4990}}
EXPECTED = {"input_tokens": 1000, "output_tokens": 5000, "cached_input_tokens": 300,
            "reasoning_tokens": 4990, "estimated": False}


def _event(data: Any) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _answer(fake: dict[str, Any]) -> bytes:
    if "big_answer_mb" in fake:
        return orjson.dumps({"choices": [{"message": {"content": "x" * (
            fake["big_answer_mb"] << 20)}}], "usage": USAGE})
    if "deep_answer" in fake:
        depth = fake["deep_answer"]
        return (b'{"choices": [{"message": {"content": ' + b"[" * depth + b'"x"'
                + b"]" * depth + b"}}]}")
    return fake["answer"].encode("latin-1")  # type: ignore[no-any-return]


class LateUsageUpstream:
    """An OpenAI-like upstream whose stream is: a role chunk, three content chunks, the
    ``finish_reason`` chunk, a pause of ``usage_delay_s``, the usage chunk, ``[DONE]``, and
    after ``end_delay_s`` the end of the body. The
    request's ``"fake"`` object may ask for ``headers_delay_s`` (before anything), a plain
    ``answer`` (its bytes, as a latin-1 string), ``big_answer_mb``, ``deep_answer`` (lists
    that deep in the message), ``events`` (the stream's events, as latin-1 strings; with
    ``no_done``, not followed by ``[DONE]``) or ``no_usage``."""

    def __init__(self) -> None:
        self.requests = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        self.requests += 1
        request = orjson.loads(body)
        fake = request.get("fake") or {}
        await asyncio.sleep(fake.get("headers_delay_s", 0))
        if "answer" in fake or "big_answer_mb" in fake or "deep_answer" in fake:
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json")]})
            await send({"type": "http.response.body", "body": _answer(fake)})
            return
        content_type = fake.get("content_type", "text/event-stream").encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", content_type)]})
        if "events" in fake:  # raw events, as latin-1 strings
            for raw in fake["events"]:
                await send({"type": "http.response.body", "body": raw.encode("latin-1"),
                            "more_body": True})
            await send({"type": "http.response.body",
                        "body": b"" if fake.get("no_done") else b"data: [DONE]\n\n"})
            return
        base = {"id": "c1", "object": "chat.completion.chunk", "model": "m"}
        await self._piece(send, _event(base | {"choices": [
            {"index": 0, "delta": {"role": "assistant", "content": ""}}]}))
        for word in ("one ", "two ", "three "):
            await asyncio.sleep(0.05)
            await self._piece(send, _event(base | {"choices": [
                {"index": 0, "delta": {"content": word}, "finish_reason": None}]}))
        await asyncio.sleep(0.05)
        await self._piece(send, _event(base | {"choices": [
            {"index": 0, "delta": {}, "finish_reason": "stop"}]}))
        await asyncio.sleep(fake.get("usage_delay_s", 0.4))
        options = request.get("stream_options") or {}
        if options.get("include_usage") and not fake.get("no_usage"):
            await self._piece(send, _event(base | {"choices": [], "usage": USAGE}))
        # The body ends a moment after [DONE]: long enough for a client to hang up on it.
        await self._piece(send, b"data: [DONE]\n\n")
        await asyncio.sleep(fake.get("end_delay_s", 0.1))
        await send({"type": "http.response.body", "body": b""})

    @staticmethod
    async def _piece(send: Any, data: bytes) -> None:
        await send({"type": "http.response.body", "body": data, "more_body": True})


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, LateUsageUpstream]]:
    fake = LateUsageUpstream()
    with serve_app(fake) as url:
        yield url, fake


@dataclass
class Served:
    url: str
    app: Any
    db_url: str

    def records(self, key_id: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/usage/calls", timeout=10,
                             params={"period": "3d", "limit": 1000, "api_key_id": key_id},
                             headers={"Authorization": f"Bearer {ADMIN}"})
        response.raise_for_status()
        return response.json()["data"]  # type: ignore[no-any-return]

    def one_record(self, key_id: str, settle_s: float = 0.3) -> dict[str, Any]:
        """The key's one record, once it is there (and still the only one a moment later)."""
        found = wait_until(lambda: self.records(key_id), timeout=10)
        time.sleep(settle_s)
        again = self.records(key_id)
        assert len(again) == 1, again
        assert found[0]["id"] == again[0]["id"]
        return again[0]

    def connections_in_use(self) -> int:
        return len(self.app.state.gateway.client.connector._acquired)


class LeavingAtStart:
    """A server whose client leaves just as the answer starts (the ``x-leave`` header):
    ``raise`` reports it on the ``http.response.start`` send (ASGI 2.4), ``yield`` waits
    there while ``receive`` says the client is gone."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        how = dict(scope.get("headers") or []).get(b"x-leave") if scope["type"] == "http" \
            else None
        if how is None:
            await self.app(scope, receive, send)
            return
        body_read = asyncio.Event()

        async def leaving_receive() -> Any:
            if body_read.is_set():
                return {"type": "http.disconnect"}
            message = await receive()
            if not message.get("more_body"):
                body_read.set()
            return message

        async def leaving_send(message: Any) -> None:
            if message["type"] == "http.response.start":
                if how == b"raise":
                    raise OSError("the client disconnected")
                await asyncio.Event().wait()  # the server yields here; the client is away
            await send(message)

        await self.app(scope, leaving_receive, leaving_send)
        # The test's own client still waits: tell it the call is over.
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})


@contextmanager
def serve_gateway(db: Database, upstream_url: str, **settings: Any) -> Iterator[Served]:
    routes = [Route(model=CHAT, base_url=f"{upstream_url}/v1", category="chat")]
    app = create_app(load_settings(database_url=db.url, admin_token=ADMIN, routes=routes,
                                   **({"flush_interval_ms": 10, "key_cache_seconds": 0}
                                      | settings)))
    with serve_app(LeavingAtStart(app)) as url:
        yield Served(url, app, db.url)


@pytest.fixture
def served(db: Database, upstream: tuple[str, LateUsageUpstream]) -> Iterator[Served]:
    with serve_gateway(db, upstream[0]) as gateway:
        yield gateway


def stream_body(client_wants_usage: bool, **fake: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": CHAT, "stream": True, "fake": fake,
                            "messages": [{"role": "user", "content": "count to three"}]}
    if client_wants_usage:
        body["stream_options"] = {"include_usage": True}
    return body


def leave_after(url: str, key: str, body: dict[str, Any], marker: bytes | None,
                path: str = "/v1/chat/completions") -> bytes:
    """Stream ``body`` and hang up as soon as ``marker`` has arrived (None: once the headers
    did). What was received."""
    received = b""
    with httpx.Client(timeout=10) as client, client.stream(
            "POST", f"{url}{path}", json=body,
            headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200
        if marker is not None:
            for chunk in response.iter_raw():
                received += chunk
                if marker in received:
                    break
    return received


def leave_before_headers(url: str, key: str, body: dict[str, Any]) -> None:
    raw = orjson.dumps(body)
    with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\n"
                     b"authorization: Bearer " + key.encode() + b"\r\n"
                     b"content-type: application/json\r\n"
                     b"content-length: " + str(len(raw)).encode() + b"\r\n\r\n" + raw)
        time.sleep(0.1)  # the gateway has the request; the upstream has not answered yet


LEAVE_POINTS = ["before headers", "mid-stream", "after finish_reason", "after [DONE]"]


@pytest.mark.parametrize("client_wants_usage", [False, True], ids=["usage hidden",
                                                                    "usage asked"])
@pytest.mark.parametrize("leave", LEAVE_POINTS)
def test_the_upstreams_usage_is_recorded_wherever_the_client_leaves(
        served: Served, leave: str, client_wants_usage: bool) -> None:
    key_id, key = new_key(served.db_url)
    if leave == "before headers":
        leave_before_headers(served.url, key, stream_body(client_wants_usage,
                                                          headers_delay_s=0.3))
    else:
        marker = {"mid-stream": b'"two "', "after finish_reason": b'"stop"',
                  "after [DONE]": b"[DONE]"}[leave]
        received = leave_after(served.url, key, stream_body(client_wants_usage), marker)
        if leave == "after finish_reason":
            assert b'"usage"' not in received  # the usage was still to come
    record = served.one_record(key_id)
    assert {name: record[name] for name in EXPECTED} == EXPECTED
    assert record["status_code"] == (200 if leave == "after [DONE]" else 499)
    assert served.connections_in_use() == 0


@pytest.mark.parametrize("how", ["raise", "yield"])
def test_a_client_that_leaves_as_the_answer_starts_is_recorded(served: Served,
                                                               how: str) -> None:
    key_id, key = new_key(served.db_url)
    response = httpx.post(f"{served.url}/v1/chat/completions", json=stream_body(False),
                          timeout=10, headers={"Authorization": f"Bearer {key}",
                                               "x-leave": how})
    assert response.status_code == 204  # the stand-in server's own word: the app returned
    record = served.one_record(key_id)
    assert {name: record[name] for name in EXPECTED} == EXPECTED
    assert record["status_code"] == 499
    assert served.connections_in_use() == 0


def test_the_drain_budget_bounds_the_wait_for_usage(
        db: Database, upstream: tuple[str, LateUsageUpstream]) -> None:
    """Usage later than ``drain_timeout_s`` after the client left: an estimate, 499, and the
    connection closed; past ``drain_max_bytes``, the same."""
    with serve_gateway(db, upstream[0], drain_timeout_s=0.2) as gateway:
        key_id, key = new_key(db.url)
        started = time.monotonic()
        leave_after(gateway.url, key, stream_body(False, usage_delay_s=2.0), b'"stop"')
        record = gateway.one_record(key_id)
        assert time.monotonic() - started < 1.5
        assert (record["status_code"], record["estimated"]) == (499, True)
        assert record["output_tokens"] == 4  # "one two three ", four characters a token
        assert gateway.connections_in_use() == 0
    padding = "x" * 2000
    events = [_event({"choices": [{"index": 0, "delta": {"content": padding}}]}).decode()
              for _ in range(20)] + [_event({"choices": [], "usage": USAGE}).decode()]
    with serve_gateway(db, upstream[0], drain_max_bytes=10_000) as gateway:
        key_id, key = new_key(db.url)
        leave_before_headers(gateway.url, key, stream_body(False, headers_delay_s=0.3,
                                                           events=events))
        record = gateway.one_record(key_id)
        assert (record["status_code"], record["estimated"]) == (499, True)
        assert gateway.connections_in_use() == 0


class SlowCounters:
    """The key's counters behind a slow network: each addition waits ``delay_s`` first. What
    reached them is summed here."""

    def __init__(self, inner: Counters, delay_s: float) -> None:
        self.inner, self.delay_s = inner, delay_s
        self.window_tokens_added = 0
        self.period_tokens_added = 0

    async def take_request(self, name: str, per_minute: int, now: float) -> float | None:
        return await self.inner.take_request(name, per_minute, now)

    async def window_tokens(self, name: str, now: float) -> tuple[int, int]:
        return await self.inner.window_tokens(name, now)

    async def add_tokens(self, name: str, tokens: int, now: float) -> None:
        await asyncio.sleep(self.delay_s)
        self.window_tokens_added += tokens
        await self.inner.add_tokens(name, tokens, now)

    async def period_used(self, name: str, period: str, ttl_s: int,
                          load: Loader) -> tuple[int, int]:
        return await self.inner.period_used(name, period, ttl_s, load)

    async def add_period(self, name: str, period: str, tokens: int, cost_nano: int) -> None:
        await asyncio.sleep(self.delay_s)
        self.period_tokens_added += tokens
        await self.inner.add_period(name, period, tokens, cost_nano)


    async def close(self) -> None:
        await self.inner.close()


def test_a_client_leaving_while_its_call_is_counted_leaves_the_counters_whole(
        served: Served) -> None:
    limits = served.app.state.gateway.limits
    slow = SlowCounters(limits.counters, delay_s=0.3)
    limits.counters = slow
    key_id, key = new_key(served.db_url, tpm_limit=10**9, quota_tokens=10**9)
    for _ in range(3):  # each client hangs up on seeing [DONE], while its call is counted
        leave_after(served.url, key, stream_body(False, usage_delay_s=0.0, end_delay_s=0.0),
                    b"[DONE]")
    records = wait_until(lambda: len(r := served.records(key_id)) == 3 and r, timeout=10)
    in_ledger = sum(r["total_tokens"] for r in records)
    assert in_ledger == 3 * 6000
    wait_until(lambda: slow.period_tokens_added >= in_ledger, timeout=5)
    assert (slow.window_tokens_added, slow.period_tokens_added) == (in_ledger, in_ledger)


# -- answers and bodies of any shape: still one record, and the connection given back ------

def nested(depth: int) -> bytes:
    return b"[" * depth + b'"deep"' + b"]" * depth


def deep_body(depth: int, *, stream: bool = False, where: str = "content",
              fake: dict[str, Any] | None = None) -> bytes:
    """A body orjson cannot encode again (more than 254 levels) but may decode (up to
    1 024): it must go upstream as the client's bytes."""
    message = (b'{"role": "user", "content": ' + nested(depth) + b"}" if where == "content"
               else b'{"role": "user", "content": "hi"}')
    tools = b', "tools": [' + nested(depth) + b"]" if where == "tools" else b""
    return (b'{"model": "' + CHAT.encode() + b'", "stream": ' + (b"true" if stream else
                                                                   b"false")
            + b', "messages": [' + message + b"]" + tools + b', "fake": '
            + orjson.dumps(fake or {"no_usage": True, "answer": orjson.dumps(
                {"choices": [{"message": {"content": "hi"}}]}).decode()}) + b"}")


def post_raw(served: Served, key: str, content: bytes) -> httpx.Response:
    return httpx.post(f"{served.url}/v1/chat/completions", content=content, timeout=30,
                      headers={"Authorization": f"Bearer {key}",
                               "Content-Type": "application/json"})


BODIES = {
    "messages 1 000 deep": deep_body(1000),
    "a stream of messages 1 000 deep": deep_body(1000, stream=True, fake={"no_usage": True}),
    "tools 300 deep": deep_body(300, where="tools"),
    "a stream with tools 1 000 deep": deep_body(1000, stream=True, where="tools",
                                                fake={"no_usage": True}),
}


@pytest.mark.parametrize("name", list(BODIES))
def test_a_body_nested_as_deep_as_the_parser_goes_is_recorded(served: Served,
                                                              name: str) -> None:
    key_id, key = new_key(served.db_url)
    response = post_raw(served, key, BODIES[name])
    assert response.status_code == 200
    if b'"stream": true' in BODIES[name]:
        assert response.text.rstrip().endswith("data: [DONE]")
    record = served.one_record(key_id)
    assert (record["status_code"], record["estimated"]) == (200, True)
    assert record["input_tokens"] > 0
    assert served.connections_in_use() == 0


def test_a_body_deeper_than_the_parser_goes_never_goes_upstream(
        served: Served, upstream: tuple[str, LateUsageUpstream]) -> None:
    _, key = new_key(served.db_url)
    before = upstream[1].requests
    response = post_raw(served, key, deep_body(10_000))
    assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    assert upstream[1].requests == before


DEEP_EVENT = (b'data: {"choices": [{"index": 0, "delta": {"content": ' + nested(1000)
              + b"}}]}\n\n").decode()
ESTIMATED = {"estimated": True}
# Each answer, and what its record must hold.
ANSWERS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "usage and choices of the wrong types": (
        {"answer": '{"usage": [1, 2], "choices": {"a": 1}}'}, ESTIMATED),
    "odd members beside good counts": (
        {"answer": '{"choices": [{"message": "text"}], "usage": {"prompt_tokens": 5, '
                   '"completion_tokens": 2, "prompt_tokens_details": [], '
                   '"completion_tokens_details": "none"}}'},
        {"input_tokens": 5, "output_tokens": 2, "cached_input_tokens": 0, "estimated": False}),
    "a count past any float": (
        {"answer": '{"usage": {"prompt_tokens": 1e400, "completion_tokens": 2}}'}, ESTIMATED),
    "a message 1 000 deep": ({"deep_answer": 1000}, ESTIMATED),
    "invalid UTF-8": ({"answer": '{"choices": [{"message": {"content": "\xff\xfe"}}]}'},
                      ESTIMATED),
    "not JSON": ({"answer": "<html>\xff</html>"}, ESTIMATED),
    "a JSON array": ({"answer": "[1, 2, 3]"}, ESTIMATED),
    "20 MiB": ({"big_answer_mb": 20}, EXPECTED),
    "stream: an event of invalid UTF-8 and one 1 000 deep": ({"events": [
        'data: {"choices": [{"index": 0, "delta": {"content": "\xff"}}]}\n\n', DEEP_EVENT,
        'data: {"choices": [], "usage": ' + orjson.dumps(USAGE).decode() + "}\n\n"]},
        EXPECTED),
    "stream: a content type beyond latin-1": ({"content_type": "text/event-stream; x=\u4e2d",
                                                "events": []}, ESTIMATED),
    # Not an event stream: passed through as it is, not taken for one cut short.
    "stream: answered with a JSON body": (
        {"answer": '{"choices": [{"message": {"content": "hi"}}]}'},
        ESTIMATED),
    "stream: events of odd types": ({"events": [
        "data: [1, 2]\n\n", 'data: {"choices": {"delta": 5}}\n\n',
        'data: {"choices": [{"delta": []}, 7, {"text": ["a", {"text": "b"}]}]}\n\n',
        'data: {"choices": [], "usage": {"prompt_tokens": "many"}}\n\n']}, ESTIMATED),
}


@pytest.mark.parametrize("name", list(ANSWERS))
def test_an_answer_of_any_shape_gives_one_record(served: Served, name: str) -> None:
    key_id, key = new_key(served.db_url)
    fake, expected = ANSWERS[name]
    body = {"model": CHAT, "stream": name.startswith("stream"), "fake": fake,
            "messages": [{"role": "user", "content": "hello"}]}
    response = httpx.post(f"{served.url}/v1/chat/completions", json=body, timeout=30,
                          headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200 and b'"error"' not in response.content
    record = served.one_record(key_id)
    assert record["status_code"] == 200
    assert {n: record[n] for n in expected} == expected
    assert served.connections_in_use() == 0


def test_strict_durability_holds_the_last_piece_until_the_drained_record_is_committed(
        db: Database, upstream: tuple[str, LateUsageUpstream]) -> None:
    with serve_gateway(db, upstream[0], durability="strict", flush_interval_ms=5000) as gateway:
        key_id, key = new_key(db.url)
        received = leave_after(gateway.url, key, stream_body(False), b"[DONE]")
        # No waiting: the record was committed before the [DONE] was sent.
        (record,) = gateway.records(key_id)
        assert received.rstrip().endswith(b"data: [DONE]")
        assert {n: record[n] for n in EXPECTED} == EXPECTED and record["status_code"] == 200
        gone_id, gone_key = new_key(db.url)
        leave_after(gateway.url, gone_key, stream_body(False), b'"stop"')
        # A client that left waits for no commit: its record comes with the next batch.
        gone = wait_until(lambda: gateway.records(gone_id), timeout=10)[0]
        assert {n: gone[n] for n in EXPECTED} == EXPECTED and gone["status_code"] == 499
        assert gateway.connections_in_use() == 0


def test_a_stream_that_ends_without_done_is_an_error_with_the_usage_it_gave(
        served: Served) -> None:
    key_id, key = new_key(served.db_url)
    events = [_event({"choices": [{"index": 0, "delta": {"content": "partial"}}]}).decode(),
              _event({"choices": [], "usage": USAGE}).decode()]
    for client_wants_usage in (False, True):
        with httpx.stream("POST", f"{served.url}/v1/chat/completions", timeout=10,
                          json=stream_body(client_wants_usage, events=events, no_done=True),
                          headers={"Authorization": f"Bearer {key}"}) as response:
            received = b"".join(response.iter_raw())
        last = received.rstrip().rsplit(b"\n\n", 1)[-1].removeprefix(b"data: ")
        assert orjson.loads(last)["error"]["code"] == "upstream_incomplete"
        assert b"[DONE]" not in received and b'"partial"' in received
        assert (b'"usage"' in received) is client_wants_usage
    records = wait_until(lambda: len(r := served.records(key_id)) == 2 and r, timeout=10)
    for record in records:  # the upstream's own usage, on a call that did not end well
        assert record["status_code"] == 502
        assert {n: record[n] for n in EXPECTED} == EXPECTED
