"""What the OpenTelemetry SDK's own OTLP/HTTP exporter sends, to a running tallygate.

The spans are made as opentelemetry-instrumentation-openai-v2 makes them
(open-telemetry/opentelemetry-python-contrib, instrumentation-genai/
opentelemetry-instrumentation-openai-v2, patch.py and utils.py): a CLIENT span named
"{operation} {model}", ``gen_ai.operation.name``, ``gen_ai.system``, ``gen_ai.request.*``,
``server.address``/``server.port`` at the start; ``gen_ai.response.model``, ``.id``,
``.finish_reasons`` and ``gen_ai.usage.input_tokens``/``output_tokens`` at the end (no output
tokens for embeddings); on an exception, status ERROR with its message and ``error.type`` set
to the exception's class name.
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.http import Compression
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from tests.gateway.conftest import CHAT, EMBED, GatewayUnderTest


class RateLimitError(Exception):
    """Named as the openai SDK's 429, which the instrumentation writes to error.type."""


def _chat(tracer: Any, model: str, usage: tuple[int, int] | None,
          error: Exception | None = None) -> Any:
    attributes = {"gen_ai.operation.name": "chat", "gen_ai.system": "openai",
                  "gen_ai.request.model": model, "gen_ai.request.max_tokens": 100,
                  "gen_ai.request.temperature": 0.2, "server.address": "api.openai.com"}
    with tracer.start_as_current_span(f"chat {model}", kind=SpanKind.CLIENT,
                                      attributes=attributes, end_on_exit=False) as span:
        if error is not None:
            span.set_status(Status(StatusCode.ERROR, str(error)))
            span.set_attribute("error.type", type(error).__qualname__)
        else:
            span.set_attribute("gen_ai.response.model", f"{model}-2026-01-01")
            span.set_attribute("gen_ai.response.finish_reasons", ["stop"])
            span.set_attribute("gen_ai.response.id", "chatcmpl-123")
            assert usage is not None
            span.set_attribute("gen_ai.usage.input_tokens", usage[0])
            span.set_attribute("gen_ai.usage.output_tokens", usage[1])
        span.end()
        return span.get_span_context()


@pytest.mark.parametrize("compression", [Compression.NoCompression, Compression.Gzip])
def test_the_sdks_exporter_records_genai_spans(gateway: GatewayUnderTest,
                                               compression: Compression) -> None:
    key_id, secret = gateway.new_key()
    exporter = OTLPSpanExporter(endpoint=f"{gateway.url}/v1/traces",
                                headers={"Authorization": f"Bearer {secret}"},
                                compression=compression, timeout=10)
    provider = TracerProvider(resource=Resource.create({"service.name": "support-bot"}))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("opentelemetry.instrumentation.openai_v2")
    try:
        ok = _chat(tracer, CHAT, (1234, 56))
        failed = _chat(tracer, CHAT, None, RateLimitError("Rate limit reached"))
        with tracer.start_as_current_span(
                f"embeddings {EMBED}", kind=SpanKind.CLIENT,
                attributes={"gen_ai.operation.name": "embeddings", "gen_ai.system": "openai",
                            "gen_ai.request.model": EMBED}) as embedding:
            embedding.set_attribute("gen_ai.response.model", EMBED)
            embedding.set_attribute("gen_ai.usage.input_tokens", 42)
        with tracer.start_as_current_span("GET /health"):
            pass
    finally:
        provider.shutdown()

    calls = {call["id"]: call for call in gateway.calls(api_key_id=key_id)}
    assert len(calls) == 3
    record = calls[f"otel-{ok.trace_id:032x}-{ok.span_id:016x}"]
    assert (record["model"], record["upstream_model"]) == (CHAT, f"{CHAT}-2026-01-01")
    assert (record["input_tokens"], record["output_tokens"]) == (1234, 56)
    assert record["status_code"] == 200 and record["model_category"] == "chat"
    assert record["metadata"] == {"source": "otlp", "operation": "chat", "provider": "openai",
                                  "service": "support-bot"}
    error = calls[f"otel-{failed.trace_id:032x}-{failed.span_id:016x}"]
    assert error["status_code"] == 429 and error["total_tokens"] == 0
    assert not error["estimated"]
    embedded = [c for c in calls.values() if c["model"] == EMBED]
    assert embedded[0]["input_tokens"] == 42 and embedded[0]["model_category"] == "embedding"
