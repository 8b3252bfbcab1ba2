"""``POST /v1/traces``: calls made elsewhere, reported as OpenTelemetry GenAI spans (OTLP/HTTP).

The request is authenticated with an API key exactly as a gateway call is (the calls become
that key's), and the key's status, expiry, addresses and requests per minute apply: one
export is one request. Its tokens per minute, quota and budget do not refuse an export: its
calls have been made and paid for already, and refusing them would only leave them out of
the ledger. They do count against those limits once recorded, so the key's own calls
through the gateway feel them.

The spans are decoded (otlp.py), mapped (genai_spans.py) and validated and written as
``POST /api/v1/usage/events`` writes reported calls (ledger/ingest.py), before the answer: a
re-sent export finds its ids stored and counts nothing twice, and a ledger that cannot be
written answers 503, which OTLP exporters retry (the spool, which keeps the gateway's own
calls through a database outage, is not needed: the exporter keeps the spans meanwhile).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from starlette.types import Receive, Scope, Send

from tallygate.domain.records import CallRecord
from tallygate.gateway.answers import request_id, send_whole
from tallygate.gateway.genai_spans import Rejected, events_of
from tallygate.gateway.otlp import (
    OtlpError,
    check_encoding,
    decode_request,
    decompressed,
    encode_response,
    encode_status,
    media_type,
)
from tallygate.gateway.proxy import Gateway
from tallygate.gateway.requests import (
    MAX_BODY_BYTES,
    GatewayError,
    headers_of,
    parse_tags,
    read_body,
)
from tallygate.ledger.ingest import ingest_events
from tallygate.ledger.service import Ledger
from tallygate.store.keys import StoredKey

log = logging.getLogger("tallygate.gateway")
PATH = "/v1/traces"
# Reasons listed in partial_success.error_message; the count covers them all.
MAX_REASONS = 10
RETRYABLE = (429, 503)


@dataclass(slots=True)
class Export:
    """What became of an export's spans."""

    stored: list[CallRecord]
    rejected: list[Rejected]
    calls: int  # GenAI spans that were model calls (stored, duplicates or rejected)

    def message(self) -> str:
        if not self.rejected:
            return ""
        reasons = "; ".join(f"{r.span}: {r.reason}" for r in self.rejected[:MAX_REASONS])
        more = len(self.rejected) - MAX_REASONS
        return (f"{len(self.rejected)} of {self.calls} GenAI spans rejected: {reasons}"
                + (f"; and {more} more" if more > 0 else ""))


async def export(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    rid = request_id()
    headers = headers_of(scope)
    media = media_type(headers.content_type)
    try:
        if media is None:
            raise OtlpError(415, "Content-Type must be application/x-protobuf or "
                                 "application/json (OTLP/HTTP)")
        encoding = headers.content_encoding
        check_encoding(encoding)
        key = await gateway._authenticate(headers.authorization, scope)
        client = scope.get("client")
        refusal = await gateway.limits.check(key, None, client[0] if client else None,
                                             time.time(), usage_limits=False)
        if refusal is not None:
            await _send_status(send, refusal.status, refusal.message, media, rid,
                               refusal.retry_after_s)
            return
        tags = parse_tags(headers.tags)
        raw = await read_body(receive, headers.content_length)
        if raw is None:
            return  # the client went away before its request was complete
        done = await asyncio.to_thread(_ingest, gateway.ledger, key, raw, media, encoding,
                                       tags)
    except OtlpError as exc:
        await _send_status(send, exc.status, exc.message, media, rid,
                           1 if exc.status in RETRYABLE else None)
        return
    except GatewayError as exc:
        retry = exc.headers.get("Retry-After")
        await _send_status(send, exc.status, exc.message, media, rid,
                           int(retry) if retry and retry.isdigit() else None)
        return
    await _count(gateway, key, done.stored)
    assert media is not None
    await send_whole(send, 200, encode_response(len(done.rejected), done.message(), media),
                     media.encode(), rid)


def _ingest(ledger: Ledger, key: StoredKey, raw: bytes, media: str, encoding: str | None,
            tags: dict[str, Any] | None) -> Export:
    """Decode, map, validate and store (in a worker thread: a large export is CPU work and
    the write waits for the database)."""
    request = decode_request(decompressed(raw, encoding, MAX_BODY_BYTES), media)
    events, rejected, _ = events_of(request.resource_spans, key.id,
                                    "internal" if key.internal else "model")
    calls = len(events) + len(rejected)
    allowed = []
    for event in events:
        if key.allowed_models is not None and event["model"] not in key.allowed_models:
            rejected.append(Rejected(_span_of(event), f"this API key may not use the model "
                                                      f"{event['model']!r}"))
            continue
        if tags:
            event["metadata"] = tags | event["metadata"]
        allowed.append(event)
    try:
        result = ingest_events(ledger, allowed)
    except Exception:
        log.exception("cannot write the calls of an OTLP export")
        raise OtlpError(503, "the ledger cannot be written just now; try again") from None
    rejected += [Rejected(_span_of(allowed[error.index]),
                          f"{error.field}: {error.message}" if error.field else error.message)
                 for error in result.errors]
    return Export(result.stored, rejected, calls)


def _span_of(event: dict[str, Any]) -> str:
    _, trace, span = str(event["id"]).split("-")
    return f"trace {trace} span {span}"


async def _count(gateway: Gateway, key: StoredKey, stored: Sequence[CallRecord]) -> None:
    """The new records against the key's limits (each in its own minute and quota period)
    and in the metrics, as the recorder does for the gateway's own calls."""
    observer = gateway.recorder.observer
    try:
        if observer is not None and stored:
            observer.records_stored(stored)
    except Exception:
        log.exception("counting %d reported calls in the metrics failed", len(stored))
    by_minute: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for record in stored:
        sums = by_minute[record.ts_us // 60_000_000 * 60]
        sums[0] += record.total_tokens
        sums[1] += record.cost_nano
    try:
        for minute, (tokens, cost) in sorted(by_minute.items()):
            if tokens or cost:
                await gateway.limits.count(key, tokens, cost, minute)
    except Exception:
        log.exception("cannot count reported calls against their key's limits")


async def _send_status(send: Send, status: int, message: str, media: str | None, rid: str,
                       retry_after_s: int | None = None) -> None:
    extra = [] if retry_after_s is None else [(b"retry-after", str(retry_after_s).encode())]
    await send_whole(send, status, encode_status(status, message, media),
                     (media or "application/json").encode(), rid, extra)
