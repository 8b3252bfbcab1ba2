"""POST /v1/traces over real HTTP, on SQLite and PostgreSQL: OTLP/HTTP in protobuf and JSON,
each GenAI span one call record of the key that sent it, the answer as the OTLP spec has it.
"""

from __future__ import annotations

import gzip
import time
import zlib
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import httpx
import orjson
import pytest
from google.rpc.status_pb2 import Status as RpcStatus
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from tallygate.store.retention import raise_purge_floor
from tests.gateway.conftest import CHAT, EMBED, PRICE, GatewayUnderTest
from tests.gateway.otlp_spans import (
    NS,
    chat,
    json_request,
    json_span,
    request,
    response_of,
    span,
)

PROTOBUF = {"Content-Type": "application/x-protobuf"}
JSON = {"Content-Type": "application/json"}
M = Decimal(1_000_000)


def post(gateway: GatewayUnderTest, body: bytes, secret: str | None,
         headers: dict[str, str] | None = None) -> httpx.Response:
    sent = dict(headers or PROTOBUF)
    if secret is not None:
        sent["Authorization"] = f"Bearer {secret}"
    return httpx.post(f"{gateway.url}/v1/traces", content=body, headers=sent, timeout=30)


def by_id(gateway: GatewayUnderTest, key_id: str) -> dict[str, dict[str, Any]]:
    return {call["id"]: call for call in gateway.calls(api_key_id=key_id)}


def test_protobuf_export_records_each_genai_span(gateway: GatewayUnderTest) -> None:
    key_id, secret = gateway.new_key()
    call = span(chat(CHAT, 1200, 300, **{
        "gen_ai.response.model": "deepseek-r1-32b-0528",
        "gen_ai.usage.cache_read.input_tokens": 1000,
        "gen_ai.usage.reasoning.output_tokens": 120,
        "gen_ai.response.finish_reasons": "stop"}), duration_ms=2345)
    embedding = span({"gen_ai.operation.name": "embeddings", "gen_ai.request.model": EMBED,
                      "gen_ai.usage.input_tokens": 64})
    http = span({"http.request.method": "GET", "url.full": "https://example.com/"})
    agent = span({"gen_ai.operation.name": "invoke_agent", "gen_ai.request.model": CHAT,
                  "gen_ai.usage.input_tokens": 5000, "gen_ai.usage.output_tokens": 900})
    response = post(gateway, request(call, embedding, http, agent).SerializeToString(), secret)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-protobuf"
    assert not response_of(response.content).HasField("partial_success")

    calls = by_id(gateway, key_id)
    assert len(calls) == 2  # the HTTP span and the agent's (which wraps calls) are not calls
    record = calls[f"otel-{call.trace_id.hex()}-{call.span_id.hex()}"]
    assert record["model"] == CHAT and record["upstream_model"] == "deepseek-r1-32b-0528"
    assert (record["input_tokens"], record["cached_input_tokens"], record["output_tokens"],
            record["reasoning_tokens"], record["total_tokens"]) == (1200, 1000, 300, 120, 1500)
    assert record["status_code"] == 200 and record["latency_ms"] == 2345
    assert record["call_type"] == "model" and record["model_category"] == "chat"
    assert record["endpoint"] == "/v1/traces" and not record["estimated"]
    assert record["metadata"] == {"source": "otlp", "operation": "chat",
                                  "provider": "openai", "service": "billing-bot"}
    start_us = call.start_time_unix_nano // 1000
    assert record["ts"] == datetime.fromtimestamp(start_us // 10**6, UTC).replace(
        microsecond=start_us % 10**6).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    # Priced as a gateway call of the same model: cached input at its own price.
    expected = (200 * PRICE.input_per_million + 1000 * PRICE.cached_input_per_million
                + 300 * PRICE.output_per_million) / M
    assert Decimal(record["cost"]) == expected
    embedded = calls[f"otel-{embedding.trace_id.hex()}-{embedding.span_id.hex()}"]
    assert embedded["model_category"] == "embedding" and embedded["input_tokens"] == 64


