"""Usage as upstreams write it, and the estimates made where they do not say."""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tallygate.gateway.sse import StreamWatcher
from tallygate.gateway.usage import Usage, estimate_input_tokens, output_chars, parse_usage


@pytest.mark.parametrize(("usage", "expected"), [
    ({"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}, Usage(12, 5)),
    ({"prompt_tokens": 12.0, "completion_tokens": 5.0}, Usage(12, 5)),
    ({"input_tokens": 7, "output_tokens": 3}, Usage(7, 3)),
    ({"prompt_tokens": 8, "total_tokens": 8}, Usage(8, 0)),  # embeddings
    ({"prompt_tokens": 8, "total_tokens": 11}, Usage(8, 3)),
    ({"completion_tokens": 4, "total_tokens": 10}, Usage(6, 4)),
    ({"prompt_tokens": 10, "completion_tokens": 4,
      "prompt_tokens_details": {"cached_tokens": 6},
      "completion_tokens_details": {"reasoning_tokens": 9}}, Usage(10, 4, 6, 4)),
    ({"prompt_tokens": 10, "completion_tokens": 1, "prompt_cache_hit_tokens": 3},
     Usage(10, 1, 3)),
    # Nothing that says what went in: the call is estimated instead of recorded as free.
    ({}, None),
    ({"total_tokens": 50}, None),
    ({"prompt_tokens": "12", "completion_tokens": "5"}, None),
    ({"prompt_tokens": -1, "completion_tokens": 5}, None),
    ({"prompt_tokens": True, "completion_tokens": 5}, None),
    ({"prompt_tokens": 1.5, "completion_tokens": 5}, None),
    ({"completion_tokens": 9, "total_tokens": 4}, None),
    # Beyond any real call: a broken upstream, not ten-to-the-300 tokens to bill.
    ({"prompt_tokens": 1e300, "completion_tokens": 5}, None),
    ({"prompt_tokens": 2**64, "completion_tokens": 5}, None),
    ({"prompt_tokens": 10, "completion_tokens": 10**11}, None),
    ({"prompt_tokens": 10, "completion_tokens": "5"}, None),
    ({"prompt_tokens": 10, "completion_tokens": "5", "total_tokens": 15}, Usage(10, 5)),
    (None, None), ([], None), ("12", None),
])
def test_usage_as_upstreams_write_it(usage: Any, expected: Usage | None) -> None:
    assert parse_usage(usage) == expected


def test_tool_calls_count_as_generated_and_as_sent() -> None:
    arguments = '{"city": "Paris", "unit": "celsius"}'
    answer = {"choices": [{"message": {"content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "get_weather", "arguments": arguments}}]}}]}
    assert output_chars(answer, "message") == len("get_weather") + len(arguments)
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}}}}]
    plain = {"messages": [{"role": "user", "content": "weather?"}]}
    with_tools = plain | {"tools": tools}
    assert estimate_input_tokens(with_tools) == (
        len("weather?") + 16 + len(orjson.dumps(tools)) + 3) // 4
    follow_up = {"messages": [{"role": "assistant", "content": None,
                               "tool_calls": answer["choices"][0]["message"]["tool_calls"]}]}
    assert estimate_input_tokens(follow_up) == (len("get_weather") + len(arguments) + 16 + 3) // 4


def test_a_streamed_tool_call_without_usage_is_estimated_from_its_arguments() -> None:
    pieces = ['{"city":', ' "Par', 'is"}']
    events = [{"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"name": "get_weather", "arguments": ""}}]}}]}]
    events += [{"choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "function": {"arguments": piece}}]}}]} for piece in pieces]
    watcher = StreamWatcher(drop_usage_chunk=False)
    for event in events:
        watcher.feed(b"data: " + orjson.dumps(event) + b"\n\n")
    watcher.feed(b"data: [DONE]\n\n")
    watcher.finish()
    assert watcher.usage is None
    assert watcher.content_chars == len("get_weather") + sum(map(len, pieces))


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": 9, "completion_tokens": 2}, {}, {"total_tokens": 4}])
def test_the_usage_chunk_the_client_did_not_ask_for_is_removed_even_if_unreadable(
        usage: dict[str, Any]) -> None:
    watcher = StreamWatcher(drop_usage_chunk=True)
    content = b'data: {"choices": [{"index": 0, "delta": {"content": "hi"}}]}\n\n'
    assert watcher.feed(content) == content
    assert watcher.feed(b"data: " + orjson.dumps({"choices": [], "usage": usage}) +
                        b"\n\n") == b""
    assert watcher.feed(b"data: [DONE]\n\n") == b"data: [DONE]\n\n"


def test_the_estimate_survives_bodies_as_deep_as_the_parser_goes() -> None:
    # orjson decodes 1 024 levels and encodes 254: a body in between reaches the estimate.
    deep = orjson.loads(b"[" * 1020 + b'"four"' + b"]" * 1020)
    body = {"messages": [{"role": "user", "content": deep}], "prompt": deep, "tools": [deep]}
    assert estimate_input_tokens(body) > 0
    assert output_chars({"choices": [{"message": {"content": deep}, "delta": deep}]},
                        "message") == 4


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                    lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.sampled_from(
                        ["usage", "choices", "message", "delta", "content", "text",
                         "prompt_tokens", "completion_tokens", "total_tokens",
                         "prompt_tokens_details", "cached_tokens", "tool_calls", "function",
                         "arguments", "name", "messages", "prompt", "input", "tools"]),
                        inner, max_size=5), max_leaves=30)


@settings(max_examples=300, deadline=None)
@given(value=JSON)
def test_reading_an_answer_or_a_body_of_any_shape_never_fails(value: Any) -> None:
    body = value if isinstance(value, dict) else {"messages": value, "prompt": value}
    assert estimate_input_tokens(body) >= 0
    usage = parse_usage(value.get("usage") if isinstance(value, dict) else value)
    assert usage is None or min(usage.input_tokens, usage.output_tokens) >= 0
    assert output_chars(body, "message") >= 0 and output_chars(body, "delta") >= 0
    watcher = StreamWatcher(drop_usage_chunk=True)
    watcher.feed(b"data: " + json.dumps(value).encode() + b"\n\n")  # NaN and big ints too
    watcher.finish()
