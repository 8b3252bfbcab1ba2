"""Export requests written by hand for the OTLP tests: protobuf messages and OTLP/JSON."""

from __future__ import annotations

import os
import time
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span, Status

NS = 1_000_000_000


def attribute(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=value))


def span(attributes: dict[str, Any], *, start_ns: int | None = None, duration_ms: int = 1500,
         status: int = Status.STATUS_CODE_UNSET, trace_id: bytes | None = None,
         span_id: bytes | None = None, name: str = "chat") -> Span:
    start = start_ns if start_ns is not None else (time.time_ns() - 60 * NS)
    return Span(trace_id=os.urandom(16) if trace_id is None else trace_id,
                span_id=os.urandom(8) if span_id is None else span_id, name=name,
                kind=Span.SPAN_KIND_CLIENT, start_time_unix_nano=start,
                end_time_unix_nano=start + duration_ms * 1_000_000,
                attributes=[attribute(k, v) for k, v in attributes.items()],
                status=Status(code=status))  # type: ignore[arg-type]


def request(*spans: Span, service: str = "billing-bot") -> ExportTraceServiceRequest:
    return ExportTraceServiceRequest(resource_spans=[ResourceSpans(
        resource={"attributes": [attribute("service.name", service)]},  # type: ignore[arg-type]
        scope_spans=[ScopeSpans(spans=list(spans))])])


def chat(model: str, input_tokens: int, output_tokens: int, **more: Any) -> dict[str, Any]:
    """A chat span's attributes as opentelemetry-instrumentation-openai-v2 sets them."""
    return {"gen_ai.operation.name": "chat", "gen_ai.system": "openai",
            "gen_ai.request.model": model, "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens, **more}


def response_of(content: bytes) -> ExportTraceServiceResponse:
    answer = ExportTraceServiceResponse()
    answer.ParseFromString(content)
    return answer


def json_span(trace_hex: str, span_hex: str, attributes: list[dict[str, Any]], *,
              start_ns: int, end_ns: int, status: dict[str, Any] | None = None
              ) -> dict[str, Any]:
    """A span in OTLP/JSON: hex ids, 64-bit integers as strings, enums as integers."""
    return {"traceId": trace_hex, "spanId": span_hex, "name": "chat", "kind": 3,
            "startTimeUnixNano": str(start_ns), "endTimeUnixNano": str(end_ns),
            "attributes": attributes, "status": status or {}, "droppedLinksCount": 0,
            "someFieldFromTheFuture": {"x": 1}}


def json_request(*spans: dict[str, Any]) -> dict[str, Any]:
    return {"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name",
                                     "value": {"stringValue": "json-app"}}]},
        "scopeSpans": [{"scope": {"name": "hand-written"}, "spans": list(spans)}]}]}
