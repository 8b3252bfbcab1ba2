"""Anthropic's Messages API through the gateway, with the official ``anthropic`` SDK unchanged.

The upstream is written here (a small aiohttp app answering as Anthropic's API does: the
message's ``usage`` with cache reads, cache writes and their 5-minute / 1-hour split; the
stream's ``message_start`` … ``message_delta`` … ``message_stop``), independent of tallygate's
own fake upstream. Every ledger measure must equal what it billed: input = uncached + cache
read + cache write, cached = the reads, cache_write = the writes, output; cost from the route's
prices. ``cache_write_tokens`` and ``upstream_model`` are not stored yet (the ledger's
migration 0007 adds them): they are asserted on the records the recorder receives.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import anthropic
import httpx
import orjson
import pytest
from aiohttp import web

from tallygate.app import create_app
from tallygate.config import Route, RoutePrice, load_settings
from tallygate.domain.records import CallRecord
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.store.database import Database
from tests.conftest import RECENT
from tests.servers import free_port, serve_app

ADMIN = "test-admin-token-anthropic"
CREDENTIAL = "sk-ant-upstream-credential-0123456789"
CREDENTIAL_ENV = "TG_TEST_ANTHROPIC_CREDENTIAL"
CLAUDE = "claude-sonnet"  # the public name
UPSTREAM_NAME = "claude-sonnet-4-5"  # what the route sends upstream
RAN = "claude-sonnet-4-5-20250929"  # what the upstream says it ran
OPENAI_MODEL = "gpt-plain"
DOWN = "claude-down"
PRICE = RoutePrice(input_per_million=Decimal("3.00"), cached_input_per_million=Decimal("0.30"),
                   cache_write_per_million=Decimal("3.75"),
                   output_per_million=Decimal("15.00"))
# What the upstream bills for every message unless told otherwise.
BILLED = {"input_tokens": 12, "cache_read_input_tokens": 1000,
          "cache_creation_input_tokens": 500,
          "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300},
          "output_tokens": 87}
TOOL = {"name": "get_weather", "description": "The weather in a city.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                         "required": ["city"]}}


def expected_record(billed: dict[str, Any]) -> dict[str, Any]:
    written = billed.get("cache_creation_input_tokens", 0)
    read = billed.get("cache_read_input_tokens", 0)
    return {"input_tokens": billed["input_tokens"] + read + written,
            "cached_input_tokens": read, "cache_write_tokens": written,
            "output_tokens": billed["output_tokens"], "estimated": False}


def expected_cost(billed: dict[str, Any]) -> Decimal:
    million = Decimal(1_000_000)
    return (billed["input_tokens"] * PRICE.input_per_million
            + billed.get("cache_read_input_tokens", 0) * PRICE.cached_input_per_million
            + billed.get("cache_creation_input_tokens", 0) * PRICE.cache_write_per_million
            + billed["output_tokens"] * PRICE.output_per_million) / million  # type: ignore


# -- the upstream --------------------------------------------------------------------------------

def sse(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


@dataclass
class AnthropicUpstream:
    """Answers ``/v1/messages`` and ``/v1/messages/count_tokens``. The request's ``fake``
    object (``extra_body`` in the SDK) may give ``usage`` (what is billed), ``start_input``
    (the input ``message_start`` reports, as some compatible upstreams give 0 there),
    ``delta_delay_s`` (a pause before ``message_delta``), ``stop_delay_s`` (before
    ``message_stop``), ``end_delay_s`` (after it), ``stop_early`` (the body ends without
    ``message_delta`` and ``message_stop``) or ``error_event`` (an overloaded error
    mid-stream)."""

    seen: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/messages", self.messages)
        app.router.add_post("/v1/messages/count_tokens", self.count_tokens)
        return app

    def _refusal(self, request: web.Request) -> web.Response | None:
        if request.headers.get("x-api-key") == CREDENTIAL:
            return None
        # As a real upstream might: its error names (part of) the credential it got.
        return web.json_response({"type": "error", "error": {
            "type": "authentication_error",
            "message": f"invalid x-api-key {request.headers.get('x-api-key')}"}}, status=401)

    async def count_tokens(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append((dict(request.headers), body))
        return self._refusal(request) or web.json_response({"input_tokens": 1512})

    async def messages(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        self.seen.append((dict(request.headers), body))
        refused = self._refusal(request)
        if refused is not None:
            return refused
        fake = body.get("fake") or {}
        usage = fake.get("usage", BILLED)
        tools = bool(body.get("tools"))
        if not body.get("stream"):
            content: list[dict[str, Any]] = [{"type": "text", "text": "Let me check."}]
            if tools:
                content.append({"type": "tool_use", "id": "toolu_01", "name": "get_weather",
                                "input": {"city": "Paris"}})
            return web.json_response({
                "id": "msg_01", "type": "message", "role": "assistant", "model": RAN,
                "content": content, "stop_reason": "tool_use" if tools else "end_turn",
                "stop_sequence": None, "usage": usage | {"service_tier": "standard"}})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        start_usage = {k: v for k, v in usage.items() if k != "output_tokens"} | {
            "output_tokens": 1}
        if "start_input" in fake:
            start_usage["input_tokens"] = fake["start_input"]
        events = [
            {"type": "message_start", "message": {
                "id": "msg_01", "type": "message", "role": "assistant", "content": [],
                "model": RAN, "stop_reason": None, "stop_sequence": None,
                "usage": start_usage}},
            {"type": "content_block_start", "index": 0,
             "content_block": {"type": "text", "text": ""}},
            {"type": "ping"},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "Let me "}},
            {"type": "content_block_delta", "index": 0,
             "delta": {"type": "text_delta", "text": "check."}},
            {"type": "content_block_stop", "index": 0}]
        if tools:
            events += [
                {"type": "content_block_start", "index": 1, "content_block": {
                    "type": "tool_use", "id": "toolu_01", "name": "get_weather", "input": {}}},
                {"type": "content_block_delta", "index": 1,
                 "delta": {"type": "input_json_delta", "partial_json": '{"city": '}},
                {"type": "content_block_delta", "index": 1,
                 "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'}},
                {"type": "content_block_stop", "index": 1}]
        for event in events:
            await response.write(sse(event))
            await asyncio.sleep(0.01)
        if fake.get("error_event"):
            await response.write(sse({"type": "error", "error": {
                "type": "overloaded_error", "message": "Overloaded"}}))
            await response.write_eof()
            return response
        if fake.get("stop_early"):
            await response.write_eof()
            return response
        await asyncio.sleep(fake.get("delta_delay_s", 0))
        # Cumulative: the newer API repeats the input counts here.
        await response.write(sse({"type": "message_delta", "delta": {
            "stop_reason": "tool_use" if tools else "end_turn", "stop_sequence": None},
            "usage": {k: v for k, v in usage.items() if k != "cache_creation"}}))
        await asyncio.sleep(fake.get("stop_delay_s", 0))
        await response.write(sse({"type": "message_stop"}))
        await asyncio.sleep(fake.get("end_delay_s", 0))
        await response.write_eof()
        return response


@contextmanager
def serve_aiohttp(app: web.Application) -> Iterator[str]:
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    loop.run_until_complete(runner.setup())
    loop.run_until_complete(web.SockSite(runner, sock).start())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.run_until_complete(runner.cleanup())
        loop.close()
        sock.close()


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, AnthropicUpstream]]:
    fake = AnthropicUpstream()
    with serve_aiohttp(fake.app()) as url:
        yield url, fake


# -- the gateway ---------------------------------------------------------------------------------

@dataclass
class Served:
    url: str
    app: Any
    db: Database
    recorded: list[CallRecord]

    def new_key(self, **fields: Any) -> tuple[str, str]:
        created = KeyService(self.db).create(KeyCreate(name=fields.pop("name", "claude"),
                                                       **fields), "test")
        return created.id, created.key

    def sdk(self, key: str, **options: Any) -> anthropic.Anthropic:
        return anthropic.Anthropic(base_url=self.url, api_key=key, max_retries=0, **options)

    def calls(self, key_id: str) -> list[dict[str, Any]]:
        response = httpx.get(f"{self.url}/api/v1/usage/calls", timeout=10,
                             params={"period": RECENT, "limit": 1000, "api_key_id": key_id},
                             headers={"Authorization": f"Bearer {ADMIN}"})
        response.raise_for_status()
        return response.json()["data"]  # type: ignore[no-any-return]

    def records_of(self, key_id: str, count: int = 1) -> tuple[list[dict[str, Any]],
                                                              list[CallRecord]]:
        """The key's stored records and the records the recorder received, once ``count``
        are stored (and still ``count`` a moment later)."""
        wait_for(lambda: len(self.calls(key_id)) >= count)
        time.sleep(0.2)
        stored = self.calls(key_id)
        assert len(stored) == count, stored
        received = [r for r in self.recorded if r.api_key_id == key_id]
        assert len(received) == count, received
        return stored, received

    def connections_in_use(self) -> int:
        return len(self.app.state.gateway.client.connector._acquired)


def wait_for(condition: Callable[[], Any], timeout: float = 10.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
    return value


@contextmanager
def serve_gateway(db: Database, upstream_url: str, monkeypatch: pytest.MonkeyPatch,
                  **settings: Any) -> Iterator[Served]:
    monkeypatch.setenv(CREDENTIAL_ENV, CREDENTIAL)
    base = f"{upstream_url}/v1"
    routes = [
        Route(model=CLAUDE, base_url=base, api_key_env=CREDENTIAL_ENV,
              upstream_model=UPSTREAM_NAME, protocol="anthropic", price=PRICE),
        Route(model=OPENAI_MODEL, base_url=base),
        Route(model=DOWN, base_url=f"http://127.0.0.1:{free_port()}/v1",
              api_key_env=CREDENTIAL_ENV, protocol="anthropic"),
    ]
    app = create_app(load_settings(database_url=db.url, admin_token=ADMIN, routes=routes,
                                   **({"flush_interval_ms": 10, "key_cache_seconds": 0}
                                      | settings)))
    with serve_app(app) as url:
        recorded: list[CallRecord] = []
        recorder = app.state.recorder
        record, record_and_commit = recorder.record, recorder.record_and_commit

        def capture(one: CallRecord) -> None:
            recorded.append(one)
            record(one)

        async def capture_and_commit(one: CallRecord) -> None:
            recorded.append(one)
            await record_and_commit(one)

        recorder.record, recorder.record_and_commit = capture, capture_and_commit
        yield Served(url, app, db, recorded)


@pytest.fixture
def served(db: Database, upstream: tuple[str, AnthropicUpstream],
           monkeypatch: pytest.MonkeyPatch) -> Iterator[Served]:
    with serve_gateway(db, upstream[0], monkeypatch) as gateway:
        yield gateway


def ask(**extra: Any) -> dict[str, Any]:
    return {"model": CLAUDE, "max_tokens": 256,
            "messages": [{"role": "user", "content": "What is the weather in Paris?"}]} | extra


def assert_billed(stored: dict[str, Any], received: CallRecord,
                  billed: dict[str, Any]) -> None:
    expected = expected_record(billed)
    assert {name: getattr(received, name) for name in expected} == expected
    assert {name: stored[name] for name in expected if name != "cache_write_tokens"} == {
        name: value for name, value in expected.items() if name != "cache_write_tokens"}
    assert Decimal(stored["cost"]) == expected_cost(billed)
    assert received.upstream_model == RAN
    assert (received.model, received.endpoint, received.model_category) == (
        CLAUDE, "/v1/messages", "chat")


# -- the official SDK ----------------------------------------------------------------------------

def test_a_message_with_tool_use_is_metered_as_billed(
        served: Served, upstream: tuple[str, AnthropicUpstream]) -> None:
    key_id, key = served.new_key()
    with served.sdk(key) as client:
        message = client.messages.create(**ask(tools=[TOOL]))
    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    assert message.usage.cache_creation is not None
    assert message.usage.cache_creation.ephemeral_1h_input_tokens == 300
    assert message._request_id is not None and message._request_id.startswith("req_")
    [stored], [received] = served.records_of(key_id)
    assert_billed(stored, received, BILLED)
    assert stored["status_code"] == 200
    assert stored["metadata"]["cache_write_5m_tokens"] == 200
    assert stored["metadata"]["cache_write_1h_tokens"] == 300
    assert stored["metadata"]["request_id"] == message._request_id
    headers, body = upstream[1].seen[-1]
    assert body["model"] == UPSTREAM_NAME and body["tools"] == [TOOL]


def test_a_streamed_message_with_tool_use_is_metered_as_billed(served: Served) -> None:
    key_id, key = served.new_key()
    with served.sdk(key) as client, client.messages.stream(**ask(tools=[TOOL])) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text == "Let me check."
    assert final.content[1].type == "tool_use" and final.content[1].input == {"city": "Paris"}
    assert (final.usage.output_tokens, final.usage.cache_read_input_tokens) == (87, 1000)
    [stored], [received] = served.records_of(key_id)
    assert_billed(stored, received, BILLED)
    assert stored["status_code"] == 200 and stored["ttft_ms"] is not None
    assert stored["metadata"]["cache_write_1h_tokens"] == 300


def test_the_cumulative_message_delta_is_the_bill(served: Served) -> None:
    """An upstream that reports 0 input in ``message_start`` and the real count in
    ``message_delta`` (as some Anthropic-compatible upstreams do): the last count wins."""
    key_id, key = served.new_key()
    billed = {"input_tokens": 40, "output_tokens": 9}
    with served.sdk(key) as client:
        events = list(client.messages.create(**ask(stream=True), extra_body={
            "fake": {"usage": billed, "start_input": 0}}))
    assert events[-1].type == "message_stop"
    [stored], [received] = served.records_of(key_id)
    assert_billed(stored, received, billed)
    assert "cache_write_5m_tokens" not in stored["metadata"]


def test_the_upstream_gets_its_credential_and_the_anthropic_headers(
        served: Served, upstream: tuple[str, AnthropicUpstream]) -> None:
    _, key = served.new_key()
    with served.sdk(key) as client:
        client.messages.create(**ask(), extra_headers={"anthropic-beta": "tools-2099-01-01"})
    headers, _ = upstream[1].seen[-1]
    lower = {name.lower(): value for name, value in headers.items()}
    assert lower["x-api-key"] == CREDENTIAL
    assert lower["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert lower["anthropic-beta"] == "tools-2099-01-01"
    assert "authorization" not in lower
    assert key not in str(headers)
    # Without anthropic-version, the version whose events the gateway reads.
    response = httpx.post(f"{served.url}/v1/messages", json=ask(), timeout=10,
                          headers={"x-api-key": key})
    assert response.status_code == 200
    assert {n.lower(): v for n, v in upstream[1].seen[-1][0].items()}[
        "anthropic-version"] == "2023-06-01"
    # Several anthropic-beta headers are one list.
    httpx.post(f"{served.url}/v1/messages", json=ask(), timeout=10,
               headers=[("x-api-key", key), ("anthropic-beta", "a-1"),
                        ("anthropic-beta", "b-2")])
    assert {n.lower(): v for n, v in upstream[1].seen[-1][0].items()}[
        "anthropic-beta"] == "a-1,b-2"


def test_x_api_key_authenticates_like_bearer(served: Served) -> None:
    key_id, key = served.new_key()
    with served.sdk("unused", default_headers={"x-api-key": key,
                                               "Authorization": "Basic eA=="}) as client:
        client.messages.create(**ask())
    response = httpx.post(f"{served.url}/v1/messages", json=ask(), timeout=10,
                          headers={"x-api-key": key, "anthropic-version": "2023-06-01"})
    assert response.status_code == 200 and response.json()["usage"]["output_tokens"] == 87
    served.records_of(key_id, count=2)


def test_the_upstream_credential_never_reaches_the_client(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    _, key = served.new_key()
    ok = httpx.post(f"{served.url}/v1/messages", json=ask(stream=True), timeout=10,
                    headers={"x-api-key": key})
    assert ok.status_code == 200 and CREDENTIAL not in ok.text + str(ok.headers)
    # The upstream refuses the credential and names it: the client learns only that.
    gateway = served.app.state.gateway
    route = gateway.upstreams[CLAUDE]
    monkeypatch.setitem(gateway.upstreams, CLAUDE, type(route)(route.route, "sk-ant-wrong-1"))
    for stream in (False, True):
        refused = httpx.post(f"{served.url}/v1/messages", json=ask(stream=stream), timeout=10,
                             headers={"x-api-key": key})
        assert refused.status_code == 502
        assert "sk-ant-wrong" not in refused.text
        assert refused.json()["error"] == {
            "type": "api_error", "message": "The upstream refused the gateway's credential."}


# -- errors in Anthropic's shape -----------------------------------------------------------------

def error_of(response: httpx.Response) -> tuple[int, str]:
    body = response.json()
    assert body["type"] == "error" and set(body["error"]) == {"type", "message"}
    return response.status_code, body["error"]["type"]


def test_bad_requests_get_anthropics_error_shape(served: Served) -> None:
    key_id, key = served.new_key(allowed_models=[CLAUDE, OPENAI_MODEL])
    url = f"{served.url}/v1/messages"
    auth = {"x-api-key": key}

    def post(**kwargs: Any) -> httpx.Response:
        return httpx.post(url, timeout=10, **kwargs)

    assert error_of(post(json=ask())) == (401, "authentication_error")
    assert error_of(post(json=ask(), headers={"x-api-key": "tg-wrong"})) == (
        401, "authentication_error")
    assert error_of(post(content=b"{not json", headers=auth)) == (400, "invalid_request_error")
    assert error_of(post(json=[1], headers=auth)) == (400, "invalid_request_error")
    no_model = ask()
    del no_model["model"]
    assert error_of(post(json=no_model, headers=auth)) == (400, "invalid_request_error")
    assert error_of(post(json=ask(model="nobody"), headers=auth)) == (404, "not_found_error")
    not_anthropic = post(json=ask(model=OPENAI_MODEL), headers=auth)
    assert error_of(not_anthropic) == (404, "not_found_error")
    assert "/v1/chat/completions" in not_anthropic.json()["error"]["message"]
    assert error_of(post(json=ask(model=DOWN), headers=auth)) == (403, "permission_error")
    # An Anthropic route is not served on the OpenAI endpoints either (OpenAI's shape there).
    chat = httpx.post(f"{served.url}/v1/chat/completions", timeout=10,
                      headers={"Authorization": f"Bearer {key}"},
                      json={"model": CLAUDE, "messages": [{"role": "user", "content": "x"}]})
    assert chat.status_code == 404 and chat.json()["error"]["code"] == "model_not_found"
    assert "/v1/messages" in chat.json()["error"]["message"]
    # The SDK's own exceptions follow.
    with served.sdk(key) as client:
        with pytest.raises(anthropic.NotFoundError):
            client.messages.create(**ask(model="nobody"))
        with pytest.raises(anthropic.PermissionDeniedError):
            client.messages.create(**ask(model=DOWN))
    with served.sdk("tg-wrong") as client, pytest.raises(anthropic.AuthenticationError):
        client.messages.create(**ask())
    # Refused before going upstream: the 403 is recorded, the rest never reached a route.
    wait_for(lambda: len(served.calls(key_id)) == 2)
    assert {r["status_code"] for r in served.calls(key_id)} == {403}


def test_rate_limits_and_upstream_failures_in_anthropics_shape(served: Served) -> None:
    key_id, key = served.new_key(rpm_limit=1)
    with served.sdk(key) as client:
        client.messages.create(**ask())
        with pytest.raises(anthropic.RateLimitError) as refused:
            client.messages.create(**ask())
    assert refused.value.response.headers["retry-after"].isdigit()
    assert refused.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    _, free_key = served.new_key()
    response = httpx.post(f"{served.url}/v1/messages", json=ask(model=DOWN), timeout=10,
                          headers={"x-api-key": free_key})
    assert error_of(response) == (502, "api_error")
    stored, _ = served.records_of(key_id, count=2)
    assert sorted(r["status_code"] for r in stored) == [200, 429]


# -- streams at their edges (§11) ----------------------------------------------------------------

def leave_after(served: Served, key: str, body: dict[str, Any], marker: bytes) -> bytes:
    received = b""
    with httpx.Client(timeout=10) as client, client.stream(
            "POST", f"{served.url}/v1/messages", json=body,
            headers={"x-api-key": key}) as response:
        assert response.status_code == 200
        for chunk in response.iter_raw():
            received += chunk
            if marker in received:
                break
    return received


@pytest.mark.parametrize("leave", ["mid-stream", "after message_stop"])
def test_a_client_that_leaves_a_stream_is_metered_exactly(served: Served, leave: str) -> None:
    key_id, key = served.new_key()
    marker = b"text_delta" if leave == "mid-stream" else b"event: message_stop"
    received = leave_after(served, key, ask(stream=True, tools=[TOOL], fake={
        "delta_delay_s": 0.4, "end_delay_s": 0.3}), marker)
    if leave == "mid-stream":
        assert b"message_delta" not in received  # the bill was still to come
    [stored], [received_record] = served.records_of(key_id)
    assert_billed(stored, received_record, BILLED)
    assert stored["status_code"] == (200 if leave == "after message_stop" else 499)
    assert served.connections_in_use() == 0


def test_a_client_without_message_stop_is_not_served_under_strict_durability(
        db: Database, upstream: tuple[str, AnthropicUpstream],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Strict durability holds the last piece (here ``message_stop``) until the record is
    committed: a client that leaves before it got it was not served the whole answer."""
    with serve_gateway(db, upstream[0], monkeypatch, durability="strict") as served:
        key_id, key = served.new_key()
        leave_after(served, key, ask(stream=True, fake={"stop_delay_s": 0.2,
                                                        "end_delay_s": 0.3}),
                    b"event: message_delta")
        [stored], [received] = served.records_of(key_id)
        assert_billed(stored, received, BILLED)
        assert stored["status_code"] == 499
        assert served.connections_in_use() == 0


