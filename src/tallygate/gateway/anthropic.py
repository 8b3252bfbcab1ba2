"""Anthropic's Messages API: ``POST /v1/messages`` and ``POST /v1/messages/count_tokens``.

Served for routes with ``protocol = "anthropic"`` only (a route speaks one API: an Anthropic
route is refused on the OpenAI endpoints and an OpenAI route here, each with a 404 that says
where the model is served). The pieces are the OpenAI endpoints' (gateway/requests.py: the
body reading; gateway/recording.py: the record; gateway/streaming.py: the relay that settles a
stream whatever its client does); what differs is said here:

- the client authenticates with ``x-api-key: <tallygate key>`` or ``Authorization: Bearer``;
- the upstream gets the route's credential as ``x-api-key`` (never the client's key),
  ``anthropic-version`` as the client sent it (``2023-06-01`` when it sent none: Anthropic
  refuses a request without one, and it is the version whose events the gateway reads) and
  ``anthropic-beta`` when the client sent it; no other client header goes upstream;
- errors are in Anthropic's shape, ``{"type": "error", "error": {"type", "message"}}``, on
  the statuses the OpenAI endpoints use; a stream that breaks ends with an ``event: error``;
- a stream is whole with its ``message_stop`` event; the usage is read as
  gateway/anthropic_usage.py says.

``count_tokens`` is free and is not recorded in the ledger: it bills nothing, clients (coding
agents) call it before many messages, and the provider's own usage report has no such
requests, so recording it would inflate the call counts and break reconciliation. It is
counted in ``/metrics`` (``tallygate_unrecorded_requests_total``) instead; the key's limits
and model permissions apply to it as to any call.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from dataclasses import dataclass
from typing import Any, ClassVar

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
    send_whole,
)
from tallygate.gateway.answers import content_type as _content_type
from tallygate.gateway.answers import request_id as _request_id
from tallygate.gateway.anthropic_usage import (
    MessageWatcher,
    content_chars,
    estimate_message_input,
    usage_of_message,
)
from tallygate.gateway.endpoints import Endpoint
from tallygate.gateway.limits import Refusal
from tallygate.gateway.proxy import Gateway, _client_leaves
from tallygate.gateway.recording import Call
from tallygate.gateway.requests import (
    GatewayError,
    RequestHeaders,
    idle_bounded,
    parse_body,
    parse_tags,
    read_body,
    scan_headers,
    upstream_body,
)
from tallygate.gateway.streaming import (
    CLIENT_CLOSED,
    UPSTREAM_ERRORS,
    StreamProgress,
    relay_stream,
    stream_failure,
)
from tallygate.gateway.upstream import Upstream, UpstreamBusy, post_upstream
from tallygate.gateway.usage import Usage, estimate_tokens_of_text
from tallygate.store.keys import StoredKey

log = logging.getLogger("tallygate.gateway")

MESSAGES = "/v1/messages"
COUNT_TOKENS = "/v1/messages/count_tokens"
DEFAULT_VERSION = "2023-06-01"
ERROR_TYPES = {400: "invalid_request_error", 401: "authentication_error",
               403: "permission_error", 404: "not_found_error", 413: "request_too_large",
               429: "rate_limit_error", 503: "overloaded_error", 529: "overloaded_error"}


def _message_usage(answer: dict[str, Any]) -> Usage | None:
    return usage_of_message(answer)[0]


# The record's endpoint and what reads its answer (this module reads it, with the cache-write
# split as well: see _usage_of_answer); not in endpoints.ENDPOINTS, whose calls are OpenAI's.
MESSAGES_ENDPOINT = Endpoint(MESSAGES, "/messages", streams=True, watcher=MessageWatcher,
                             read_usage=_message_usage)


@dataclass(slots=True)
class MessageHeaders(RequestHeaders):
    """The request headers this endpoint reads: the gateway's, and Anthropic's own."""

    FIELDS: ClassVar[dict[bytes, str]] = {
        **RequestHeaders.FIELDS, b"x-api-key": "api_key", b"anthropic-version": "version",
        b"anthropic-beta": "beta"}
    # Repeated, anthropic-beta is one comma-separated list.
    JOINED: ClassVar[frozenset[str]] = frozenset({"beta"})

    api_key: str = ""
    version: str | None = None
    beta: str | None = None


def _headers_of(scope: Scope) -> MessageHeaders:
    return scan_headers(scope, MessageHeaders())


# -- the endpoints (app.py calls them with the gateway) ----------------------------------------

async def messages(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    request_id = _request_id()
    started = time.perf_counter()
    ts_us = now_us()
    headers = _headers_of(scope)
    try:
        key = await _authenticate(gateway, headers, scope)
        raw = await read_body(idle_bounded(receive, gateway.client_idle_s),
                              headers.content_length)
        if raw is None:
            return  # the client went away before its request was complete
        body = parse_body(raw)
        upstream = _route_of(gateway, body)
        tags = parse_tags(headers.tags)
        stream = body.get("stream") is True
        # Renamed when the route says so; never given stream_options (not Anthropic's).
        forwarded = upstream_body(raw, body, upstream, False, True)
    except GatewayError as exc:
        await _send_error(send, exc, request_id)
        return
    call = Call(request_id, started, ts_us, MESSAGES_ENDPOINT, key, upstream, body, len(raw),
                tags, MESSAGES_ENDPOINT.read_usage)
    refusal = await gateway.limits.check(key, upstream.model, _client_ip(scope), time.time(),
                                         request_id)
    if refusal is not None:
        await gateway.books.record_refusal(call, refusal.status)
        await _send_refusal(send, refusal, request_id)
        return
    call.holds_slot = key.max_concurrency is not None
    url = upstream.endpoint_url(MESSAGES_ENDPOINT.suffix)
    upstream_headers = _upstream_headers(upstream, headers)
    if stream:
        await _stream(gateway, call, url, forwarded, upstream_headers, receive, send)
    else:
        await _plain(gateway, call, url, forwarded, upstream_headers, receive, send)


async def count_tokens(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    request_id = _request_id()
    headers = _headers_of(scope)
    try:
        key = await _authenticate(gateway, headers, scope)
        raw = await read_body(idle_bounded(receive, gateway.client_idle_s),
                              headers.content_length)
        if raw is None:
            return
        body = parse_body(raw)
        upstream = _route_of(gateway, body)
        forwarded = upstream_body(raw, body, upstream, False, True)
    except GatewayError as exc:
        await _send_error(send, exc, request_id)
        return
    refusal = await gateway.limits.check(key, upstream.model, _client_ip(scope), time.time())
    if refusal is not None:
        gateway.unrecorded[(COUNT_TOKENS, upstream.model, refusal.status)] += 1
        await _send_refusal(send, refusal, request_id)
        return
    try:
        async with await post_upstream(
                gateway.client, upstream.endpoint_url("/messages/count_tokens"),
                data=forwarded, headers=_upstream_headers(upstream, headers)) as response:
            content = await response.read()
            status = response.status
            content_type = response.headers.get("content-type")
    except UPSTREAM_ERRORS as exc:
        error = _upstream_failure(upstream, exc)
        gateway.unrecorded[(COUNT_TOKENS, upstream.model, error.status)] += 1
        await _send_error(send, error, request_id)
        return
    answered = _answered_status(upstream, status)
    gateway.unrecorded[(COUNT_TOKENS, upstream.model, answered)] += 1
    await _send_answer(send, status, content, content_type, request_id)


# -- forwarding ----------------------------------------------------------------------------------

async def _plain(gateway: Gateway, call: Call, url: Any, body: bytes,
                 upstream_headers: CIMultiDict[str], receive: Receive, send: Send) -> None:
    # As for the OpenAI endpoints: a client that leaves does not stop the upstream's work,
    # which is billed either way; only its answer says for how much.
    left = asyncio.ensure_future(_client_leaves(receive))
    try:
        async with await post_upstream(gateway.client, url, data=body,
                                       headers=upstream_headers) as response:
            content = await response.read()
            status = response.status
            content_type = response.headers.get("content-type")
    except UPSTREAM_ERRORS as exc:
        error = _upstream_failure(call.upstream, exc)
        await gateway.books.record(call, error.status, None)
        await _send_error(send, error, call.request_id)
        return
    finally:
        gone = left.done() and not left.cancelled() and left.exception() is None
        left.cancel()
    usage = _usage_of_answer(content, call) if status < 400 else None
    answered = _answered_status(call.upstream, status)
    await gateway.books.record(call, CLIENT_CLOSED if gone and status < 400 else answered,
                               usage)
    if not gone:
        await _send_answer(send, status, content, content_type, call.request_id)


async def _stream(gateway: Gateway, call: Call, url: Any, body: bytes,
                  upstream_headers: CIMultiDict[str], receive: Receive, send: Send) -> None:
    try:
        response = await post_upstream(gateway.client, url, data=body,
                                        headers=upstream_headers)
    except UPSTREAM_ERRORS as exc:
        error = _upstream_failure(call.upstream, exc)
        await gateway.books.record(call, error.status, None)
        await _send_error(send, error, call.request_id)
        return
    content_type = response.headers.get("content-type")
    if response.status >= 400:
        try:
            content = await response.read()
        except UPSTREAM_ERRORS as exc:
            error = _upstream_failure(call.upstream, exc)
            await gateway.books.record(call, error.status, None)
            await _send_error(send, error, call.request_id)
            return
        finally:
            response.release()
        await gateway.books.record(call, _answered_status(call.upstream, response.status),
                                   None)
        await _send_answer(send, response.status, content, content_type, call.request_id)
        return
    start = {"type": "http.response.start", "status": response.status, "headers": [
        (b"content-type", _content_type(content_type, EVENT_STREAM)),
        *_id_headers(call.request_id), (b"cache-control", b"no-cache")]}
    watcher = MessageWatcher(drop_usage_chunk=False, max_event_bytes=gateway.sse_max_event_bytes)
    await relay_stream(response, watcher, receive, send, start, started=call.started,
                       strict=gateway.strict, drain=gateway.drain,
                       event_stream=(content_type or EVENT_STREAM_TYPE).startswith(
                           EVENT_STREAM_TYPE),
                       settle=functools.partial(_settle_stream, gateway, call),
                       settling=gateway.settling, idle_s=gateway.client_idle_s,
                       error_event=functools.partial(_error_event, watcher))


async def _settle_stream(gateway: Gateway, call: Call, status: int, watcher: MessageWatcher,
                         ttft_ms: int | None) -> None:
    try:
        usage = watcher.settled_usage(call.body, call.body_bytes)
        _note_answer(call, watcher.upstream_model, watcher.reported.split)
    except Exception:  # never met; the record is made all the same
        log.exception("cannot read the usage of %s", call.request_id)
        usage = Usage(estimate_tokens_of_text(call.body_bytes), 0, estimated=True)
    await gateway.books.record(call, status, usage, ttft_ms,
                               commit=gateway.strict and status != CLIENT_CLOSED)


def _error_event(watcher: MessageWatcher, progress: StreamProgress) -> bytes:
    """Anthropic's stream error (``event: error``; the SDK raises it), unless the upstream's
    own error event was relayed already."""
    if watcher.upstream_error:
        return b""
    status, _, message = stream_failure(progress)
    return b"event: error\ndata: " + error_json(status, message) + b"\n\n"


# -- metering ------------------------------------------------------------------------------------

def _usage_of_answer(content: bytes, call: Call) -> Usage:
    try:
        parsed = orjson.loads(content)
    except orjson.JSONDecodeError:  # also invalid UTF-8, and nesting past orjson's depth
        parsed = None
    generated = 0
    try:
        usage, split, model = usage_of_message(parsed)
        _note_answer(call, model, split)
        if usage is not None:
            return usage
        if isinstance(parsed, dict):
            generated = content_chars(parsed.get("content"))
    except Exception:  # an answer of a shape never met: estimated from what was sent
        log.exception("cannot read the usage of %s", call.request_id)
    try:
        input_tokens = estimate_message_input(call.body)
    except Exception:
        log.exception("cannot estimate the input of %s", call.request_id)
        input_tokens = estimate_tokens_of_text(call.body_bytes)
    return Usage(input_tokens, estimate_tokens_of_text(generated), estimated=True)


def _note_answer(call: Call, model: str | None, split: dict[str, int]) -> None:
    """What the record keeps of the answer besides its usage: the model the upstream ran,
    and the cache writes by lifetime (in ``metadata``, beside the tags)."""
    call.upstream_model = model
    if split:
        call.tags = (call.tags or {}) | split


# -- the client's side ---------------------------------------------------------------------------

async def _authenticate(gateway: Gateway, headers: MessageHeaders, scope: Scope) -> StoredKey:
    secret = headers.api_key.strip()
    if not secret:
        scheme, _, token = headers.authorization.partition(" ")
        secret = token.strip() if scheme.lower() == "bearer" else ""
    if not secret:
        raise GatewayError(401, "missing_api_key", "You didn't provide an API key. Send "
                                                   "x-api-key: <key> (or Authorization: "
                                                   "Bearer <key>).")
    return await gateway._authenticate(f"Bearer {secret}", scope)


def _route_of(gateway: Gateway, body: dict[str, Any]) -> Upstream:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise GatewayError(400, "invalid_request", "model: a model name is required", "model")
    upstream = gateway.upstreams.get(model)
    if upstream is not None and upstream.route.protocol != "anthropic":
        raise GatewayError(404, "model_not_found",
                           f"model: {model!r} speaks OpenAI's API, not Anthropic's Messages "
                           "API: call POST /v1/chat/completions.", "model")
    if upstream is None:
        raise GatewayError(404, "model_not_found", f"model: {model!r} does not exist or is "
                                                   "not routed here.", "model")
    return upstream


def _client_ip(scope: Scope) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


def _upstream_headers(upstream: Upstream, headers: MessageHeaders) -> CIMultiDict[str]:
    """Built afresh from the route and the two Anthropic headers: the client's key (in
    x-api-key or Authorization) can never ride along."""
    built = CIMultiDict({"content-type": "application/json",
                         "anthropic-version": headers.version or DEFAULT_VERSION})
    if upstream.credential:
        built["x-api-key"] = upstream.credential
    if headers.beta:
        built["anthropic-beta"] = headers.beta
    return built


def _answered_status(upstream: Upstream, status: int) -> int:
    return answered_status(upstream.model, status)


async def _send_answer(send: Send, status: int, content: bytes, content_type: str | None,
                       request_id: str) -> None:
    if status in CREDENTIAL_REFUSED:
        await _send_error(send, CREDENTIAL_REFUSED_ERROR, request_id)
        return
    await send_whole(send, status, content, _content_type(content_type, JSON), request_id,
                     [(b"request-id", request_id.encode())])


def _upstream_failure(upstream: Upstream, exc: BaseException) -> GatewayError:
    if isinstance(exc, UpstreamBusy):
        return UPSTREAM_BUSY_ERROR
    if isinstance(exc, TimeoutError):
        return GatewayError(504, "upstream_timeout", "The upstream did not answer in time.")
    log.warning("upstream %s failed: %s", upstream.model, exc.__class__.__name__)
    return GatewayError(502, "upstream_error", "The upstream could not be reached.")


def error_json(status: int, message: str) -> bytes:
    return orjson.dumps({"type": "error", "error": {
        "type": ERROR_TYPES.get(status, "api_error"), "message": message}})


def _id_headers(request_id: str) -> list[tuple[bytes, bytes]]:
    # request-id is where the anthropic SDK looks (``message._request_id``); x-request-id is
    # the gateway's own header on every endpoint. Both are the id in the record's metadata.
    return [(b"x-request-id", request_id.encode()), (b"request-id", request_id.encode())]


async def _send_error(send: Send, exc: GatewayError, request_id: str) -> None:
    extra = [(b"request-id", request_id.encode())] + [
        (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    await send_whole(send, exc.status, error_json(exc.status, exc.message), JSON, request_id,
                     extra)


async def _send_refusal(send: Send, refusal: Refusal, request_id: str) -> None:
    headers = {} if refusal.retry_after_s is None else {
        "retry-after": str(refusal.retry_after_s)}
    await _send_error(send, GatewayError(refusal.status, refusal.code, refusal.message,
                                         refusal.param, headers), request_id)
