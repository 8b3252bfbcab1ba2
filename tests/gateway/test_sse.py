"""The stream watcher against brute force: whatever pieces the upstream's bytes arrive in,
the client gets the same events, and only the usage chunk it did not ask for is left out."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tallygate.gateway.sse import EventTooLong, StreamWatcher

texts = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\r\n"), max_size=40)


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[bytes], bytes, list[int]]:
    separator = draw(st.sampled_from([b"\n\n", b"\r\n\r\n", b"\r\r"]))
    contents = draw(st.lists(texts, max_size=8))
    events = [b"data: " + orjson.dumps({"choices": [{"index": 0, "delta": {"content": text}}]})
              + separator for text in contents]
    events.append(draw(st.sampled_from([b": keep-alive", b"event: ping"])) + separator)
    usage = b"data: " + orjson.dumps({"choices": [], "usage": {
        "prompt_tokens": 7, "completion_tokens": len(contents)}}) + separator
    events.append(usage)
    events.append(b"data: [DONE]" + separator)
    whole = b"".join(events)
    cuts = sorted(draw(st.lists(st.integers(0, len(whole)), max_size=30)))
    return events, usage, cuts


def _complete(events: list[bytes], received: int, dropped: bytes | None) -> bytes:
    out, end = [], 0
    for event in events:
        end += len(event)
        if end > received:
            break
        if event != dropped:
            out.append(event)
    return b"".join(out)


def _pieces(whole: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *cuts, len(whole)]
    return [whole[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]


@given(streams(), st.booleans())
def test_any_split_gives_the_same_events(stream: tuple[list[bytes], bytes, list[int]],
                                         drop: bool) -> None:
    events, usage, cuts = stream
    whole = b"".join(events)
    watcher = StreamWatcher(drop_usage_chunk=drop)
    sent = b""
    received = 0
    for piece in _pieces(whole, cuts):
        sent += watcher.feed(piece)
        received += len(piece)
        # Every event complete so far has gone on, at once; nothing incomplete has.
        assert sent == _complete(events, received, usage if drop else None)
    sent += watcher.finish()
    expected = b"".join(e for e in events if not (drop and e == usage))
    assert sent == expected
    assert watcher.usage is not None and watcher.usage.input_tokens == 7
    assert watcher.saw_done


def test_an_unfinished_event_is_sent_when_the_upstream_closes() -> None:
    watcher = StreamWatcher(drop_usage_chunk=False)
    assert watcher.feed(b"data: {\"choices\": [") == b""
    assert watcher.feed(b"]}\r\n\r") == b""
    assert watcher.finish() == b"data: {\"choices\": [" + b"]}\r\n\r"


# Line ends of the SSE spec: CRLF, LF or CR; an event ends at a blank line.
LINE_ENDS = [b"\n", b"\r", b"\r\n"]


@given(st.lists(st.tuples(st.sampled_from(LINE_ENDS), st.sampled_from(LINE_ENDS)),
                min_size=1, max_size=6), st.lists(st.integers(0, 400), max_size=20))
def test_every_line_end_of_the_spec_ends_events_and_lines(
        ends: list[tuple[bytes, bytes]], cuts: list[int]) -> None:
    # Two lines per event (an id and the data), each ended as drawn, then a blank line.
    events = [b"id: " + str(i).encode() + first + b"data: " + orjson.dumps(
        {"choices": [{"index": 0, "delta": {"content": "ab"}}]}) + second + second
        for i, (first, second) in enumerate(ends)]
    usage = orjson.dumps({"choices": [], "usage": {"prompt_tokens": 3,
                                                   "completion_tokens": 4}})
    events += [b"data: " + usage + b"\r\r", b"data: [DONE]\r\n\r\n"]
    whole = b"".join(events)
    watcher = StreamWatcher(drop_usage_chunk=True)
    sent = b"".join(watcher.feed(piece) for piece in _pieces(whole, sorted(
        c for c in cuts if c <= len(whole)))) + watcher.finish()
    assert sent == whole.replace(b"data: " + usage + b"\r\r", b"")
    assert watcher.usage is not None and watcher.usage.output_tokens == 4
    assert watcher.content_chars == 2 * len(ends)
    assert watcher.saw_done


def test_an_event_that_never_ends_is_cut_past_its_bound() -> None:
    watcher = StreamWatcher(max_event_bytes=1024)
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 4}}\r\r'
    assert watcher.feed(usage + b"data: ") == usage
    for _ in range(3):
        watcher.feed(b"x" * 300)
    with pytest.raises(EventTooLong):
        watcher.feed(b"x" * 300)
    assert watcher.usage is not None and watcher.usage.output_tokens == 4