def test_json_export_with_hex_ids_string_integers_and_enum_integers(
        gateway: GatewayUnderTest) -> None:
    key_id, secret = gateway.new_key()
    start = time.time_ns() - 30 * NS
    trace_hex, span_hex = "5B8EFFF798038103D269B633813FC60C", "EEE19B7EC3C1B174"
    body = json_request(
        json_span(trace_hex, span_hex, [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": CHAT}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "812"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": 90}},
            {"key": "gen_ai.usage.cache_creation.input_tokens", "value": {"intValue": "500"}},
            {"key": "error.type", "value": {"stringValue": "429"}}],
            start_ns=start, end_ns=start + 750_000_000,
            status={"code": 2, "message": "rate limited"}))
    response = post(gateway, orjson.dumps(body), secret, JSON)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {}  # full success: partialSuccess left unset
    record = by_id(gateway, key_id)[f"otel-{trace_hex.lower()}-{span_hex.lower()}"]
    assert (record["input_tokens"], record["output_tokens"], record["cache_write_tokens"],
            record["status_code"], record["latency_ms"]) == (812, 90, 500, 429, 750)
    assert record["metadata"]["service"] == "json-app"
    assert record["metadata"]["error_type"] == "429"


def test_gzip_and_deflate_bodies(gateway: GatewayUnderTest) -> None:
    key_id, secret = gateway.new_key()
    first, second = span(chat(CHAT, 10, 5)), span(chat(CHAT, 20, 5))
    gzipped = post(gateway, gzip.compress(request(first).SerializeToString()), secret,
                   {**PROTOBUF, "Content-Encoding": "gzip"})
    deflated = post(gateway, zlib.compress(orjson.dumps(json_request(json_span(
        second.trace_id.hex(), second.span_id.hex(),
        [{"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
         {"key": "gen_ai.request.model", "value": {"stringValue": CHAT}}],
        start_ns=second.start_time_unix_nano, end_ns=second.end_time_unix_nano)))),
        secret, {**JSON, "Content-Encoding": "deflate"})
    assert (gzipped.status_code, deflated.status_code) == (200, 200)
    assert len(by_id(gateway, key_id)) == 2


def test_older_attribute_names(gateway: GatewayUnderTest) -> None:
    key_id, secret = gateway.new_key()
    old = span({"gen_ai.system": "anthropic", "gen_ai.request.model": CHAT,
                "gen_ai.usage.prompt_tokens": 700, "gen_ai.usage.completion_tokens": 40,
                "gen_ai.usage.cache_read_input_tokens": 100,
                "gen_ai.usage.cache_creation_input_tokens": 200})
    written = span(chat(CHAT, 300, 10, **{"gen_ai.usage.cache_write.input_tokens": 250}))
    assert post(gateway, request(old, written).SerializeToString(), secret).status_code == 200
    calls = by_id(gateway, key_id)
    record = calls[f"otel-{old.trace_id.hex()}-{old.span_id.hex()}"]
    assert (record["input_tokens"], record["output_tokens"], record["cached_input_tokens"],
            record["cache_write_tokens"]) == (700, 40, 100, 200)
    assert record["metadata"]["provider"] == "anthropic"
    assert record["model_category"] == "other"  # no operation named
    assert calls[f"otel-{written.trace_id.hex()}-{written.span_id.hex()}"][
        "cache_write_tokens"] == 250


def test_error_status(gateway: GatewayUnderTest) -> None:
    key_id, secret = gateway.new_key()
    error = Status.STATUS_CODE_ERROR
    spans = {
        429: span(chat(CHAT, 0, 0, **{"error.type": "RateLimitError"}), status=error),
        503: span(chat(CHAT, 0, 0, **{"error.type": "503"}), status=error),
        500: span(chat(CHAT, 0, 0, **{"error.type": "ConnectionResetError"}), status=error),
        502: span(chat(CHAT, 0, 0, **{"http.response.status_code": 502}), status=error),
        200: span(chat(CHAT, 5, 5, **{"error.type": "429"}), status=Status.STATUS_CODE_OK),
    }
    assert post(gateway, request(*spans.values()).SerializeToString(),
                secret).status_code == 200
    calls = by_id(gateway, key_id)
    for status, sent in spans.items():
        assert calls[f"otel-{sent.trace_id.hex()}-{sent.span_id.hex()}"][
            "status_code"] == status
    summary = gateway.summary(api_key_id=key_id)
    assert summary["cards"]["model_calls"] == 5


def test_partial_success_keeps_the_valid_spans(gateway: GatewayUnderTest) -> None:
    key_id, secret = gateway.new_key()
    good = span(chat(CHAT, 100, 10))
    bad = [span(chat(CHAT, -1, 10)),
           span({"gen_ai.operation.name": "chat", "gen_ai.usage.input_tokens": 5}),
           span(chat(CHAT, 5, 5), duration_ms=-10),
           span(chat(CHAT, 5, 5), trace_id=bytes(16)),
           span(chat(CHAT, 5, 5), start_ns=10 * NS),  # 1970: before the ledger's earliest
           span(chat(CHAT, 5, 50, **{"gen_ai.usage.reasoning.output_tokens": 60}))]
    response = post(gateway, request(good, *bad).SerializeToString(), secret)
    assert response.status_code == 200
    partial = response_of(response.content).partial_success
    assert partial.rejected_spans == len(bad)
    message = partial.error_message
    assert message.startswith(f"{len(bad)} of {len(bad) + 1} GenAI spans rejected")
    for words in ("gen_ai.usage.input_tokens: must not be negative",
                  "needs gen_ai.request.model or gen_ai.response.model",
                  "ends before it starts", "resourceSpans[0].scopeSpans[0].spans[4]",
                  "ts: is before 2000-01-01",
                  "reasoning_tokens: cannot exceed output_tokens"):
        assert words in message
    assert list(by_id(gateway, key_id)) == [f"otel-{good.trace_id.hex()}-{good.span_id.hex()}"]

    # In JSON the same answer is OTLP/JSON's (int64 as a string).
    again = post(gateway, orjson.dumps(json_request(json_span(
        "0" * 32, "1" * 16, [], start_ns=good.start_time_unix_nano,
        end_ns=good.end_time_unix_nano) | {"attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": CHAT}}]})), secret, JSON)
    assert again.json()["partialSuccess"]["rejectedSpans"] == "1"
    assert "not all zero" in again.json()["partialSuccess"]["errorMessage"]


