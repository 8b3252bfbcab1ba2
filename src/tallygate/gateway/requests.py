"""What the gateway reads of a request: the few headers it needs, the body (bounded), the
members it checks (model, stream, stream_options), and what it sends upstream in its place.

The body is parsed once; it is forwarded byte for byte unless the model name must be
rewritten or the upstream asked for its usage, so fields the gateway has never heard of keep
working. A body that may name one of those fields twice goes upstream as the gateway parsed
it, and one that names a field differing from them only by case is refused: the gateway and
the upstream must believe the same model.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import orjson
from starlette.types import Message, Receive, Scope

from tallygate.gateway.upstream import Upstream

MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_TAGS_BYTES = 1024


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
class RequestHeaders:
    """The few request headers the gateway reads, found in one pass over the ASGI list.
    An endpoint that reads more subclasses it and extends ``FIELDS`` (header: attribute);
    a header named in ``JOINED`` may repeat, its values joined by commas."""

    FIELDS: ClassVar[dict[bytes, str]] = {
        b"authorization": "authorization", b"content-length": "content_length",
        b"content-type": "content_type", b"content-encoding": "content_encoding",
        b"x-tallygate-tags": "tags"}
    JOINED: ClassVar[frozenset[str]] = frozenset()

    authorization: str = ""
    content_length: str | None = None
    content_type: str | None = None
    content_encoding: str | None = None
    tags: str | None = None


Found = TypeVar("Found", bound=RequestHeaders)


def headers_of(scope: Scope) -> RequestHeaders:
    return scan_headers(scope, RequestHeaders())


def scan_headers(scope: Scope, found: Found) -> Found:
    """``found`` filled from the request's headers its class names."""
    fields, joined = found.FIELDS, found.JOINED
    for name, value in scope["headers"]:
        attribute = fields.get(name)
        if attribute is None:
            continue
        text = value.decode("latin-1")
        if attribute in joined and (earlier := getattr(found, attribute)) is not None:
            text = f"{earlier},{text}"
        setattr(found, attribute, text)
    return found


def request_timeout(idle_s: float) -> GatewayError:
    """A client that paused longer than ``client_idle_timeout_s`` while sending its request:
    408, and the connection closed (the rest of its body is never read)."""
    return GatewayError(408, "request_timeout", f"The request body did not arrive: nothing "
                        f"came for {idle_s:g} s.", headers={"Connection": "close"})


def idle_bounded(receive: Receive, idle_s: float) -> Receive:
    """``receive`` for reading a request body: raises :func:`request_timeout` when the
    client sends nothing for ``idle_s`` (a slow sender must not hold the gateway, nor later
    an upstream connection, for as long as it likes)."""
    async def bounded() -> Message:
        try:
            async with asyncio.timeout(idle_s):
                return await receive()
        except TimeoutError:
            raise request_timeout(idle_s) from None

    return bounded


async def read_body(receive: Receive, declared: str | None) -> bytes | None:
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


def parse_body(raw: bytes) -> dict[str, Any]:
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


def wants_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


ASK_FOR_USAGE = b'"stream_options":{"include_usage":true},'


def upstream_body(raw: bytes, body: dict[str, Any], upstream: Upstream, stream: bool,
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
