"""Reading Anthropic's usage: a message's, and a stream's from message_start + message_delta."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st

from tallygate.gateway.anthropic_usage import (
    MessageWatcher,
    Reported,
    estimate_message_input,
    usage_of_message,
)
from tallygate.gateway.usage import Usage

START = {"input_tokens": 12, "cache_read_input_tokens": 1000,
         "cache_creation_input_tokens": 500, "output_tokens": 1,
         "cache_creation": {"ephemeral_5m_input_tokens": 200, "ephemeral_1h_input_tokens": 300}}
BILL = Usage(1512, 87, 1000, 0, cache_write_tokens=500)


def event(data: dict[str, Any]) -> bytes:
    return b"event: " + data["type"].encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


def stream(start: dict[str, Any], delta: dict[str, Any] | None) -> bytes:
    events = [event({"type": "message_start", "message": {"model": "claude-x-1", "usage": start,
                                                          "content": []}}),
              event({"type": "content_block_start", "index": 0,
                     "content_block": {"type": "text", "text": ""}}),
              event({"type": "content_block_delta", "index": 0,
                     "delta": {"type": "text_delta", "text": "x" * 40}})]
    if delta is not None:
        events += [event({"type": "message_delta", "delta": {"stop_reason": "end_turn"},
                          "usage": delta}), event({"type": "message_stop"})]
    return b"".join(events)


def test_a_message_counts_all_input_and_keeps_the_split() -> None:
    usage, split, model = usage_of_message({"model": "claude-x-1",
                                            "usage": START | {"output_tokens": 87}})
    assert usage == BILL
    assert split == {"cache_write_5m_tokens": 200, "cache_write_1h_tokens": 300}
    assert model == "claude-x-1"


def test_cache_writes_given_only_by_their_split_are_its_sum() -> None:
    given_usage = {"input_tokens": 5, "output_tokens": 2, "cache_creation": {
        "ephemeral_5m_input_tokens": 7, "ephemeral_1h_input_tokens": 11}}
    usage, _, _ = usage_of_message({"usage": given_usage})
    assert usage == Usage(23, 2, 0, 0, cache_write_tokens=18)


def test_unreadable_counts_are_not_usage() -> None:
    assert usage_of_message({"usage": {"output_tokens": 3}})[0] is None
    assert usage_of_message({"usage": {"input_tokens": "12", "output_tokens": 3}})[0] is None
    assert usage_of_message({"usage": {"input_tokens": 2, "output_tokens": -1}})[0] is None
    assert usage_of_message([1, 2])[0] is None
    odd = {"input_tokens": 2, "output_tokens": 1, "cache_read_input_tokens": True,
           "cache_creation": [1], "output_tokens_details": "x"}
    assert usage_of_message({"usage": odd})[0] == Usage(2, 1)


def test_thinking_tokens_are_reasoning_within_the_output() -> None:
    usage, _, _ = usage_of_message({"usage": {"input_tokens": 1, "output_tokens": 50,
                                              "output_tokens_details": {
                                                  "thinking_tokens": 80}}})
    assert usage is not None and usage.reasoning_tokens == 50


def test_the_last_cumulative_count_is_the_bill() -> None:
    reported = Reported()
    reported.take({"input_tokens": 0, "output_tokens": 1})
    reported.take({"output_tokens": 30, "input_tokens": None})
    reported.take({"output_tokens": 60, "input_tokens": 25})
    assert reported.usage() == Usage(25, 60)


@given(cuts=st.lists(st.integers(0, 2000), max_size=8))
def test_a_stream_reads_the_same_however_it_is_cut(cuts: list[int]) -> None:
    """Events arrive in network pieces of any size; the bill is the same, and every byte is
    passed on."""
    body = stream(START, {"output_tokens": 87, "input_tokens": 12})
    watcher = MessageWatcher(drop_usage_chunk=False)
    passed = b""
    start = 0
    for cut in sorted({min(c, len(body)) for c in cuts}) + [len(body)]:
        passed += watcher.feed(body[start:cut])
        start = cut
    passed += watcher.finish()
    assert passed == body
    assert watcher.saw_done and watcher.final and watcher.upstream_model == "claude-x-1"
    assert watcher.settled_usage({}, 0) == BILL


def test_a_stream_without_its_delta_has_exact_input_and_estimated_output() -> None:
    watcher = MessageWatcher(drop_usage_chunk=False)
    watcher.feed(stream(START, None))
    assert not watcher.saw_done
    assert watcher.settled_usage({}, 0) == Usage(1512, 10, 1000, 0, estimated=True,
                                                 cache_write_tokens=500)


def test_a_stream_without_usage_is_estimated_from_the_request() -> None:
    watcher = MessageWatcher(drop_usage_chunk=False)
    watcher.feed(b"event: ping\ndata: {\"type\": \"ping\"}\n\n")
    body = {"system": "s" * 400, "messages": [{"role": "user", "content": "u" * 400}]}
    usage = watcher.settled_usage(body, 0)
    assert usage.estimated and usage.output_tokens == 0
    assert usage.input_tokens == estimate_message_input(body) > 200  # the system counts


def test_an_upstream_error_event_is_noted() -> None:
    watcher = MessageWatcher(drop_usage_chunk=False)
    out = watcher.feed(event({"type": "error", "error": {"type": "overloaded_error",
                                                         "message": "Overloaded"}}))
    assert out and watcher.upstream_error and not watcher.saw_done


def test_estimates_are_total() -> None:
    deep: Any = "x"
    for _ in range(5000):
        deep = [deep]
    assert estimate_message_input({"system": deep, "messages": [{"content": deep}],
                                   "tools": [deep]}) > 0
