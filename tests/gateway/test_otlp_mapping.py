"""The OTLP wire and the GenAI mapping, without a server: ids, statuses, bodies."""

from __future__ import annotations

import base64
import gzip

import orjson
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from tallygate.gateway.genai_spans import is_model_call, status_of
from tallygate.gateway.otlp import (
    JSON,
    PROTOBUF,
    OtlpError,
    decode_request,
    decompressed,
    encode_status,
    id_bytes,
    media_type,
)

TRACE = bytes(range(1, 17))
SPAN = bytes(range(1, 9))


def test_json_ids_are_hex_and_base64_is_tolerated() -> None:
    assert id_bytes(TRACE.hex().upper()) == TRACE and id_bytes(SPAN.hex()) == SPAN
    assert id_bytes(base64.b64encode(TRACE).decode()) == TRACE  # protobuf's own mapping
    assert id_bytes("zz" * 16) == b"" and id_bytes("abc") == b""
    body = {"resourceSpans": [{"scopeSpans": [{"spans": [
        {"traceId": TRACE.hex(), "spanId": "not an id", "links": [
            {"traceId": TRACE.hex(), "spanId": SPAN.hex()}]}]}]}]}
    decoded = decode_request(orjson.dumps(body), JSON).resource_spans[0].scope_spans[0]
    assert decoded.spans[0].trace_id == TRACE and decoded.spans[0].span_id == b""
    assert decoded.spans[0].links[0].span_id == SPAN


def test_media_types() -> None:
    assert media_type("application/json; charset=utf-8") == JSON
    assert media_type("Application/X-Protobuf") == PROTOBUF
    assert media_type("application/protobuf") == PROTOBUF
    assert media_type("text/plain") is None and media_type(None) is None


def test_gzip_members_and_limit() -> None:
    two = gzip.compress(b"a" * 10) + gzip.compress(b"b" * 10)
    assert decompressed(two, "gzip", 20) == b"a" * 10 + b"b" * 10
    with pytest.raises(OtlpError) as raised:
        decompressed(two, "gzip", 19)
    assert raised.value.status == 413
    with pytest.raises(OtlpError) as raised:
        decompressed(gzip.compress(b"x" * 100)[:-10], "gzip", 1000)
    assert raised.value.status == 400


@pytest.mark.parametrize(("code", "attributes", "expected"), [
    (Status.STATUS_CODE_UNSET, {}, 200),
    (Status.STATUS_CODE_OK, {"error.type": "500"}, 200),
    (Status.STATUS_CODE_ERROR, {}, 500),
    (Status.STATUS_CODE_ERROR, {"error.type": "404"}, 404),
    (Status.STATUS_CODE_ERROR, {"error.type": "200"}, 500),  # not an error status
    (Status.STATUS_CODE_ERROR, {"error.type": "AuthenticationError"}, 401),
    (Status.STATUS_CODE_ERROR, {"error.type": "timeout"}, 504),
    (Status.STATUS_CODE_ERROR, {"error.type": "java.net.UnknownHostException"}, 500),
    (Status.STATUS_CODE_ERROR, {"http.response.status_code": 503}, 503),
])
def test_status_of_a_span(code: int, attributes: dict[str, object], expected: int) -> None:
    assert status_of(Status(code=code), attributes) == expected  # type: ignore[arg-type]


def test_which_spans_are_model_calls() -> None:
    assert is_model_call({"gen_ai.operation.name": "chat"})
    assert is_model_call({"gen_ai.operation.name": "text_completion"})
    assert is_model_call({"gen_ai.system": "openai"})  # older spans name no operation
    assert is_model_call({"gen_ai.provider.name": "anthropic"})
    for wrapper in ("invoke_agent", "create_agent", "execute_tool"):
        assert not is_model_call({"gen_ai.operation.name": wrapper, "gen_ai.system": "x"})
    assert not is_model_call({"http.request.method": "POST"})


def test_status_bodies() -> None:
    assert orjson.loads(encode_status(401, "no key", JSON)) == {"code": 16, "message": "no key"}
    assert orjson.loads(encode_status(415, "what", None))["code"] == 3
    long = "é" * 200  # a message longer than one varint byte
    from google.rpc.status_pb2 import Status as RpcStatus

    decoded = RpcStatus.FromString(encode_status(429, long, PROTOBUF))
    assert (decoded.code, decoded.message) == (8, long)
