"""The OpenAI-compatible endpoints: authenticate, check limits, forward, meter, record.

The request body is parsed once, for the few fields the gateway needs (model, stream,
stream_options); it is forwarded byte for byte unless the model name must be rewritten or the
upstream asked for its usage, so fields the gateway has never heard of keep working. A body
that may name one of those fields twice goes upstream as the gateway parsed it, and one that
names a field differing from them only by case is refused: the gateway and the upstream must
believe the same model. Streams are passed through event by event.

The endpoints speak raw ASGI (scope, receive, send) rather than through Starlette's request
and response objects: on a call that the gateway only relays, building those objects (the
URL, the header mappings, the streaming response's task group) was a measurable share of the
time it adds (docs/benchmarks.md).
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import Any

import aiohttp
import anyio
import orjson
from starlette.types import Message, Receive, Scope, Send

from tallygate.errors import error_body
from tallygate.gateway.keycache import KeyCache
from tallygate.gateway.limits import Limits, Refusal
from tallygate.gateway.sse import StreamWatcher
from tallygate.gateway.upstream import Upstream
from tallygate.gateway.usage import (
    Usage,
    estimate_input_tokens,
    estimate_tokens_of_text,
    output_chars,
    parse_usage,
)
from tallygate.ledger.recorder import Recorder
from tallygate.ledger.records import CallRecord, new_call_id, now_us
from tallygate.ledger.service import Ledger
from tallygate.store.keys import StoredKey

log = logging.getLogger("tallygate.gateway")

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_TAGS_BYTES = 1024
CLIENT_CLOSED = 499  # nginx's code for "the client went away before the answer"
# Connection refused or reset, a broken stream, a timeout: the upstream's fault, not the client's.
UPSTREAM_ERRORS = (aiohttp.ClientError, TimeoutError, ConnectionError)
ENDPOINTS = {
    "/v1/chat/completions": "/chat/completions",
    "/v1/completions": "/completions",
    "/v1/embeddings": "/embeddings",
}


class GatewayError(Exception):
    def __init__(self, status: int, code: str, message: str, param: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.param = status, code, message, param
        self.headers = headers or {}


def parse_tags(header: str | None) -> dict[str, Any] | None:
    """``X-Tallygate-Tags``: a JSON object, or ``k=v`` pairs separated by commas."""
    if not header:
        return None
    if len(header) > MAX_TAGS_BYTES:
        raise GatewayError(400, "invalid_tags", f"X-Tallygate-Tags is longer than "
                                                f"{MAX_TAGS_BYTES} bytes")
    if header.lstrip().startswith("{"):
        try:
            tags = orjson.loads(header)
        except orjson.JSONDecodeError:
            raise GatewayError(400, "invalid_tags", "X-Tallygate-Tags is not valid JSON") \
                from None
        if not isinstance(tags, dict) or not all(
                isinstance(v, str | int | float | bool) for v in tags.values()):
            raise GatewayError(400, "invalid_tags",
                               "X-Tallygate-Tags must be an object of plain values")
        return tags
    tags = {}
    for pair in header.split(","):
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise GatewayError(400, "invalid_tags", "X-Tallygate-Tags must be k=v pairs "
                                                    "separated by commas, or a JSON object")
        tags[name.strip()] = value.strip()
    return tags


@dataclass(slots=True)
class Call:
    """What one call has gathered by the time it is recorded."""

    request_id: str
    started: float
    ts_us: int
    endpoint: str
    key: StoredKey
    upstream: Upstream
    body: dict[str, Any]
    tags: dict[str, Any] | None

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


class Gateway:
    def __init__(self, *, ledger: Ledger, recorder: Recorder, key_cache: KeyCache,
                 limits: Limits, client: aiohttp.ClientSession,
                 upstreams: dict[str, Upstream],
                 strict: bool) -> None:
        self.ledger = ledger
        self.recorder = recorder
        self.key_cache = key_cache
        self.limits = limits
        self.client = client
        self.upstreams = upstreams
        self.strict = strict

    # -- endpoints ---------------------------------------------------------------------------

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _request_id()
        try:
            key = await self._authenticate(_headers_of(scope).authorization)
        except GatewayError as exc:
            await _send_error(send, exc, request_id)
            return
        client = scope.get("client")
        refusal = self.limits.check_key(key, None, client[0] if client else None, time.time())
        if refusal is not None:  # a disabled key, or from elsewhere, learns nothing more
            await _send_refusal(send, refusal, request_id)
            return
        data = [{"id": name, "object": "model", "created": 0,
                 "owned_by": upstream.route.kind}
                for name, upstream in sorted(self.upstreams.items())
                if key.allowed_models is None or name in key.allowed_models]
        await _send_whole(send, 200, orjson.dumps({"object": "list", "data": data}),
                          JSON, request_id)

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        request_id = _request_id()
        started = time.perf_counter()
        ts_us = now_us()
        endpoint: str = scope["path"]
        headers = _headers_of(scope)
        try:
            key = await self._authenticate(headers.authorization)
            raw = await _read_body(receive, headers.content_length)
            if raw is None:
                return  # the client went away before its request was complete
            body = _parse_body(raw)
            model = body.get("model")
            if not isinstance(model, str) or not model:
                raise GatewayError(400, "invalid_request", "model: a model name is required",
                                   "model")
            upstream = self.upstreams.get(model)
            if upstream is None:
                raise GatewayError(404, "model_not_found",
                                   f"The model {model!r} does not exist or is not routed "
                                   "here.", "model")
            tags = parse_tags(headers.tags)
            stream = body.get("stream") is True and endpoint != "/v1/embeddings"
            client_wants_usage = _wants_usage(body)
            forwarded = _upstream_body(raw, body, upstream, stream, client_wants_usage)
        except GatewayError as exc:
            await _send_error(send, exc, request_id)
            return
        call = Call(request_id, started, ts_us, endpoint, key, upstream, body, tags)
        client = scope.get("client")
        refusal = await self.limits.check(key, model, client[0] if client else None,
                                          time.time())
        if refusal is not None:
            await self._record(call, refusal.status, None)
            await _send_refusal(send, refusal, request_id)
            return
        url = upstream.endpoint_url(ENDPOINTS[endpoint])
        if stream:
            await self._stream(call, url, forwarded, receive, send,
                               drop_usage=not client_wants_usage)
        else:
            await self._plain(call, url, forwarded, receive, send)

    # -- forwarding --------------------------------------------------------------------------

    async def _plain(self, call: Call, url: Any, body: bytes, receive: Receive,
                     send: Send) -> None:
        # A client that leaves while the upstream works is noticed, but the upstream call
        # runs to its end: it is billed either way, and only its answer says for how much.
        left = asyncio.ensure_future(_client_leaves(receive))
        try:
            async with self.client.post(url, data=body,
                                        headers=call.upstream.request_headers) as response:
                content = await response.read()
                status = response.status
                content_type = response.headers.get("content-type")
        except UPSTREAM_ERRORS as exc:
            await self._upstream_failed(call, exc, send)
            return
        finally:
            gone = left.done() and not left.cancelled() and left.exception() is None
            left.cancel()
        usage = _usage_of_body(content, call.body) if status < 400 else None
        # An upstream's own failure stays one in the ledger (for its error rate), whether or
        # not the client waited for it; a success nobody received is the client's 499.
        await self._record(call, CLIENT_CLOSED if gone and status < 400 else status, usage)
        if not gone:
            await _send_whole(send, status, content, _content_type(content_type, JSON),
                              call.request_id)

    async def _upstream_failed(self, call: Call, exc: BaseException, send: Send) -> None:
        if isinstance(exc, TimeoutError):
            await self._record(call, 504, None)
            await _send_error(send, GatewayError(504, "upstream_timeout",
                                                 "The upstream did not answer in time."),
                              call.request_id)
            return
        log.warning("upstream %s failed: %s", call.upstream.model, exc.__class__.__name__)
        await self._record(call, 502, None)
        await _send_error(send, GatewayError(502, "upstream_error",
                                             "The upstream could not be reached."),
                          call.request_id)

    async def _stream(self, call: Call, url: Any, body: bytes, receive: Receive, send: Send,
                      *, drop_usage: bool) -> None:
        try:
            response = await self.client.post(url, data=body,
                                              headers=call.upstream.request_headers)
        except UPSTREAM_ERRORS as exc:
            await self._upstream_failed(call, exc, send)
            return
        content_type = response.headers.get("content-type")
        if response.status >= 400:
            try:
                content = await response.read()
            except UPSTREAM_ERRORS as exc:
                await self._upstream_failed(call, exc, send)
                return
            finally:
                response.release()
            await self._record(call, response.status, None)
            await _send_whole(send, response.status, content,
                              _content_type(content_type, JSON), call.request_id)
            return
        headers = [(b"content-type", _content_type(content_type, EVENT_STREAM)),
                   (b"x-request-id", call.request_id.encode()),
                   (b"cache-control", b"no-cache")]
        relay = self._relay(call, response, StreamWatcher(drop_usage_chunk=drop_usage))
        await _send_stream(receive, send, response.status, headers, relay)

    async def _relay(self, call: Call, response: aiohttp.ClientResponse,
                     watcher: StreamWatcher) -> AsyncGenerator[bytes, None]:
        status = CLIENT_CLOSED  # until the stream ends normally or fails upstream
        ttft_ms: int | None = None
        held = b""  # strict durability: the last piece waits for the commit
        tail = b""
        try:
            async for chunk in response.content.iter_any():
                out = watcher.feed(chunk)
                if not out:
                    continue
                if self.strict:
                    out, held = held, out
                    if not out:
                        continue
                if ttft_ms is None:  # the first bytes the client gets, not the upstream's
                    ttft_ms = call.elapsed_ms()
                yield out
            tail = watcher.finish()
            status = 200
        except UPSTREAM_ERRORS as exc:
            log.warning("stream from %s broke: %s", call.upstream.model, exc.__class__.__name__)
            status = 504 if isinstance(exc, TimeoutError) else 502
        finally:
            usage = watcher.usage or _estimate(call.body, watcher.content_chars)
            record = self._make_record(call, status, usage, ttft_ms)
            if status == 200:
                response.release()  # read to the end: the connection can be reused
            else:
                response.close()
            with anyio.CancelScope(shield=True):
                if self.strict and status != CLIENT_CLOSED:
                    await self.recorder.record_and_commit(record)
                else:
                    self.recorder.record(record)
                await self._count(call, record)
        if held or tail:
            yield held + tail

    # -- metering ----------------------------------------------------------------------------

    def _make_record(self, call: Call, status: int, usage: Usage | None,
                     ttft_ms: int | None = None) -> CallRecord:
        usage = usage or Usage()
        model = call.upstream.model
        cost = self.ledger.cost_of(model, call.ts_us, usage.input_tokens,
                                   usage.cached_input_tokens, usage.output_tokens, status,
                                   call.key.id)
        return CallRecord(
            id=new_call_id(), ts_us=call.ts_us, model=model,
            call_type="internal" if call.key.internal else call.upstream.route.kind,
            api_key_id=call.key.id, model_category=call.upstream.category(call.endpoint),
            endpoint=call.endpoint, status_code=status, input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens, cached_input_tokens=usage.cached_input_tokens,
            reasoning_tokens=usage.reasoning_tokens,
            total_tokens=usage.input_tokens + usage.output_tokens, cost_nano=cost,
            latency_ms=call.elapsed_ms(), ttft_ms=ttft_ms, estimated=usage.estimated,
            metadata=(call.tags or {}) | {"request_id": call.request_id},
        )

    async def _record(self, call: Call, status: int, usage: Usage | None) -> None:
        record = self._make_record(call, status, usage)
        if self.strict:
            await self.recorder.record_and_commit(record)
        else:
            self.recorder.record(record)
        await self._count(call, record)

    async def _count(self, call: Call, record: CallRecord) -> None:
        if record.total_tokens or record.cost_nano:
            await self.limits.count(call.key, record.total_tokens, record.cost_nano,
                                    time.time())

    async def _authenticate(self, header: str) -> StoredKey:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise GatewayError(401, "missing_api_key", "You didn't provide an API key. Send "
                                                       "Authorization: Bearer <key>.")
        try:
            key = await self.key_cache.lookup(secret.strip())
        except Exception as exc:  # a key never seen, and the key store cannot be read
            log.warning("cannot look up an API key: %s", exc.__class__.__name__)
            raise GatewayError(503, "service_unavailable",
                               "The key store cannot be reached; try again shortly.",
                               headers={"Retry-After": "1"}) from None
        if key is None:
            raise GatewayError(401, "invalid_api_key", "Incorrect API key provided.")
        return key


def _request_id() -> str:
    return f"req_{random.getrandbits(128):032x}"


@dataclass(slots=True)
class RequestHeaders:
    """The few request headers the gateway reads, found in one pass over the ASGI list."""

    authorization: str = ""
    content_length: str | None = None
    tags: str | None = None


def _headers_of(scope: Scope) -> RequestHeaders:
    found = RequestHeaders()
    for name, value in scope["headers"]:
        if name == b"authorization":
            found.authorization = value.decode("latin-1")
        elif name == b"content-length":
            found.content_length = value.decode("latin-1")
        elif name == b"x-tallygate-tags":
            found.tags = value.decode("latin-1")
    return found


async def _read_body(receive: Receive, declared: str | None) -> bytes | None:
    """The whole request body, or None if the client disconnected first."""
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise GatewayError(413, "request_too_large",
                           f"The request body is larger than {MAX_BODY_BYTES} bytes.")
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    first: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        if len(first) > MAX_BODY_BYTES:
            raise GatewayError(413, "request_too_large",
                               f"The request body is larger than {MAX_BODY_BYTES} bytes.")
        return first
    body = bytearray(first)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        body.extend(message.get("body", b""))
        if len(body) > MAX_BODY_BYTES:
            raise GatewayError(413, "request_too_large",
                               f"The request body is larger than {MAX_BODY_BYTES} bytes.")
        if not message.get("more_body", False):
            return bytes(body)


def _parse_body(raw: bytes) -> dict[str, Any]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise GatewayError(400, "invalid_json", f"The body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise GatewayError(400, "invalid_request", "The body must be a JSON object.")
    _refuse_look_alikes(body, READ_NAMES, "")
    if "stream" in body and not isinstance(body["stream"], bool):
        raise GatewayError(400, "invalid_type", "stream: must be a boolean", "stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise GatewayError(400, "invalid_type", "stream_options: must be an object",
                           "stream_options")
    if options:
        _refuse_look_alikes(options, ("include_usage",), "stream_options.")
    return body


READ_NAMES = ("model", "stream", "stream_options")


def _refuse_look_alikes(members: dict[str, Any], names: tuple[str, ...], prefix: str) -> None:
    """Some upstreams match names without regard to case (Go's encoding/json: Ollama,
    one-api), so ``"Model"`` would be the model they run while the gateway checks and
    prices ``"model"``: a member that differs from a name the gateway reads only by case is
    refused."""
    for name in members:
        if name not in names and name.casefold() in names:
            raise GatewayError(400, "invalid_request",
                               f"{prefix}{name}: unknown member; the field is "
                               f"{prefix}{name.casefold()}", prefix + name)


# The members the gateway reads, as they appear in JSON. A body that may name one of them
# twice is sent upstream as the gateway parsed it (each member once, the last one given, the
# one it checked and priced) rather than as sent: parsers disagree on which duplicate counts.
# The count is cheap; a message that merely says "model" is a false alarm that costs only
# the encoding.
READ_FIELDS = (b'"model"', b'"stream"', b'"stream_options"', b'"include_usage"')
# A letter or "_" written as an escape (``"\u006dodel"`` is ``"model"``): rare in real
# bodies, and the one way to name a member twice that the count cannot see.
ESCAPED_LETTER = re.compile(rb"\\u00(?:[46][1-9a-fA-F]|[57][0-9aA]|5[fF])")


def _may_repeat_a_read_field(raw: bytes) -> bool:
    return any(raw.count(name) > 1 for name in READ_FIELDS) or (
        b"\\u00" in raw and ESCAPED_LETTER.search(raw) is not None)


def _wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


ASK_FOR_USAGE = b'"stream_options":{"include_usage":true},'


def _upstream_body(raw: bytes, body: dict[str, Any], upstream: Upstream, stream: bool,
                   client_wants_usage: bool) -> bytes:
    """The client's bytes, unless the model must be renamed, usage asked for, or a member
    the gateway reads may be given twice: fields the gateway has never heard of, and numbers
    no parser would keep exactly, pass untouched. Asking for usage where the client sent no
    ``stream_options`` is an insertion; a renamed model, ``stream_options`` to amend or a
    possible duplicate has the body encoded again from what the gateway parsed."""
    rename = upstream.upstream_model != body["model"]
    ask_usage = stream and not client_wants_usage
    encode = rename or _may_repeat_a_read_field(raw)
    if not encode and not ask_usage:
        return raw
    if not encode and "stream_options" not in body:
        start = raw.index(b"{") + 1  # only blanks come before the object's brace
        return raw[:start] + ASK_FOR_USAGE + raw[start:]
    changed = dict(body)
    if rename:
        changed["model"] = upstream.upstream_model
    if ask_usage:
        changed["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
    try:
        return orjson.dumps(changed)
    except orjson.JSONEncodeError:  # deeper than the encoder goes
        raise GatewayError(400, "invalid_request", "The body is nested too deeply.") from None


def _usage_of_body(content: bytes, request_body: dict[str, Any]) -> Usage:
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:
        parsed = None
    usage = parse_usage(parsed.get("usage")) if isinstance(parsed, dict) else None
    if usage is not None:
        return usage
    generated = output_chars(parsed, "message") if isinstance(parsed, dict) else 0
    return _estimate(request_body, generated)


def _estimate(body: dict[str, Any], output_chars: int) -> Usage:
    """What was sent and generated so far, when the upstream reports no usage (or the
    stream ended before its usage chunk)."""
    return Usage(estimate_input_tokens(body), estimate_tokens_of_text(output_chars),
                 estimated=True)


JSON = b"application/json"
EVENT_STREAM = b"text/event-stream; charset=utf-8"


def _content_type(upstream_value: str | None, default: bytes) -> bytes:
    """The upstream's content type, with a charset for text types (as Starlette did)."""
    if not upstream_value:
        return default
    if upstream_value.startswith("text/") and "charset=" not in upstream_value.lower():
        upstream_value += "; charset=utf-8"
    return upstream_value.encode("latin-1")


