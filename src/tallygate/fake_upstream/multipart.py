"""Reading a multipart request as it streams in: its text fields, and its file counted (size,
first bytes, SHA-256, PDF pages) but never held, so a file of any size costs no memory."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

import orjson
from python_multipart.multipart import MultipartParser, parse_options_header

from tallygate.fake_upstream.asgi import Receive
from tallygate.fake_upstream.call import Upload

MAX_FIELD_BYTES = 1 << 16
HEAD_BYTES = 64
_PAGE = re.compile(rb"/Type\s*/Page(?![a-zA-Z])")
_TAIL = 32  # bytes kept across chunks, so a marker split between two is still seen


class MultipartError(ValueError):
    """The body is not the multipart form it says it is."""


@dataclass(slots=True)
class _Part:
    name: str = ""
    filename: str | None = None
    content_type: str = ""
    text: bytearray = field(default_factory=bytearray)
    size: int = 0
    head: bytearray = field(default_factory=bytearray)
    tail: bytes = b""
    pages: int = 0
    sha256: Any = field(default_factory=hashlib.sha256)


def boundary_of(content_type: str) -> bytes | None:
    kind, options = parse_options_header(content_type)
    if kind != b"multipart/form-data":
        return None
    return options.get(b"boundary") or None


async def read_form(receive: Receive, boundary: bytes) -> tuple[dict[str, Any], Upload | None]:
    """The text fields (``fake`` decoded from JSON; ``fake[key]`` fields gathered into it) and
    the first file, read chunk by chunk from ``receive``."""
    parts: list[_Part] = []
    current = _Part()
    header_name = bytearray()
    header_value = bytearray()

    def on_part_begin() -> None:
        nonlocal current
        current = _Part()
        parts.append(current)

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        name = bytes(header_name).lower()
        if name == b"content-disposition":
            _, options = parse_options_header(bytes(header_value))
            current.name = options.get(b"name", b"").decode(errors="replace")
            if b"filename" in options:
                current.filename = options[b"filename"].decode(errors="replace")
        elif name == b"content-type":
            current.content_type = bytes(header_value).decode(errors="replace")
        header_name.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        piece = data[start:end]
        if current.filename is None:
            if len(current.text) + len(piece) > MAX_FIELD_BYTES:
                raise MultipartError(f"field {current.name!r} is too long")
            current.text.extend(piece)
            return
        current.size += len(piece)
        current.sha256.update(piece)
        if len(current.head) < HEAD_BYTES:
            current.head.extend(piece[:HEAD_BYTES - len(current.head)])
        window = current.tail + piece
        current.pages += len(_PAGE.findall(window)) - len(_PAGE.findall(current.tail))
        current.tail = window[-_TAIL:]

    parser = MultipartParser(boundary, {
        "on_part_begin": on_part_begin, "on_header_field": on_header_field,
        "on_header_value": on_header_value, "on_header_end": on_header_end,
        "on_part_data": on_part_data})
    try:
        while True:
            message = await receive()
            parser.write(message.get("body", b""))
            if not message.get("more_body"):
                break
        parser.finalize()
    except MultipartError:
        raise
    except Exception as exc:  # python-multipart raises its own errors for malformed bodies
        raise MultipartError(f"malformed multipart body: {exc}") from exc
    return _fields(parts), _upload(parts)


def _fields(parts: list[_Part]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    control: dict[str, Any] = {}
    for part in parts:
        if part.filename is not None:
            continue
        value = part.text.decode(errors="replace")
        if part.name == "fake":
            try:
                decoded = orjson.loads(value)
            except orjson.JSONDecodeError:
                decoded = None
            if isinstance(decoded, dict):
                control.update(decoded)
        elif part.name.startswith("fake[") and part.name.endswith("]"):
            control[part.name[5:-1]] = _scalar(value)
        else:
            fields[part.name] = value
    if control:
        fields["fake"] = control
    return fields


def _scalar(value: str) -> Any:
    """A form value as the JSON scalar it spells (``12`` → 12, ``true`` → True), else text."""
    try:
        decoded = orjson.loads(value)
    except orjson.JSONDecodeError:
        return value
    return decoded if isinstance(decoded, int | float | bool) else value


def _upload(parts: list[_Part]) -> Upload | None:
    for part in parts:
        if part.filename is not None:
            return Upload(part.filename, part.content_type, part.size, bytes(part.head),
                          part.sha256.hexdigest(), part.pages)
    return None
