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
import collections
import functools
import logging
import random
import re
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import orjson
from starlette.types import Receive, Scope, Send

from tallygate.errors import error_body
from tallygate.gateway.keycache import KeyCache
from tallygate.gateway.limits import Limits, Refusal
from tallygate.gateway.sse import StreamWatcher
from tallygate.gateway.streaming import (
    CLIENT_CLOSED,
    UPSTREAM_ERRORS,
    Drain,
    relay_stream,
)
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
    body_bytes: int  # what an estimate falls back on when the body cannot be walked
    tags: dict[str, Any] | None
    upstream_model: str | None = None  # the model the upstream says it ran

    def elapsed_ms(self) -> int:
        return int((time.perf_counter() - self.started) * 1000)


class Gateway:
    def __init__(self, *, ledger: Ledger, recorder: Recorder, key_cache: KeyCache,
                 limits: Limits, client: aiohttp.ClientSession,
                 upstreams: dict[str, Upstream],
                 strict: bool, drain: Drain | None = None) -> None:
        self.ledger = ledger
        self.recorder = recorder
        self.key_cache = key_cache
        self.limits = limits
        self.client = client
        self.upstreams = upstreams
        self.strict = strict
        self.drain = drain or Drain()
        # Streams settling (draining, recording, counting) in tasks of their own: a reference
        # keeps each one alive should its request be cancelled before it is done.
        self.settling: set[asyncio.Task[None]] = set()
        # Free calls relayed but kept out of the ledger (Anthropic's count_tokens), by
        # endpoint, model and status: /metrics shows them.
        self.unrecorded: collections.Counter[tuple[str, str, int]] = collections.Counter()

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
            if upstream is not None and upstream.route.protocol != "openai":
                raise GatewayError(404, "model_not_found",
                                   f"The model {model!r} speaks Anthropic's Messages API: "
                                   "call POST /v1/messages.", "model")
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
        call = Call(request_id, started, ts_us, endpoint, key, upstream, body, len(raw), tags)
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
        usage = _usage_of_body(content, call) if status < 400 else None
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
        start = {"type": "http.response.start", "status": response.status, "headers": [
            (b"content-type", _content_type(content_type, EVENT_STREAM)),
            (b"x-request-id", call.request_id.encode()), (b"cache-control", b"no-cache")]}
        await relay_stream(response, StreamWatcher(drop_usage_chunk=drop_usage), receive, send,
                           start, started=call.started, strict=self.strict, drain=self.drain,
                           event_stream=(content_type or EVENT_STREAM_TYPE).startswith(
                               EVENT_STREAM_TYPE),
                           settle=functools.partial(self._settle_stream, call),
                           settling=self.settling)

    async def _settle_stream(self, call: Call, status: int, watcher: StreamWatcher,
                             ttft_ms: int | None) -> None:
        usage = watcher.usage or _estimate(call, watcher.content_chars)
        # A client that left waits for no commit; every other record is held to it.
        await self._record(call, status, usage, ttft_ms,
                           commit=self.strict and status != CLIENT_CLOSED)

    # -- metering ----------------------------------------------------------------------------

    def _make_record(self, call: Call, status: int, usage: Usage | None,
                     ttft_ms: int | None = None) -> CallRecord:
        usage = usage or Usage()
        model = call.upstream.model
        cost = self.ledger.cost_of(model, call.ts_us, usage.input_tokens,
                                   usage.cached_input_tokens, usage.output_tokens, status,
                                   call.key.id, cache_write_tokens=usage.cache_write_tokens)
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
            cache_write_tokens=usage.cache_write_tokens, upstream_model=call.upstream_model,
        )

    async def _record(self, call: Call, status: int, usage: Usage | None,
                      ttft_ms: int | None = None, *, commit: bool | None = None) -> None:
        """Record the call and count it against the key's limits. Total: whatever fails here
        is logged, and a record is still made if at all possible (the client's answer is
        not held up by the gateway's own bookkeeping)."""
        try:
            record = self._make_record(call, status, usage, ttft_ms)
        except Exception:
            log.exception("cannot make the record of %s; recording an estimate",
                          call.request_id)
            try:
                fallback = Usage(estimate_tokens_of_text(call.body_bytes), 0, estimated=True)
                record = self._make_record(call, status, fallback, ttft_ms)
            except Exception:
                log.exception("cannot make any record of %s", call.request_id)
                return
        try:
            if self.strict if commit is None else commit:
                await self.recorder.record_and_commit(record)
            else:
                self.recorder.record(record)
        except Exception:
            log.exception("cannot record %s", call.request_id)
        try:
            await self._count(call, record)
        except Exception:
            log.exception("cannot count %s against its key's limits", call.request_id)

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


def _usage_of_body(content: bytes, call: Call) -> Usage:
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:  # also invalid UTF-8, and nesting past orjson's depth
        parsed = None
    generated = 0
    try:
        if isinstance(parsed, dict):
            usage = parse_usage(parsed.get("usage"))
            if usage is not None:
                return usage
            generated = output_chars(parsed, "message")
    except Exception:  # an answer of a shape never met: estimated from what was sent
        log.exception("cannot read the usage of %s", call.request_id)
    return _estimate(call, generated)


def _estimate(call: Call, output_chars: int) -> Usage:
    """What was sent and generated so far, when the upstream reports no usage (or the
    stream ended before its usage chunk). Should the body defeat the estimator, its length
    in bytes stands for its text."""
    try:
        input_tokens = estimate_input_tokens(call.body)
    except Exception:
        log.exception("cannot estimate the input of %s", call.request_id)
        input_tokens = estimate_tokens_of_text(call.body_bytes)
    return Usage(input_tokens, estimate_tokens_of_text(output_chars), estimated=True)


JSON = b"application/json"
EVENT_STREAM_TYPE = "text/event-stream"
EVENT_STREAM = b"text/event-stream; charset=utf-8"


def _content_type(upstream_value: str | None, default: bytes) -> bytes:
    """The upstream's content type, with a charset for text types (as Starlette did)."""
    if not upstream_value:
        return default
    if upstream_value.startswith("text/") and "charset=" not in upstream_value.lower():
        upstream_value += "; charset=utf-8"
    # A header value can only carry latin-1; what an upstream sent beyond it cannot be
    # passed on, and must not stop the call on its way to the client and the ledger.
    return upstream_value.encode("latin-1", "replace")


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
