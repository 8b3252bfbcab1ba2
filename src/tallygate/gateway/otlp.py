"""OTLP/HTTP on the wire: the request's encoding, its body decoded, the answers encoded.

From the OTLP specification (opentelemetry-proto, docs/specification.md, "OTLP/HTTP"):
binary Protobuf (``application/x-protobuf``) or the proto3 JSON mapping (``application/json``)
with two deviations: trace and span ids are hex strings, not base64, and enums are integers;
unknown JSON fields are ignored; 64-bit integers may be strings or numbers. The body may be
gzipped (``Content-Encoding: gzip``) and is limited in size after decompression too (413).
The answer is an ``ExportTraceServiceResponse`` in the request's content type; a failure's
body is a ``google.rpc.Status`` in that content type.

Importing this module loads protobuf (about 30 ms): the gateway imports it on the first
export it receives, so a process that only relays calls never does.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from typing import Any

import orjson
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

PROTOBUF = "application/x-protobuf"
JSON = "application/json"
# Some exporters name protobuf without the "x-" (it is registered as application/protobuf).
_TYPES = {PROTOBUF: PROTOBUF, "application/protobuf": PROTOBUF, JSON: JSON}
# The spec asks for gzip; the Python SDK's exporter also offers deflate (zlib's format, as
# HTTP's "deflate" is): the window bits zlib reads each with.
_ENCODINGS = {"": None, "identity": None, "gzip": 16 + zlib.MAX_WBITS,
              "deflate": zlib.MAX_WBITS}
# google.rpc.Code for the HTTP statuses answered (google/rpc/code.proto): the OTLP spec does
# not use Status.code, clients only record it, so the usual HTTP mapping is enough.
_RPC_CODES = {400: 3, 401: 16, 403: 7, 413: 8, 415: 3, 429: 8, 500: 13, 503: 14}
# The id fields that OTLP/JSON writes in hex (Span, Span.Link).
_ID_FIELDS = ("traceId", "spanId", "parentSpanId")


class OtlpError(Exception):
    """A request refused as a whole: its HTTP status and a message for the Status body."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


def media_type(content_type: str | None) -> str | None:
    """``application/x-protobuf`` or ``application/json`` for a request's Content-Type (its
    parameters, such as a charset, aside); None for anything else."""
    if not content_type:
        return None
    return _TYPES.get(content_type.split(";", 1)[0].strip().lower())


def check_encoding(content_encoding: str | None) -> None:
    if (content_encoding or "").strip().lower() not in _ENCODINGS:
        raise OtlpError(415, f"Content-Encoding {content_encoding!r} is not supported; send "
                             "the body as it is, gzipped or deflated")


def decompressed(body: bytes, content_encoding: str | None, limit: int) -> bytes:
    """The body, decompressed if it came compressed, never past ``limit`` bytes (413)."""
    encoding = (content_encoding or "").strip().lower()
    wbits = _ENCODINGS.get(encoding)
    if wbits is None:
        return body
    out = bytearray()
    rest = body
    while rest:  # a gzip file may hold several members, one after the other
        inflater = zlib.decompressobj(wbits)
        try:
            out += inflater.decompress(rest, limit + 1 - len(out))
        except zlib.error as exc:
            raise OtlpError(400, f"the body is not valid {encoding}: {exc}") from None
        if len(out) > limit:
            raise OtlpError(413, f"the body is larger than {limit} bytes once decompressed")
        if not inflater.eof:
            raise OtlpError(400, f"the {encoding} body ends before its end")
        rest = inflater.unused_data
    return bytes(out)


def decode_request(body: bytes, media: str) -> ExportTraceServiceRequest:
    """The export request in ``body``; 400 when it cannot be decoded."""
    request = ExportTraceServiceRequest()
    if media == PROTOBUF:
        try:
            request.ParseFromString(body)
        except (DecodeError, RecursionError) as exc:
            raise OtlpError(400, f"the body is not an ExportTraceServiceRequest: {exc}") \
                from None
        return request
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise OtlpError(400, f"the body is not valid JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise OtlpError(400, "the body must be a JSON object (an ExportTraceServiceRequest)")
    _ids_to_base64(parsed)
    try:
        json_format.ParseDict(parsed, request, ignore_unknown_fields=True)
    except (json_format.ParseError, RecursionError, ValueError, TypeError) as exc:
        raise OtlpError(400, f"the body is not an ExportTraceServiceRequest: {exc}") from None
    return request


def _ids_to_base64(request: dict[str, Any]) -> None:
    """OTLP/JSON's hex ids, rewritten in place as the base64 that protobuf's JSON parser
    reads. An id that is not hex of 8 or 16 bytes is tried as base64 (some exporters send
    protobuf's plain JSON mapping; its lengths, 12 and 24 characters with padding, can never
    be hex ids); an id that is neither becomes empty, so that its span alone is refused."""
    for resource in _members(request, "resourceSpans"):
        for scope in _members(resource, "scopeSpans"):
            for span in _members(scope, "spans"):
                _fix_ids(span)
                for link in _members(span, "links"):
                    _fix_ids(link)


def _members(parent: Any, name: str) -> list[Any]:
    value = parent.get(name) if isinstance(parent, dict) else None
    return value if isinstance(value, list) else []


def _fix_ids(message: Any) -> None:
    if not isinstance(message, dict):
        return
    for name in _ID_FIELDS:
        value = message.get(name)
        if isinstance(value, str) and value:
            message[name] = base64.b64encode(id_bytes(value)).decode()


def id_bytes(text: str) -> bytes:
    """The bytes of a JSON id: hex (the spec), else base64 of 8 or 16 bytes, else empty."""
    if len(text) in (16, 32):
        try:
            return bytes.fromhex(text)
        except ValueError:
            return b""
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""
    return raw if len(raw) in (8, 16) else b""


def encode_response(rejected: int, message: str, media: str) -> bytes:
    """ExportTraceServiceResponse: ``partial_success`` set only when a span was rejected
    (the spec: it MUST stay unset on full success)."""
    response = ExportTraceServiceResponse()
    if rejected:
        response.partial_success.rejected_spans = rejected
        response.partial_success.error_message = message
    if media == PROTOBUF:
        return response.SerializeToString()
    return json_format.MessageToJson(response, indent=None).encode()


def encode_status(status: int, message: str, media: str | None) -> bytes:
    """A google.rpc.Status (google/rpc/status.proto: ``int32 code = 1; string message = 2``)
    for a failed request, in the request's encoding (JSON when it had none we know)."""
    code = _RPC_CODES.get(status, 2)  # 2: UNKNOWN
    if media != PROTOBUF:
        return orjson.dumps({"code": code, "message": message})
    text = message.encode()
    return b"\x08" + _varint(code) + b"\x12" + _varint(len(text)) + text


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)