async def _send_whole(send: Send, status: int, body: bytes, content_type: bytes,
                      request_id: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", content_type),
               (b"x-request-id", request_id.encode())]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _send_error(send: Send, exc: GatewayError, request_id: str) -> None:
    body = orjson.dumps(error_body(exc.status, exc.message, exc.code, exc.param))
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    await _send_whole(send, exc.status, body, JSON, request_id, extra)


async def _send_refusal(send: Send, refusal: Refusal, request_id: str) -> None:
    headers = {} if refusal.retry_after_s is None else {
        "retry-after": str(refusal.retry_after_s)}
    await _send_error(send, GatewayError(refusal.status, refusal.code, refusal.message,
                                         refusal.param, headers), request_id)


async def _client_leaves(receive: Receive) -> None:
    """Returns when the client disconnects (its request body has been read already)."""
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_stream(receive: Receive, send: Send, status: int,
                       headers: list[tuple[bytes, bytes]],
                       chunks: AsyncGenerator[bytes, None]) -> None:
    """Send each piece as it comes. A client that goes away cancels the relay at once (not
    at the next piece, which may be a long time coming), so the upstream call ends too and
    the record says 499."""
    task = asyncio.current_task()
    finished = False
    gone = False

    async def watch_for_disconnect() -> None:
        nonlocal gone
        message: Message = await receive()
        while message["type"] != "http.disconnect":
            message = await receive()
        if not finished and task is not None:
            gone = True
            task.cancel()

    watcher = asyncio.create_task(watch_for_disconnect())
    try:
        await send({"type": "http.response.start", "status": status, "headers": headers})
        async for chunk in chunks:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        finished = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})
    except asyncio.CancelledError:
        if not gone or task is None:
            raise
        task.uncancel()  # our own cancellation: the client left; nothing more to send
    except OSError:
        pass  # a server that reports the disconnect on send (ASGI 2.4): the same
    finally:
        finished = True
        watcher.cancel()
        await chunks.aclose()  # runs the relay's ``finally`` now: the record is made
