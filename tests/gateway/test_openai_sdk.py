"""The official openai SDK, unchanged, against the gateway: the ledger equals what it saw."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from tests.gateway.conftest import CHAT, EMBED, SERVICE, GatewayUnderTest


def wait_for(condition: Callable[[], Any], timeout: float = 5.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


@pytest.fixture
def client(gateway: GatewayUnderTest) -> Iterator[Callable[[str], openai.OpenAI]]:
    """An SDK client for a key, closed after the test (an open connection left to the
    garbage collector is a ResourceWarning in some later test)."""
    made: list[openai.OpenAI] = []

    def for_key(key: str) -> openai.OpenAI:
        made.append(openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0))
        return made[-1]

    yield for_key
    for sdk in made:
        sdk.close()


def test_sdk_calls_are_metered_exactly(gateway: GatewayUnderTest,
                                       client: Callable[[str], openai.OpenAI]) -> None:
    key_id, key = gateway.new_key(name="sdk")
    sdk = client(key)
    seen_in = seen_out = 0
    reply = sdk.chat.completions.create(model=CHAT, max_tokens=40,
                                        messages=[{"role": "user", "content": "hello"}])
    assert reply.usage is not None
    seen_in += reply.usage.prompt_tokens
    seen_out += reply.usage.completion_tokens
    completion = sdk.completions.create(model=CHAT, prompt="def f():", max_tokens=12)
    assert completion.usage is not None
    seen_in += completion.usage.prompt_tokens
    seen_out += completion.usage.completion_tokens
    stream = sdk.chat.completions.create(model=CHAT, stream=True,
                                         stream_options={"include_usage": True},
                                         messages=[{"role": "user", "content": "stream"}])
    chunks = list(stream)
    assert chunks[-1].usage is not None and chunks[-1].choices == []
    seen_in += chunks[-1].usage.prompt_tokens
    seen_out += chunks[-1].usage.completion_tokens
    embedding = sdk.embeddings.create(model=EMBED, input=["a", "b"])
    seen_in += embedding.usage.prompt_tokens
    service = sdk.chat.completions.create(model=SERVICE, messages=[
        {"role": "user", "content": "ocr this"}])
    assert service.usage is not None
    seen_in += service.usage.prompt_tokens
    seen_out += service.usage.completion_tokens

    summary = wait_for(lambda: (s := gateway.summary(api_key_id=key_id))["cards"]["model_calls"]
                       == 5 and s)
    cards = summary["cards"]
    assert (cards["input_tokens"], cards["output_tokens"]) == (seen_in, seen_out)
    assert cards["service_calls"] == 1 and cards["internal_calls"] == 0
    records = gateway.calls(api_key_id=key_id)
    assert not any(r["estimated"] for r in records)
    assert {r["endpoint"] for r in records} == {"/v1/chat/completions", "/v1/completions",
                                                "/v1/embeddings"}
    # Cost: the route's price at the time of the call, exactly.
    chat = [r for r in records if r["model"] == CHAT]
    for record in chat:
        expected = (Decimal(record["input_tokens"]) * Decimal("0.50")
                    + Decimal(record["output_tokens"]) * Decimal("2.00")) / 1_000_000
        assert Decimal(record["cost"]) == expected
    ocr = next(r for r in records if r["model"] == SERVICE)
    assert Decimal(ocr["cost"]) == Decimal("0.002") and ocr["call_type"] == "service"
    embed = next(r for r in records if r["model"] == EMBED)
    assert embed["model_category"] == "embedding" and embed["output_tokens"] == 0


def test_stream_without_include_usage_hides_the_usage_chunk(
        gateway: GatewayUnderTest, client: Callable[[str], openai.OpenAI]) -> None:
    key_id, key = gateway.new_key()
    chunks = list(client(key).chat.completions.create(
        model=CHAT, stream=True, messages=[{"role": "user", "content": "no usage please"}]))
    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.choices for chunk in chunks)  # the usage-only chunk was removed
    record = wait_for(lambda: gateway.calls(api_key_id=key_id))[0]
    assert record["estimated"] is False and record["output_tokens"] > 0
    assert record["ttft_ms"] is not None and record["status_code"] == 200


def test_async_sdk_concurrent_streams(gateway: GatewayUnderTest) -> None:
    key_id, key = gateway.new_key()

    async def run() -> int:
        sdk = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0)
        async def one(i: int) -> int:
            stream = await sdk.chat.completions.create(
                model=CHAT, stream=True, stream_options={"include_usage": True},
                messages=[{"role": "user", "content": f"question {i}"}])
            total = 0
            async for chunk in stream:
                if chunk.usage:
                    total = chunk.usage.total_tokens
            return total
        totals = await asyncio.gather(*(one(i) for i in range(20)))
        await sdk.close()
        return sum(totals)

    seen = asyncio.run(run())
    summary = wait_for(lambda: (s := gateway.summary(api_key_id=key_id))["cards"]["model_calls"]
                       == 20 and s)
    assert summary["cards"]["total_tokens"] == seen


def test_upstream_without_usage_is_estimated(gateway: GatewayUnderTest) -> None:
    key_id, key = gateway.new_key()
    response = httpx.post(f"{gateway.url}/v1/chat/completions",
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": CHAT, "messages": [{"role": "user", "content": "x" * 40}],
                                "fake": {"no_usage": True, "output_tokens": 7}})
    assert response.status_code == 200 and "usage" not in response.json()
    record = wait_for(lambda: gateway.calls(api_key_id=key_id))[0]
    assert record["estimated"] is True
    assert record["output_tokens"] == 7  # the fake's text is 4 characters a token


def test_tags_and_request_id(gateway: GatewayUnderTest) -> None:
    key_id, key = gateway.new_key()
    response = httpx.post(f"{gateway.url}/v1/chat/completions",
                          headers={"Authorization": f"Bearer {key}",
                                   "X-Tallygate-Tags": "team=search, env=prod"},
                          json={"model": CHAT, "messages": []})
    request_id = response.headers["x-request-id"]
    record = wait_for(lambda: gateway.calls(api_key_id=key_id))[0]
    assert record["metadata"] == {"request_id": request_id, "team": "search", "env": "prod"}
    bad = httpx.post(f"{gateway.url}/v1/chat/completions",
                     headers={"Authorization": f"Bearer {key}", "X-Tallygate-Tags": "oops"},
                     json={"model": CHAT, "messages": []})
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "invalid_tags"


def test_unknown_fields_reach_the_upstream_unchanged(gateway: GatewayUnderTest) -> None:
    # The fake upstream obeys its own extension field: proof that the body went through.
    _, key = gateway.new_key()
    response = httpx.post(f"{gateway.url}/v1/chat/completions",
                          headers={"Authorization": f"Bearer {key}"},
                          json={"model": CHAT, "messages": [], "some_new_openai_field": [1, 2],
                                "fake": {"output_tokens": 3, "input_tokens": 11}})
    assert response.json()["usage"] == {"prompt_tokens": 11, "completion_tokens": 3,
                                        "total_tokens": 14}


@pytest.mark.parametrize("internal", [True, False])
def test_internal_keys_make_internal_calls(gateway: GatewayUnderTest, internal: bool,
                                           client: Callable[[str], openai.OpenAI]) -> None:
    key_id, key = gateway.new_key(internal=internal)
    client(key).chat.completions.create(model=SERVICE, messages=[])
    record = wait_for(lambda: gateway.calls(api_key_id=key_id))[0]
    assert record["call_type"] == ("internal" if internal else "service")


def test_a_stream_the_upstream_cuts_short_raises_in_the_sdk(
        gateway: GatewayUnderTest, client: Callable[[str], openai.OpenAI]) -> None:
    # The error event the gateway ends a broken stream with is what the SDK raises on; a
    # clean end would have let the caller take half an answer for the whole one.
    key_id, key = gateway.new_key(name="cut")
    stream = client(key).chat.completions.create(
        model=CHAT, stream=True, messages=[{"role": "user", "content": "cut"}],
        extra_body={"fake": {"chunks": 6, "cut_after": 2}})
    with pytest.raises(openai.APIError, match="before it was complete"):
        list(stream)
    record = wait_for(lambda: gateway.calls(api_key_id=key_id))[0]
    assert (record["status_code"], record["estimated"]) == (502, True)
