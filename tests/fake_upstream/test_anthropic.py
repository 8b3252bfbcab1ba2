"""/v1/messages answers in Anthropic's shapes, checked with the anthropic SDK when installed."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest

anthropic = pytest.importorskip("anthropic")
from anthropic.types import Message, RawMessageStreamEvent  # noqa: E402

CACHED_SYSTEM = [{"type": "text", "text": "You answer questions about API usage.",
                  "cache_control": {"type": "ephemeral"}}]
WEATHER = {"name": "get_weather", "description": "The weather at a place",
           "input_schema": {"type": "object", "properties": {
               "location": {"type": "string"}, "unit": {"type": "string",
                                                         "enum": ["celsius", "fahrenheit"]}},
                            "required": ["location"]}}




def body(**extra: Any) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-5", "max_tokens": 1024,
            "messages": [{"role": "user", "content": "How much did key 7 spend?"}], **extra}


def sdk(request: dict[str, Any]) -> dict[str, Any]:
    """The request as SDK arguments: the fake controls go as an extra body field."""
    fake = request.pop("fake", None)
    return {**request, **({"extra_body": {"fake": fake}} if fake else {})}


def test_a_message_with_a_cache_write_split_by_ttl(fake_url: str) -> None:
    raw = httpx.post(f"{fake_url}/v1/messages", json=body(
        system=CACHED_SYSTEM, fake={"input_tokens": 5000, "output_tokens": 30,
                                    "cache_write_tokens": 4000,
                                    "cache_write_1h_tokens": 1000})).json()
    message = Message.model_validate(raw)
    assert message.model == "claude-sonnet-4-5-20250929" and message.stop_reason == "end_turn"
    usage = message.usage
    assert usage.cache_creation_input_tokens == 4000 and usage.cache_read_input_tokens == 0
    assert usage.cache_creation is not None
    assert (usage.cache_creation.ephemeral_5m_input_tokens,
            usage.cache_creation.ephemeral_1h_input_tokens) == (3000, 1000)
    assert usage.input_tokens == 1000  # only the uncached rest, as Anthropic counts it
    assert usage.output_tokens == 30


def test_cache_control_makes_reads_or_writes_that_add_up_to_the_trace_input(
        fake_url: str, claude: Any) -> None:
    seen = set()
    for n in range(40):
        request = body(system=CACHED_SYSTEM, fake={"input_tokens": 4096})
        request["messages"][0]["content"] = f"question {n}"
        usage = claude.messages.create(**sdk(request)).usage
        total = (usage.input_tokens + (usage.cache_read_input_tokens or 0)
                 + (usage.cache_creation_input_tokens or 0))
        assert total == 4096
        seen.add("read" if usage.cache_read_input_tokens else "write"
                 if usage.cache_creation_input_tokens else "none")
    assert seen == {"read", "write"}
    plain = claude.messages.create(**sdk(body(fake={"input_tokens": 4096}))).usage
    assert plain.cache_read_input_tokens == plain.cache_creation_input_tokens == 0


def test_a_one_hour_cache_write_goes_to_the_one_hour_split(fake_url: str, claude: Any) -> None:
    system = [{**CACHED_SYSTEM[0], "cache_control": {"type": "ephemeral", "ttl": "1h"}}]
    usage = claude.messages.create(**sdk(body(
        system=system, fake={"input_tokens": 3000, "cache_write_tokens": 2048}))).usage
    assert usage.cache_creation.ephemeral_1h_input_tokens == 2048
    assert usage.cache_creation.ephemeral_5m_input_tokens == 0


def test_a_stream_parses_and_its_final_usage_is_cumulative(fake_url: str, claude: Any) -> None:
    request = body(system=CACHED_SYSTEM, fake={"input_tokens": 3000, "output_tokens": 50,
                                               "cache_read_tokens": 2048})
    with claude.messages.stream(**sdk(request)) as stream:
        events = list(stream)
        final = stream.get_final_message()
    kinds = [e.type for e in events]
    assert kinds[0] == "message_start" and kinds[-1] == "message_stop"
    assert "message_delta" in kinds and kinds.count("content_block_stop") == 1
    assert final.usage.output_tokens == 50 and final.usage.cache_read_input_tokens == 2048
    assert final.usage.input_tokens == 952
    assert final.content[0].text == "tok " * 50


def test_every_streamed_event_is_named_and_validates(fake_url: str) -> None:
    with httpx.stream("POST", f"{fake_url}/v1/messages",
                      json=body(stream=True, tools=[WEATHER])) as answer:
        text = answer.read().decode()
    names = []
    for block in filter(None, text.split("\n\n")):
        name_line, data_line = block.split("\n")
        name = name_line.removeprefix("event: ")
        names.append(name)
        data = orjson.loads(data_line.removeprefix("data: "))
        assert data["type"] == name
        if name != "ping":
            pydantic_event(data)
    assert names[:3] == ["message_start", "content_block_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    start = orjson.loads(text.split("\n\n")[0].split("\n")[1][6:])
    delta = [orjson.loads(b.split("\n")[1][6:]) for b in text.split("\n\n")
             if b.startswith("event: message_delta")][0]
    assert start["message"]["usage"]["output_tokens"] == 1
    assert delta["usage"]["output_tokens"] > 1
    assert delta["usage"]["input_tokens"] == start["message"]["usage"]["input_tokens"]


def pydantic_event(data: dict[str, Any]) -> None:
    import pydantic

    pydantic.TypeAdapter(RawMessageStreamEvent).validate_python(data)


@pytest.mark.parametrize("stream", [False, True])
def test_offered_tools_get_a_tool_use_block(fake_url: str, stream: bool, claude: Any) -> None:
    request = body(tools=[WEATHER])
    if stream:
        with claude.messages.stream(**sdk(request)) as events:
            message = events.get_final_message()
    else:
        message = claude.messages.create(**sdk(request))
    assert message.stop_reason == "tool_use"
    assert [block.type for block in message.content] == ["text", "tool_use"]
    call = message.content[1]
    assert call.name == "get_weather" and call.id.startswith("toolu_")
    assert call.input == {"location": "example", "unit": "celsius"}
    refused = claude.messages.create(**sdk(body(tools=[WEATHER],
                                                tool_choice={"type": "none"})))
    assert refused.stop_reason == "end_turn"


def test_failures_come_in_anthropics_error_shape(fake_url: str, claude: Any) -> None:
    answer = httpx.post(f"{fake_url}/v1/messages", json=body(fake={"status": 529}))
    assert answer.status_code == 529
    assert answer.json() == {"type": "error", "error": {
        "type": "overloaded_error", "message": "injected failure (529)"}}
    with pytest.raises(anthropic.APIStatusError) as raised:
        claude.messages.create(**sdk(body(fake={"status": 429})))
    assert raised.value.status_code == 429
    assert raised.value.body["error"]["type"] == "rate_limit_error"


def test_count_tokens(fake_url: str, claude: Any) -> None:
    counted = claude.messages.count_tokens(
        model="claude-sonnet-4-5", messages=[{"role": "user", "content": "hi"}])
    assert counted.input_tokens > 0