@pytest.mark.parametrize("how", ["stop_early", "error_event"])
def test_a_broken_stream_ends_in_an_error_event(served: Served, how: str) -> None:
    key_id, key = served.new_key()
    response = httpx.post(f"{served.url}/v1/messages", json=ask(stream=True, fake={how: True}),
                          timeout=10, headers={"x-api-key": key})
    assert response.status_code == 200
    assert b"message_stop" not in response.content
    assert response.content.count(b"event: error\n") == 1
    last = response.content.rstrip().rsplit(b"\n\n", 1)[-1]
    assert last.startswith(b"event: error\ndata: ")
    error = orjson.loads(last.split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] in ("api_error",
                                                                   "overloaded_error")
    with served.sdk(key) as client, pytest.raises(anthropic.APIStatusError):
        list(client.messages.create(**ask(stream=True), extra_body={"fake": {how: True}}))
    stored, received = served.records_of(key_id, count=2)
    assert {r["status_code"] for r in stored} == {502}
    # What the upstream said before it broke off: the input exactly, the output estimated.
    assert {(r.input_tokens, r.cached_input_tokens, r.cache_write_tokens, r.estimated)
            for r in received} == {(1512, 1000, 500, True)}


# -- count_tokens --------------------------------------------------------------------------------

def test_count_tokens_passes_through_free_and_unrecorded(
        served: Served, upstream: tuple[str, AnthropicUpstream]) -> None:
    key_id, key = served.new_key(allowed_models=[CLAUDE])
    with served.sdk(key) as client:
        counted = client.messages.count_tokens(model=CLAUDE, messages=[
            {"role": "user", "content": "How many?"}], tools=[TOOL])  # type: ignore[list-item]
        assert counted.input_tokens == 1512
        with pytest.raises(anthropic.PermissionDeniedError):
            client.messages.count_tokens(model=DOWN, messages=[{"role": "user",
                                                                "content": "x"}])
        with pytest.raises(anthropic.NotFoundError):
            client.messages.count_tokens(model=OPENAI_MODEL, messages=[{"role": "user",
                                                                        "content": "x"}])
    headers, body = upstream[1].seen[-1]
    assert body["model"] == UPSTREAM_NAME and headers["x-api-key"] == CREDENTIAL
    time.sleep(0.3)
    assert served.calls(key_id) == []
    metrics = httpx.get(f"{served.url}/metrics", timeout=10,
                        headers={"Authorization": f"Bearer {ADMIN}"}).text
    assert ('tallygate_unrecorded_requests_total{endpoint="/v1/messages/count_tokens",'
            f'model="{CLAUDE}",status="200"}} 1.0') in metrics


def test_an_unexpected_failure_answers_500_in_anthropics_shape(
        served: Served, monkeypatch: pytest.MonkeyPatch) -> None:
    async def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setitem(served.app.handlers, ("POST", "/v1/messages"), broken)
    answer = httpx.post(f"{served.url}/v1/messages", json=ask(), timeout=10)
    assert error_of(answer) == (500, "api_error")
    assert "a bug" not in answer.text
