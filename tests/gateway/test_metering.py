"""Each endpoint's reader: what an answer bills, and never a failure on an odd shape."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from tallygate.gateway.metering import (
    generated_chars,
    images_usage,
    parse_pointer,
    rerank_usage,
    resolve_pointer,
    service_reader,
    speech_usage,
    tokens_usage,
    transcription_usage,
)
from tallygate.gateway.sse import ResponsesWatcher, TranscriptWatcher
from tallygate.gateway.usage import Usage

READERS = [tokens_usage, rerank_usage, transcription_usage, images_usage,
           service_reader("page", "/usage/pages"), service_reader("request", None)]
ODD = [{}, {"usage": [1]}, {"usage": {"type": "duration", "seconds": "long"}},
       {"meta": {"billed_units": {"search_units": -1}}}, {"data": "x"},
       {"usage": {"pages": float("inf")}}, {"duration": 1e400}, {"usage": {"pages": True}}]


@pytest.mark.parametrize("answer", ODD)
def test_no_answer_makes_a_reader_fail(answer: dict[str, Any]) -> None:
    for read in READERS:
        usage = read(answer)
        assert usage is None or isinstance(usage, Usage)
    assert generated_chars(answer) >= 0


def test_responses_usage_with_cache_reads_writes_and_reasoning() -> None:
    usage = tokens_usage({"usage": {
        "input_tokens": 1000, "input_tokens_details": {"cached_tokens": 600,
                                                       "cache_write_tokens": 300},
        "output_tokens": 50, "output_tokens_details": {"reasoning_tokens": 20},
        "total_tokens": 1050}})
    assert usage == Usage(1000, 50, 600, 20, cache_write_tokens=300)


def test_rerank_shapes() -> None:
    assert rerank_usage({"usage": {"total_tokens": 40}}) == Usage(40)
    assert rerank_usage({"usage": {"prompt_tokens": 30, "total_tokens": 30}}) == Usage(30)
    assert rerank_usage({"meta": {"billed_units": {"search_units": 3}}}) == Usage(
        units=3, unit="search_unit")
    assert rerank_usage({"results": []}) is None


def test_audio_duration_is_whole_seconds_rounded_up() -> None:
    assert transcription_usage({"usage": {"type": "duration", "seconds": 12.01}}) == Usage(
        units=13, unit="second")
    assert transcription_usage({"text": "hi", "duration": 4.0}) == Usage(units=4,
                                                                         unit="second")
    assert transcription_usage({"usage": {"type": "tokens", "input_tokens": 7,
                                          "output_tokens": 3, "total_tokens": 10}}) == Usage(7, 3)


def test_images_by_tokens_else_by_count() -> None:
    assert images_usage({"data": [{}, {}, {}]}) == Usage(units=3, unit="image")
    assert images_usage({"data": [{}], "usage": {"input_tokens": 5, "output_tokens": 9}}) \
        == Usage(5, 9)


def test_speech_counts_characters() -> None:
    assert speech_usage({"input": "héllo"}) == Usage(units=5, unit="character")
    assert speech_usage({}) == Usage(units=0, unit="character")


def test_json_pointers() -> None:
    document = {"a/b": {"m~n": [10, 20]}, "list": [{"x": 1}]}
    assert resolve_pointer(document, parse_pointer("/a~1b/m~0n/1")) == 20
    assert resolve_pointer(document, parse_pointer("/list/0/x")) == 1
    for missing in ("/list/01/x", "/list/5", "/nope", "/list/-"):
        assert resolve_pointer(document, parse_pointer(missing)) is None
    assert resolve_pointer(document, parse_pointer("")) is document
    read = service_reader("page", "/pages")
    assert read({"pages": 2.5}) == Usage(units=3, unit="page")
    assert read({"pages": "2"}) == Usage(units=0, unit="page", estimated=True)


def event(kind: str, **data: Any) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps({"type": kind} | data) \
        + b"\n\n"


def test_a_responses_stream_is_whole_with_its_end_event() -> None:
    watcher = ResponsesWatcher()
    response = {"model": "gpt-4.1-2025", "usage": None}
    out = watcher.feed(event("response.created", response=response)
                       + event("response.output_text.delta", delta="Hel"))
    assert out.endswith(b'"Hel"}\n\n')
    assert (watcher.upstream_model, watcher.content_chars, watcher.saw_done) == (
        "gpt-4.1-2025", 3, False)
    end = event("response.incomplete", response=response | {"usage": {
        "input_tokens": 5, "output_tokens": 2, "total_tokens": 7}})
    assert watcher.feed(end) == end
    assert watcher.end_event == end and watcher.usage == Usage(5, 2)


def test_a_transcript_stream_is_whole_with_its_done_event() -> None:
    watcher = TranscriptWatcher()
    watcher.feed(b'data: {"type": "transcript.text.delta", "delta": "hi"}\n\n')
    assert not watcher.saw_done
    watcher.feed(b'data: {"type": "transcript.text.done", "text": "hi", "usage": '
                 b'{"type": "duration", "seconds": 1.5}}\n\n')
    assert watcher.saw_done and watcher.usage == Usage(units=2, unit="second")