def test_a_resent_export_counts_once_in_the_ledger_and_the_quota(
        gateway: GatewayUnderTest) -> None:
    def chat_call(secret: str) -> httpx.Response:
        return httpx.post(f"{gateway.url}/v1/chat/completions", json={
            "model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
            headers={"Authorization": f"Bearer {secret}"}, timeout=30)

    _, probe = gateway.new_key()
    used = chat_call(probe).json()["usage"]["total_tokens"]  # what one chat call takes
    # The first chat call starts each key's quota counter (from the ledger); then the spans.
    key_id, secret = gateway.new_key(quota_tokens=used + 700)
    assert chat_call(secret).status_code == 200
    body = request(span(chat(CHAT, 500, 100))).SerializeToString()
    for _ in range(3):
        assert post(gateway, body, secret).status_code == 200
    assert len(by_id(gateway, key_id)) == 2  # the chat call and the span, once
    assert gateway.summary(api_key_id=key_id)["cards"]["total_tokens"] == used + 600
    assert chat_call(secret).status_code == 200  # used + 600 of used + 700: counted once

    _, counted = gateway.new_key(quota_tokens=used + 700)
    assert chat_call(counted).status_code == 200
    # A quota never refuses reported calls (they happened) ...
    assert post(gateway, request(span(chat(CHAT, 700, 100))).SerializeToString(),
                counted).status_code == 200
    assert chat_call(counted).status_code == 429  # ... but they count against it


def test_key_limits_apply(gateway: GatewayUnderTest) -> None:
    body = request(span(chat(CHAT, 1, 1))).SerializeToString()
    _, limited = gateway.new_key(rpm_limit=2)
    assert [post(gateway, body, limited).status_code for _ in range(3)] == [200, 200, 429]
    refused = post(gateway, body, limited)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert "requests per minute" in RpcStatus.FromString(refused.content).message

    disabled_id, disabled = gateway.new_key()
    gateway.keys.set_status(disabled_id, "disabled", "test")
    assert post(gateway, body, disabled).status_code == 403
    _, elsewhere = gateway.new_key(allowed_ips=["10.1.2.0/24"])
    assert post(gateway, body, elsewhere).status_code == 403

    only_id, only_embed = gateway.new_key(allowed_models=[EMBED])
    response = post(gateway, request(span(chat(CHAT, 1, 1)), span(chat(EMBED, 3, 0)))
                    .SerializeToString(), only_embed)
    partial = response_of(response.content).partial_success
    assert partial.rejected_spans == 1 and "may not use the model" in partial.error_message
    assert [c["model"] for c in by_id(gateway, only_id).values()] == [EMBED]


def test_internal_keys_calls_are_internal(gateway: GatewayUnderTest) -> None:
    key_id, secret = gateway.new_key(internal=True)
    assert post(gateway, request(span(chat(CHAT, 1, 1))).SerializeToString(),
                secret).status_code == 200
    assert [c["call_type"] for c in by_id(gateway, key_id).values()] == ["internal"]


def test_refusals_are_google_rpc_status_in_the_requests_encoding(
        gateway: GatewayUnderTest, monkeypatch: pytest.MonkeyPatch) -> None:
    _, secret = gateway.new_key()
    body = request(span(chat(CHAT, 1, 1))).SerializeToString()
    missing = post(gateway, body, None)
    assert missing.status_code == 401
    assert missing.headers["content-type"] == "application/x-protobuf"
    assert RpcStatus.FromString(missing.content).code == 16  # UNAUTHENTICATED
    unknown = post(gateway, b"{}", "sk-not-a-key", JSON)
    assert unknown.status_code == 401 and unknown.json()["code"] == 16
    assert unknown.json()["message"]

    assert post(gateway, body, secret, {"Content-Type": "text/plain"}).status_code == 415
    assert post(gateway, body, secret, {**PROTOBUF, "Content-Encoding": "br"}).status_code \
        == 415
    for content, headers in ((b"\xff\xff\xff", PROTOBUF), (b"{not json", JSON),
                             (b"[1, 2]", JSON), (b'{"resourceSpans": 5}', JSON),
                             (b"not gzip", {**PROTOBUF, "Content-Encoding": "gzip"})):
        refused = post(gateway, content, secret, headers)
        assert refused.status_code == 400, content
        assert refused.headers["content-type"] == headers["Content-Type"]

    # The gateway's request-body limit, before and after decompression.
    monkeypatch.setattr("tallygate.gateway.requests.MAX_BODY_BYTES", 4096)
    monkeypatch.setattr("tallygate.gateway.traces.MAX_BODY_BYTES", 4096)
    assert post(gateway, b"\x00" * 5000, secret).status_code == 413
    bomb = gzip.compress(request(*[span(chat(CHAT, 1, 1)) for _ in range(100)])
                         .SerializeToString())
    assert len(bomb) < 4096
    too_large = post(gateway, bomb, secret, {**PROTOBUF, "Content-Encoding": "gzip"})
    assert too_large.status_code == 413
    assert "decompressed" in RpcStatus.FromString(too_large.content).message


def test_an_empty_export_is_a_success(gateway: GatewayUnderTest) -> None:
    _, secret = gateway.new_key()
    assert post(gateway, b"", secret).status_code == 200
    assert post(gateway, b"{}", secret, JSON).json() == {}


def test_tags_and_metrics(gateway: GatewayUnderTest) -> None:
    key_id, secret = gateway.new_key()
    sent = span(chat("otlp-only-model", 70, 7))
    response = post(gateway, request(sent).SerializeToString(), secret,
                    {**PROTOBUF, "X-Tallygate-Tags": "team=search,source=spoofed"})
    assert response.status_code == 200
    record = by_id(gateway, key_id)[f"otel-{sent.trace_id.hex()}-{sent.span_id.hex()}"]
    assert record["metadata"]["team"] == "search"
    assert record["metadata"]["source"] == "otlp"  # the span's own fields win
    with gateway.admin() as admin:
        metrics = admin.get("/metrics").text
    requests = [line for line in metrics.splitlines()
                if line.startswith("tallygate_requests_total") and "otlp-only-model" in line]
    assert requests and requests[0].endswith(" 1.0")


def test_spans_older_than_the_purge_floor_are_rejected(gateway: GatewayUnderTest) -> None:
    key_id, secret = gateway.new_key()
    raise_purge_floor(gateway.db, time.time_ns() // 1000 - 86_400 * 10**6)  # yesterday's 00:00
    recent, old = span(chat(CHAT, 10, 1)), span(chat(CHAT, 10, 1),
                                                 start_ns=time.time_ns() - 2 * 86_400 * NS)
    response = post(gateway, request(recent, old).SerializeToString(), secret)
    partial = response_of(response.content).partial_success
    assert partial.rejected_spans == 1
    assert f"span {old.span_id.hex()}: ts: older than the ledger's purge floor" \
        in partial.error_message
    assert list(by_id(gateway, key_id)) == [
        f"otel-{recent.trace_id.hex()}-{recent.span_id.hex()}"]
