"""The OpenAI-compatible endpoints: authenticate, check limits, forward, meter, record.

What sets one endpoint apart from another (where it goes upstream, how its body is read, how
it streams and is metered) is in ``endpoints.ENDPOINTS``; this module runs a call through
them: a JSON body (requests.py), a form upload streamed through (multipart.py), or a custom
service route's body passed on as it is. Streams are passed through event by event
(streaming.py); every call ends in one record (recording.py).

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
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from multidict import CIMultiDict
from starlette.types import Receive, Scope, Send

from tallygate.domain.records import now_us
from tallygate.gateway.answers import (
    CREDENTIAL_REFUSED,
    CREDENTIAL_REFUSED_ERROR,
    EVENT_STREAM,
    EVENT_STREAM_TYPE,
    JSON,
    UPSTREAM_BUSY_ERROR,
    answered_status,
    content_type,
    request_id,
    send_error,
    send_refusal,
    send_whole,
)
from tallygate.gateway.endpoints import ENDPOINTS, Endpoint
from tallygate.gateway.keycache import KeyCache, LookupRefused
from tallygate.gateway.limits import Limits
from tallygate.gateway.metering import service_reader
from tallygate.gateway.multipart import ClientGone, Upload, read_form_head
from tallygate.gateway.recording import Bookkeeper, Call, estimate, usage_of_answer
from tallygate.gateway.requests import (
    GatewayError,
    headers_of,
    idle_bounded,
    parse_body,
    parse_tags,
    read_body,
    request_timeout,
    upstream_body,
    wants_usage,
)
from tallygate.gateway.sse import MAX_EVENT_BYTES, PassThrough, StreamWatcher
from tallygate.gateway.streaming import CLIENT_CLOSED, UPSTREAM_ERRORS, Drain, relay_stream
from tallygate.gateway.upstream import Upstream, UpstreamBusy, post_upstream
from tallygate.ledger.recorder import Recorder
from tallygate.ledger.service import Ledger
from tallygate.store.keys import StoredKey

log = logging.getLogger("tallygate.gateway")

# A binary answer (speech) is billed by its request: nothing is read after its client left.
NO_DRAIN = Drain(0, 0)
SERVICE = Endpoint("", "")  # a custom service route: its path and reader are the route's


class Gateway:
    def __init__(self, *, ledger: Ledger, recorder: Recorder, key_cache: KeyCache,
                 limits: Limits, client: aiohttp.ClientSession,
                 upstreams: dict[str, Upstream],
                 strict: bool, drain: Drain | None = None,
                 client_idle_s: float = 60.0,
                 sse_max_event_bytes: int = MAX_EVENT_BYTES) -> None:
        self.ledger = ledger
        self.recorder = recorder
        self.key_cache = key_cache
        self.limits = limits
        self.client = client
        self.upstreams = upstreams
        # Custom service routes, by the path they are served at.
        self.services = {upstream.route.path: upstream for upstream in upstreams.values()
                         if upstream.route.path is not None}
        self.strict = strict
        self.drain = drain or Drain()
        self.client_idle_s = client_idle_s  # client_idle_timeout_s
        self.sse_max_event_bytes = sse_max_event_bytes
        self.books = Bookkeeper(ledger, recorder, limits, strict)
        # Streams settling (draining, recording, counting) in tasks of their own: a reference
        # keeps each one alive should its request be cancelled before it is done.
        self.settling: set[asyncio.Task[None]] = set()
        # Free calls relayed but kept out of the ledger (Anthropic's count_tokens), by
        # endpoint, model and status: /metrics shows them.
        self.unrecorded: collections.Counter[tuple[str, str, int]] = collections.Counter()

    # -- endpoints ---------------------------------------------------------------------------

    async def models(self, scope: Scope, receive: Receive, send: Send) -> None:
        rid = request_id()
        try:
            key = await self._authenticate(headers_of(scope).authorization, scope)
        except GatewayError as exc:
            await send_error(send, exc, rid)
            return
        client = scope.get("client")
        refusal = self.limits.check_key(key, None, client[0] if client else None, time.time())
        if refusal is not None:  # a disabled key, or from elsewhere, learns nothing more
            await send_refusal(send, refusal, rid)
            return
        data = [{"id": name, "object": "model", "created": 0,
                 "owned_by": upstream.route.kind}
                for name, upstream in sorted(self.upstreams.items())
                if key.allowed_models is None or name in key.allowed_models]
        await send_whole(send, 200, orjson.dumps({"object": "list", "data": data}),
                         JSON, rid)

    async def forward(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An endpoint whose request is a JSON object naming its model."""
        rid = request_id()
        started = time.perf_counter()
        ts_us = now_us()
        spec = ENDPOINTS[scope["path"]]
        headers = headers_of(scope)
        try:
            key = await self._authenticate(headers.authorization, scope)
            raw = await read_body(idle_bounded(receive, self.client_idle_s),
                                  headers.content_length)
            if raw is None:
                return  # the client went away before its request was complete
            body = parse_body(raw)
            upstream = self._route(body.get("model"))
            tags = parse_tags(headers.tags)
            stream = body.get("stream") is True and spec.streams
            client_wants_usage = wants_usage(body)
            forwarded = upstream_body(raw, body, upstream, stream and spec.asks_usage,
                                      client_wants_usage)
        except GatewayError as exc:
            await send_error(send, exc, rid)
            return
        call = Call(rid, started, ts_us, spec, key, upstream, body, len(raw), tags,
                    spec.read_usage, None if spec.usage_of_request is None
                    else spec.usage_of_request(body))
        if not await self._allowed(call, scope, send):
            return
        url = upstream.endpoint_url(spec.suffix)
        if spec.binary_answer:
            await self._stream(call, url, forwarded, receive, send, PassThrough(),
                               upstream.request_headers, drain=NO_DRAIN)
        elif stream:
            watcher = spec.watcher(drop_usage_chunk=spec.asks_usage and not client_wants_usage)
            await self._stream(call, url, forwarded, receive, send, watcher,
                               upstream.request_headers)
        else:
            await self._plain(call, url, forwarded, receive, send, upstream.request_headers)

    async def forward_form(self, scope: Scope, receive: Receive, send: Send) -> None:
        """An upload (multipart/form-data) with a model field and a file: read as far as
        both, then streamed through (multipart.py)."""
        rid = request_id()
        started = time.perf_counter()
        ts_us = now_us()
        spec = ENDPOINTS[scope["path"]]
        headers = headers_of(scope)
        try:
            key = await self._authenticate(headers.authorization, scope)
            head = await read_form_head(idle_bounded(receive, self.client_idle_s),
                                        headers.content_type)
            model = head.fields["model"]
            upstream = self._route(model)
            tags = parse_tags(headers.tags)
        except GatewayError as exc:
            await send_error(send, exc, rid)
            return
        except ClientGone:
            return
        first = bytes(head.held) if upstream.upstream_model == model else head.with_model(
            upstream.upstream_model)
        upload = Upload(first, receive, more=not head.ended, idle_s=self.client_idle_s)
        sent_headers = _upload_headers(upstream, headers.content_type, headers.content_length,
                                       len(first) - len(head.held))
        # An upload's bytes are audio, not text: no estimate is ever made from them.
        call = Call(rid, started, ts_us, spec, key, upstream, {}, 0, tags, spec.read_usage)
        if not await self._allowed(call, scope, send):
            return
        url = upstream.endpoint_url(spec.suffix)
        if spec.streams and head.fields.get("stream", "").strip().lower() == "true":
            await self._stream(call, url, upload.chunks(), receive, send, spec.watcher(),
                               sent_headers, upload=upload)
        else:
            await self._plain(call, url, upload.chunks(), receive, send, sent_headers,
                              upload=upload)

    async def forward_service(self, scope: Scope, receive: Receive, send: Send) -> None:
        """A custom service route (``path`` in its route): the request is passed on as it
        is, to the route's base URL plus the path after ``/v1``; the route names the model."""
        rid = request_id()
        started = time.perf_counter()
        ts_us = now_us()
        path: str = scope["path"]
        upstream = self.services[path]
        headers = headers_of(scope)
        try:
            key = await self._authenticate(headers.authorization, scope)
            tags = parse_tags(headers.tags)
            message = await idle_bounded(receive, self.client_idle_s)()
        except GatewayError as exc:
            await send_error(send, exc, rid)
            return
        if message["type"] == "http.disconnect":
            return
        upload = Upload(message.get("body", b""), receive, more=message.get("more_body", False),
                        idle_s=self.client_idle_s)
        route = upstream.route
        call = Call(rid, started, ts_us, SERVICE, key, upstream, {}, 0, tags,
                    service_reader(route.unit or "request", route.units_from), path=path)
        if not await self._allowed(call, scope, send):
            return
        url = upstream.url(path.removeprefix("/v1"))
        if scope.get("query_string"):
            url += "?" + scope["query_string"].decode("latin-1")
        await self._plain(call, url, upload.chunks(), receive, send,
                          _upload_headers(upstream, headers.content_type,
                                          headers.content_length, 0), upload=upload)

    # -- forwarding --------------------------------------------------------------------------

    def _route(self, model: Any) -> Upstream:
        if not isinstance(model, str) or not model:
            raise GatewayError(400, "invalid_request", "model: a model name is required",
                               "model")
        upstream = self.upstreams.get(model)
        if upstream is None:
            raise GatewayError(404, "model_not_found", f"The model {model!r} does not exist "
                                                       "or is not routed here.", "model")
        if upstream.route.protocol != "openai":
            raise GatewayError(404, "model_not_found", f"The model {model!r} speaks "
                                                       "Anthropic's Messages API: call POST "
                                                       "/v1/messages.", "model")
        return upstream

    async def _allowed(self, call: Call, scope: Scope, send: Send) -> bool:
        """The key's limits; a refusal is recorded and answered."""
        client = scope.get("client")
        refusal = await self.limits.check(call.key, call.upstream.model,
                                          client[0] if client else None, time.time(),
                                          call.request_id)
        if refusal is None:
            call.holds_slot = call.key.max_concurrency is not None
            return True
        await self.books.record_refusal(call, refusal.status)
        await send_refusal(send, refusal, call.request_id)
        return False

    async def _plain(self, call: Call, url: Any, body: bytes | AsyncIterator[bytes],
                     receive: Receive, send: Send, headers: Any, *,
                     upload: Upload | None = None) -> None:
        # A client that leaves while the upstream works is noticed, but the upstream call
        # runs to its end: it is billed either way, and only its answer says for how much.
        left = asyncio.ensure_future(_client_leaves(receive, upload))
        try:
            async with await post_upstream(self.client, url, data=body,
                                           headers=headers) as response:
                content = await response.read()
                status = response.status
                upstream_type = response.headers.get("content-type")
        except (*UPSTREAM_ERRORS, ClientGone) as exc:
            if upload is not None and upload.gone:  # the client left mid-upload
                await self._upload_stopped(call, upload, send)
                return
            await self._upstream_failed(call, exc, send)
            return
        finally:
            gone = left.done() and not left.cancelled() and left.exception() is None
            left.cancel()
        usage = usage_of_answer(content, call) if status < 400 else None
        # An upstream's own failure stays one in the ledger (for its error rate), whether or
        # not the client waited for it; a success nobody received is the client's 499.
        await self.books.record(call, CLIENT_CLOSED if gone and status < 400
                                else answered_status(call.upstream.model, status), usage)
        if not gone:
            await self._send_answer(send, status, content, upstream_type, call.request_id)

    @staticmethod
    async def _send_answer(send: Send, status: int, content: bytes, upstream_type: str | None,
                           rid: str) -> None:
        """The upstream's answer as it came, unless it refused the gateway's credential."""
        if status in CREDENTIAL_REFUSED:
            await send_error(send, CREDENTIAL_REFUSED_ERROR, rid)
            return
        await send_whole(send, status, content, content_type(upstream_type, JSON), rid)

    async def _upload_stopped(self, call: Call, upload: Upload, send: Send) -> None:
        """The client left mid-upload (499), or paused past client_idle_timeout_s (408)."""
        if not upload.timed_out:
            await self.books.record(call, CLIENT_CLOSED, None)
            return
        error = request_timeout(self.client_idle_s)
        await self.books.record(call, error.status, None)
        await send_error(send, error, call.request_id)

    async def _upstream_failed(self, call: Call, exc: BaseException, send: Send) -> None:
        if isinstance(exc, UpstreamBusy):
            await self.books.record(call, UPSTREAM_BUSY_ERROR.status, None)
            await send_error(send, UPSTREAM_BUSY_ERROR, call.request_id)
            return
        if isinstance(exc, TimeoutError):
            await self.books.record(call, 504, None)
            await send_error(send, GatewayError(504, "upstream_timeout",
                                                "The upstream did not answer in time."),
                             call.request_id)
            return
        log.warning("upstream %s failed: %s", call.upstream.model, exc.__class__.__name__)
        await self.books.record(call, 502, None)
        await send_error(send, GatewayError(502, "upstream_error",
                                            "The upstream could not be reached."),
                         call.request_id)

    async def _stream(self, call: Call, url: Any, body: bytes | AsyncIterator[bytes],
                      receive: Receive, send: Send, watcher: StreamWatcher, headers: Any, *,
                      drain: Drain | None = None, upload: Upload | None = None) -> None:
        try:
            response = await post_upstream(self.client, url, data=body, headers=headers)
        except (*UPSTREAM_ERRORS, ClientGone) as exc:
            if upload is not None and upload.gone:
                await self._upload_stopped(call, upload, send)
                return
            await self._upstream_failed(call, exc, send)
            return
        upstream_type = response.headers.get("content-type")
        if response.status >= 400:
            try:
                content = await response.read()
            except UPSTREAM_ERRORS as exc:
                await self._upstream_failed(call, exc, send)
                return
            finally:
                response.release()
            await self.books.record(call, answered_status(call.upstream.model,
                                                          response.status), None)
            await self._send_answer(send, response.status, content, upstream_type,
                                    call.request_id)
            return
        default_type = b"application/octet-stream" if isinstance(watcher, PassThrough) \
            else EVENT_STREAM
        start = {"type": "http.response.start", "status": response.status, "headers": [
            (b"content-type", content_type(upstream_type, default_type)),
            (b"x-request-id", call.request_id.encode()), (b"cache-control", b"no-cache")]}
        event_stream = not isinstance(watcher, PassThrough) and (
            upstream_type or EVENT_STREAM_TYPE).startswith(EVENT_STREAM_TYPE)
        watcher.max_event_bytes = self.sse_max_event_bytes
        await relay_stream(response, watcher, receive, send, start, started=call.started,
                           strict=self.strict, drain=drain or self.drain,
                           event_stream=event_stream,
                           settle=functools.partial(self._settle_stream, call),
                           settling=self.settling, idle_s=self.client_idle_s,
                           uploaded=None if upload is None else upload.done)

    async def _settle_stream(self, call: Call, status: int, watcher: StreamWatcher,
                             ttft_ms: int | None) -> None:
        call.upstream_model = watcher.upstream_model
        usage = call.request_usage or watcher.usage or estimate(call, watcher.content_chars)
        # A client that left waits for no commit; every other record is held to it.
        await self.books.record(call, status, usage, ttft_ms,
                                commit=self.strict and status != CLIENT_CLOSED)

    async def _authenticate(self, header: str, scope: Scope) -> StoredKey:
        scheme, _, secret = header.partition(" ")
        if scheme.lower() != "bearer" or not secret.strip():
            raise GatewayError(401, "missing_api_key", "You didn't provide an API key. Send "
                                                       "Authorization: Bearer <key>.")
        client = scope.get("client")
        try:
            key = await self.key_cache.lookup(secret.strip(), client[0] if client else None)
        except LookupRefused as exc:  # a flood of made-up keys: answered without a read
            raise GatewayError(exc.status, "too_many_unknown_keys",
                               "Too many look-ups of unknown API keys from this address; "
                               "try again shortly.", headers={"Retry-After": "1"}) from None
        except Exception as exc:  # a key never seen, and the key store cannot be read
            log.warning("cannot look up an API key: %s", exc.__class__.__name__)
            raise GatewayError(503, "service_unavailable",
                               "The key store cannot be reached; try again shortly.",
                               headers={"Retry-After": "1"}) from None
        if key is None:
            raise GatewayError(401, "invalid_api_key", "Incorrect API key provided.")
        return key


def _upload_headers(upstream: Upstream, client_type: str | None, client_length: str | None,
                    grown_by: int) -> CIMultiDict[str]:
    """The route's headers, with the client's content type and length (the body is the
    client's, ``grown_by`` bytes longer where the model was renamed)."""
    headers = CIMultiDict(upstream.request_headers)
    if client_type:
        headers["content-type"] = client_type
    else:
        headers.popall("content-type", None)
    if client_length is not None and client_length.isdigit():
        headers["content-length"] = str(int(client_length) + grown_by)
    return headers


async def _client_leaves(receive: Receive, upload: Upload | None = None) -> None:
    """Returns when the client disconnects; waits first for its request body to be read (by
    the upload, for one passed upstream as it arrives)."""
    if upload is not None:
        await upload.done.wait()
    while (await receive())["type"] != "http.disconnect":
        pass
