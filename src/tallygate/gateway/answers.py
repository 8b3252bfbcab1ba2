"""What the gateway sends a client itself: whole answers, and errors in OpenAI's shape."""

from __future__ import annotations

import logging
import random

import orjson
from starlette.types import Send

from tallygate.errors import error_body
from tallygate.gateway.limits import Refusal
from tallygate.gateway.requests import GatewayError

log = logging.getLogger("tallygate.gateway")
# An upstream's 401 or 403 is the gateway's own credential refused: a gateway failure (502),
# and the upstream's body, which may show part of that credential, is never passed on.
CREDENTIAL_REFUSED = (401, 403)
# Every pooled upstream connection stayed in use for upstream_pool_wait_s.
UPSTREAM_BUSY_ERROR = GatewayError(503, "upstream_busy", "The gateway has no free connection "
                                   "to the upstream right now; try again shortly.",
                                   headers={"Retry-After": "1"})
CREDENTIAL_REFUSED_ERROR = GatewayError(502, "upstream_auth",
                                        "The upstream refused the gateway's credential.")


def answered_status(model: str, status: int) -> int:
    """The status the client is told (and the ledger records) for an upstream's answer."""
    if status in CREDENTIAL_REFUSED:
        log.warning("the upstream of %s refused the gateway's credential (%d)", model, status)
        return 502
    return status


def request_id() -> str:
    return f"req_{random.getrandbits(128):032x}"


JSON = b"application/json"
EVENT_STREAM_TYPE = "text/event-stream"
EVENT_STREAM = b"text/event-stream; charset=utf-8"


def content_type(upstream_value: str | None, default: bytes) -> bytes:
    """The upstream's content type, with a charset for text types (as Starlette did)."""
    if not upstream_value:
        return default
    if upstream_value.startswith("text/") and "charset=" not in upstream_value.lower():
        upstream_value += "; charset=utf-8"
    # A header value can only carry latin-1; what an upstream sent beyond it cannot be
    # passed on, and must not stop the call on its way to the client and the ledger.
    return upstream_value.encode("latin-1", "replace")


async def send_whole(send: Send, status: int, body: bytes, content_type: bytes,
                      request_id: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [(b"content-length", str(len(body)).encode()), (b"content-type", content_type),
               (b"x-request-id", request_id.encode())]
    if extra:
        headers += extra
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, exc: GatewayError, request_id: str) -> None:
    body = orjson.dumps(error_body(exc.status, exc.message, exc.code, exc.param))
    extra = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in exc.headers.items()]
    await send_whole(send, exc.status, body, JSON, request_id, extra)


async def send_refusal(send: Send, refusal: Refusal, request_id: str) -> None:
    headers = {} if refusal.retry_after_s is None else {
        "retry-after": str(refusal.retry_after_s)}
    await send_error(send, GatewayError(refusal.status, refusal.code, refusal.message,
                                         refusal.param, headers), request_id)
