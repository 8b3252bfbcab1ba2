"""Form uploads (audio transcriptions and translations): read only as far as the model field
and the start of the file, then passed upstream as a stream of bytes.

The gateway must know the model (for the route, the key's limits and the price) before it
sends anything upstream, and it refuses a form without a file before it costs an upstream
call. So it holds the body's beginning until it has seen the ``model`` field's value and
the header of the ``file`` part, and no further: what comes after (the file's bytes) goes
upstream as it arrives, never all in memory. What is held is bounded by
:data:`MAX_HELD_BYTES`: the official SDKs send the form's fields before its file, so a few
hundred bytes are held; a form whose file comes before its model (``curl -F file=@a.mp3 -F
model=...``) works for files up to that size, and is refused past it with a 400 naming
``model``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.types import Receive

from tallygate.gateway.requests import GatewayError

MAX_HELD_BYTES = 1024 * 1024
MAX_FIELD_BYTES = 1024  # a model name, or "true"
READ_FIELDS = ("model", "stream")


class ClientGone(Exception):
    """The client disconnected before its upload was complete."""


@dataclass(slots=True)
class FormHead:
    """What the gateway reads of a form, and where in the held bytes the model is."""

    fields: dict[str, str] = field(default_factory=dict)
    model_span: tuple[int, int] | None = None
    file_started: bool = False
    held: bytearray = field(default_factory=bytearray)
    ended: bool = False  # the whole body is held

    @property
    def complete(self) -> bool:
        return self.file_started and "model" in self.fields

    def with_model(self, name: str) -> bytes:
        """The held bytes with the model field's value replaced by ``name``."""
        assert self.model_span is not None
        start, end = self.model_span
        return bytes(self.held[:start]) + name.encode() + bytes(self.held[end:])


# RFC 2046 allows 70; the parser refuses more than 256 with an error of its own.
MAX_BOUNDARY_BYTES = 70


def boundary_of(content_type: str | None) -> bytes:
    kind, options = parse_options_header(content_type or "")
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise GatewayError(400, "invalid_request", "Content-Type: this endpoint takes "
                                                   "multipart/form-data (with a boundary)")
    if len(boundary) > MAX_BOUNDARY_BYTES:
        raise GatewayError(400, "invalid_request", "Content-Type: the multipart boundary is "
                                                   f"longer than {MAX_BOUNDARY_BYTES} bytes")
    return boundary


class _Sniffer:
    """Feeds a multipart parser and notes the fields the gateway reads (their values and,
    for the model, where it lies in the body) and whether a file part has begun."""

    def __init__(self, boundary: bytes, head: FormHead) -> None:
        self.head = head
        self.offset = 0  # of the chunk being parsed, in the whole body
        self.header_field = bytearray()
        self.header_value = bytearray()
        self.name: str | None = None
        self.is_file = False
        self.value = bytearray()
        self.span: list[int] = []
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._part_begin, "on_header_field": self._header_field,
            "on_header_value": self._header_value, "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished, "on_part_data": self._part_data,
            "on_part_end": self._part_end})

    def feed(self, chunk: bytes) -> None:
        try:
            self.parser.write(chunk)
        except MultipartParseError:
            raise GatewayError(400, "invalid_request",
                               "The body is not valid multipart/form-data.") from None
        self.offset += len(chunk)

    def _part_begin(self) -> None:
        self.name, self.is_file = None, False
        self.value.clear()
        self.span.clear()

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def _header_end(self) -> None:
        if bytes(self.header_field).lower() == b"content-disposition":
            _, options = parse_options_header(bytes(self.header_value))
            self.name = options.get(b"name", b"").decode("utf-8", "replace")
            self.is_file = b"filename" in options
        self.header_field.clear()
        self.header_value.clear()

    def _headers_finished(self) -> None:
        if self.name == "file" or (self.is_file and self.name not in READ_FIELDS):
            self.head.file_started = True

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self.name not in READ_FIELDS or self.is_file:
            return
        if not self.span:
            self.span.append(self.offset + start)
        self.value += data[start:end]
        if len(self.value) > MAX_FIELD_BYTES:
            raise GatewayError(400, "invalid_request", f"{self.name}: too long", self.name)
        self.span[1:] = [self.offset + end]

    def _part_end(self) -> None:
        if self.name in READ_FIELDS and not self.is_file:
            assert self.name is not None
            if self.name in self.head.fields:
                # Upstreams disagree on which of two values counts (Go's FormValue takes the
                # first): the gateway must check and price the one that runs.
                raise GatewayError(400, "invalid_request",
                                   f"{self.name}: given more than once", self.name)
            self.head.fields[self.name] = self.value.decode("utf-8", "replace")
            if self.name == "model":
                at = self.span[0] if self.span else 0
                self.head.model_span = (at, self.span[1] if self.span else at)


async def read_form_head(receive: Receive, content_type: str | None) -> FormHead:
    """The body's beginning, up to its model and the start of its file. Raises
    :class:`GatewayError` for a form the upstream should never see, and
    :class:`ClientGone` if the client leaves first."""
    head = FormHead()
    sniffer = _Sniffer(boundary_of(content_type), head)
    while not head.complete:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk: bytes = message.get("body", b"")
        head.held += chunk
        sniffer.feed(chunk)
        if not message.get("more_body", False):
            head.ended = True
            break
        if len(head.held) > MAX_HELD_BYTES and not head.complete:
            missing = "model" if "model" not in head.fields else "file"
            raise GatewayError(400, "invalid_request",
                               f"{missing}: not found in the first {MAX_HELD_BYTES} bytes of "
                               "the form; send the model field before the file", missing)
    if "model" not in head.fields or not head.fields["model"]:
        raise GatewayError(400, "invalid_request", "model: a model name is required", "model")
    if not head.file_started:
        raise GatewayError(400, "invalid_request", "file: a file is required", "file")
    return head


class Upload:
    """A request body passed upstream as it arrives: ``first`` (what was held), then the
    rest. ``done`` is set once the client's last byte was sent on, ``gone`` if the client
    left before."""

    def __init__(self, first: bytes, receive: Receive, more: bool,
                 idle_s: float | None = None) -> None:
        self.first, self.receive, self.more = first, receive, more
        self.idle_s = idle_s  # client_idle_timeout_s: a client that pauses longer is gone
        self.done = asyncio.Event()
        self.gone = False
        self.timed_out = False  # gone because it paused too long, not disconnected

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.first
        while self.more:
            try:
                async with asyncio.timeout(self.idle_s):
                    message = await self.receive()
            except TimeoutError:
                self.gone = self.timed_out = True
                raise ClientGone from None
            if message["type"] == "http.disconnect":
                self.gone = True
                raise ClientGone
            self.more = message.get("more_body", False)
            chunk = message.get("body", b"")
            if chunk:
                yield chunk
        self.done.set()
