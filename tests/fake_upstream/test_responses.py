"""/v1/responses answers in the Responses API's own shapes, checked with the openai SDK."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pydantic
from openai.types.responses import Response, ResponseStreamEvent

EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)




def test_a_response_parses_strictly_and_reports_cached_and_reasoning_tokens(
        fake_url: str) -> None:
    body = {"model": "o4-mini", "input": "Summarise the usage of key 7.",
            "fake": {"input_tokens": 3000, "output_tokens": 40, "cached_tokens": 2048,
                     "reasoning_tokens": 120}}
    raw = httpx.post(f"{fake_url}/v1/responses", json=body).json()
    response = Response.model_validate(raw)
    assert response.status == "completed" and response.model == "o4-mini-2025-04-16"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output_text == "tok " * 40
    usage = response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.input_tokens_details.cached_tokens) == (3000, 2048)
    assert (usage.output_tokens, usage.output_tokens_details.reasoning_tokens) == (160, 120)
    assert usage.total_tokens == 3160


def test_the_sdk_reads_the_same_answer_for_the_same_request(
        fake_url: str, oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="gpt-4.1", input="hello there")
    again = oai.responses.create(model="gpt-4.1", input="hello there")
    assert first.usage == again.usage and first.usage is not None
    assert first.usage.output_tokens_details.reasoning_tokens == 0  # not a reasoning model
    assert first.usage.input_tokens > 0 and first.output_text


def test_a_stream_is_the_real_event_sequence_ending_with_usage(
        fake_url: str, oai: openai.OpenAI) -> None:
    events = list(oai.responses.create(
        model="gpt-5", input="stream me", stream=True,
        extra_body={"fake": {"cached_tokens": 1152, "input_tokens": 2000}}))
    kinds = [event.type for event in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[2:4] == ["response.output_item.added", "response.output_item.done"]  # thinking
    assert kinds[4:6] == ["response.output_item.added", "response.content_part.added"]
    deltas = [e for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) == 4
    assert kinds[-4:] == ["response.output_text.done", "response.content_part.done",
                          "response.output_item.done", "response.completed"]
    assert [e.sequence_number for e in events] == list(range(len(events)))
    done = events[-1]
    assert done.type == "response.completed"
    usage = done.response.usage
    assert usage is not None and usage.input_tokens == 2000
    assert usage.input_tokens_details.cached_tokens == 1152
    assert usage.output_tokens_details.reasoning_tokens > 0
    assert "".join(e.delta for e in deltas) == done.response.output_text
    assert usage.output_tokens == (usage.output_tokens_details.reasoning_tokens
                                   + len(done.response.output_text) // 4)


def test_every_event_on_the_wire_is_named_and_validates(fake_url: str) -> None:
    with httpx.stream("POST", f"{fake_url}/v1/responses", json={
            "model": "gpt-4.1", "input": "x", "stream": True}) as answer:
        text = answer.read().decode()
    blocks = [b for b in text.split("\n\n") if b]
    for block in blocks:
        name_line, data_line = block.split("\n")
        event = EVENTS.validate_json(data_line.removeprefix("data: "))
        assert name_line == f"event: {event.type}"


def test_a_cut_stream_ends_without_the_completed_event(fake_url: str) -> None:
    with httpx.stream("POST", f"{fake_url}/v1/responses", json={
            "model": "gpt-4.1", "input": "x", "stream": True,
            "fake": {"cut_after": 2}}) as answer:
        text = answer.read().decode()
    assert text.count("response.output_text.delta\n") == 2
    assert "response.completed" not in text


def test_no_usage_when_asked_for_none(fake_url: str) -> None:
    raw = httpx.post(f"{fake_url}/v1/responses", json={
        "model": "gpt-4.1", "input": "x", "fake": {"no_usage": True}}).json()
    assert Response.model_validate(raw).usage is None
