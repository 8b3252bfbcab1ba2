"""The endpoints the gateway serves, and what sets each apart: where it goes upstream, how
its body is read, whether and how it streams, and how its answer is metered.

One table, looked up once per call by path: the chat path costs a dict lookup, nothing more.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from tallygate.domain.paths import OPENAI_PATHS
from tallygate.gateway.metering import (
    AnswerReader,
    images_usage,
    rerank_usage,
    speech_usage,
    tokens_usage,
    transcription_usage,
)
from tallygate.gateway.sse import ResponsesWatcher, StreamWatcher, TranscriptWatcher
from tallygate.gateway.usage import Usage


@dataclass(frozen=True, slots=True)
class Endpoint:
    path: str  # what the client calls
    suffix: str  # appended to the route's base_url
    # "json": a JSON object with a model; "multipart": form data with a model field and a
    # file, streamed through; "binary" answers (speech) are relayed chunk by chunk.
    body: Literal["json", "multipart"] = "json"
    streams: bool = False  # honours "stream": true
    asks_usage: bool = False  # the upstream is asked for usage with stream_options
    watcher: type[StreamWatcher] = StreamWatcher  # how its stream is read (and when whole)
    read_usage: AnswerReader = tokens_usage
    binary_answer: bool = False
    # Usage known from the request alone (speech: its characters), whatever the answer.
    usage_of_request: Callable[[dict[str, Any]], Usage] | None = None


ENDPOINTS: dict[str, Endpoint] = {endpoint.path: endpoint for endpoint in (
    Endpoint("/v1/chat/completions", "/chat/completions", streams=True, asks_usage=True),
    Endpoint("/v1/completions", "/completions", streams=True, asks_usage=True),
    Endpoint("/v1/embeddings", "/embeddings"),
    Endpoint("/v1/responses", "/responses", streams=True, watcher=ResponsesWatcher),
    Endpoint("/v1/rerank", "/rerank", read_usage=rerank_usage),
    Endpoint("/v1/moderations", "/moderations"),
    Endpoint("/v1/images/generations", "/images/generations", read_usage=images_usage),
    Endpoint("/v1/audio/speech", "/audio/speech", binary_answer=True,
             usage_of_request=speech_usage),
    Endpoint("/v1/audio/transcriptions", "/audio/transcriptions", body="multipart",
             streams=True, watcher=TranscriptWatcher, read_usage=transcription_usage),
    Endpoint("/v1/audio/translations", "/audio/translations", body="multipart",
             read_usage=transcription_usage),
)}

# Every endpoint is one of the reserved paths, which the configuration checks routes against.
assert frozenset(ENDPOINTS) == OPENAI_PATHS, sorted(set(ENDPOINTS) ^ OPENAI_PATHS)
