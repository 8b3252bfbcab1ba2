"""Upstream streams at the edges of the SSE format, through a real gateway: events separated
by bare CRs are metered exactly as ``\\n\\n`` ones, and an event that never ends is cut at
``sse_max_event_bytes`` as a broken upstream, keeping the usage seen so far."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest

from tallygate.store.database import Database
from tests.gateway.test_stream_settling import (
    EXPECTED,
    USAGE,
    LateUsageUpstream,
    Served,
    serve_gateway,
    stream_body,
    upstream,
)
from tests.reliability.support import new_key

__all__ = ["upstream"]  # the late-usage upstream fixture, shared


@pytest.fixture
def served(db: Database, upstream: tuple[str, LateUsageUpstream]) -> Iterator[Served]:
    with serve_gateway(db, upstream[0], sse_max_event_bytes=64 * 1024) as gateway:
        yield gateway


def _events(separator: str) -> list[str]:
    base = {"id": "c1", "object": "chat.completion.chunk", "model": "m"}
    chunks = [base | {"choices": [{"index": 0, "delta": {"content": word}}]}
              for word in ("one ", "two ")]
    chunks.append(base | {"choices": [], "usage": USAGE})
    return [f"data: {orjson.dumps(c).decode()}{separator}" for c in chunks] + [
        f"data: [DONE]{separator}"]


def _stream(served: Served, key: str, body: dict[str, Any]) -> bytes:
    with httpx.Client(timeout=30) as client, client.stream(
            "POST", f"{served.url}/v1/chat/completions", json=body,
            headers={"Authorization": f"Bearer {key}"}) as response:
        assert response.status_code == 200
        return response.read()


@pytest.mark.parametrize("separator", ["\n\n", "\r\r", "\r\n\r\n", "\n\r\n"],
                         ids=["LF", "CR", "CRLF", "LF CRLF"])
def test_every_line_end_of_the_spec_is_metered_alike(served: Served, separator: str) -> None:
    key_id, key = new_key(served.db_url)
    received = _stream(served, key, stream_body(False, events=_events(separator),
                                                no_done=True))
    assert received.count(b'"content"') == 2
    assert b'"usage"' not in received  # the client did not ask for it
    assert received.endswith(b"data: [DONE]" + separator.encode())
    record = served.one_record(key_id)
    assert {name: record[name] for name in EXPECTED} == EXPECTED
    assert record["status_code"] == 200


def test_an_event_past_the_bound_cuts_the_stream_as_a_broken_upstream(
        served: Served) -> None:
    key_id, key = new_key(served.db_url)
    events = _events("\n\n")[2:3] + _events("\n\n")[:1] + [
        "data: " + "x" * 1024 for _ in range(100)]  # 100 kB, no end
    received = _stream(served, key, stream_body(True, events=events, no_done=True))
    assert b'"one "' in received and b"x" * 1024 not in received
    assert b"[DONE]" not in received
    error = orjson.loads(received.rsplit(b"data: ", 1)[1])
    assert error["error"]["code"] == "upstream_event_too_long"
    record = served.one_record(key_id)
    assert record["status_code"] == 502
    assert {name: record[name] for name in EXPECTED} == EXPECTED  # the usage seen so far
