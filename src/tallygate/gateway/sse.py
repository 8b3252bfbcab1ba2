"""Server-sent events passed through one event at a time, watching for the usage.

Events are forwarded as soon as they are complete; only an incomplete tail waits for the next
network chunk. Each API ends its streams its own way, and so each has its watcher: a chat or
completion stream is whole with its ``data: [DONE]``, and its usage chunk (``"choices": []``
plus ``"usage"``) is read and, when the client did not ask for it, left out, so the client
sees exactly what it asked for; a Responses stream is whole with its ``response.completed``
(or ``response.incomplete``, ``response.failed``) event, whose response carries the usage;
a streamed transcription with its ``transcript.text.done``.

An event ends at a blank line, and a line ends in CRLF, LF or CR (the SSE spec,
https://html.spec.whatwg.org/multipage/server-sent-events.html, "Parsing an event stream"):
so an upstream separating events with ``\r\r`` is metered exactly as one using ``\n\n``.
Two line ends in a row always contain ``\n\n``, ``\r\r`` or ``\n\r`` (CR LF alone is one
line end), which is what is looked for. An event still incomplete past ``max_event_bytes``
(``sse_max_event_bytes``) is a broken upstream: :class:`EventTooLong`, and the stream is cut.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import orjson

from tallygate.gateway.usage import Usage, audio_usage, output_chars, parse_usage

# Where a blank line is: the two line ends' first two bytes (see the module's docstring).
_SEPARATORS = (b"\n\n", b"\r\r", b"\n\r")
CR, LF = 13, 10
MAX_EVENT_BYTES = 1024 * 1024  # the default of sse_max_event_bytes


class EventTooLong(ValueError):
    """An upstream's event grew past ``max_event_bytes`` without ending: a broken upstream
    (or a hostile one), which must not make the gateway buffer without bound."""


@dataclass(slots=True)
class StreamWatcher:
    """Feed it upstream bytes; it returns what to send on, and remembers what it saw."""

    drop_usage_chunk: bool = False
    usage: Usage | None = None
    content_chars: int = 0
    events: int = 0
    # The event that ended the stream (chat: ``data: [DONE]``): the stream is whole with it,
    # and a client that left had it only if it was sent.
    end_event: bytes | None = None
    upstream_model: str | None = None  # the first event's ``model``
    max_event_bytes: int = MAX_EVENT_BYTES
    # An incomplete event, in the pieces it came in: joined only once it is complete, so a
    # long event costs its length once, not once per piece.
    _tail: list[bytes] = field(default_factory=list, repr=False)
    _tail_end: bytes = field(default=b"", repr=False)  # its last 3 bytes
    _tail_bytes: int = field(default=0, repr=False)

    def feed(self, chunk: bytes) -> bytes:
        if self._tail:
            # A separator may begin in the tail: look at its last bytes and the new piece.
            if _last_separator_end(self._tail_end + chunk) == 0:
                self._tail.append(chunk)
                self._tail_end = (self._tail_end + chunk)[-3:]
                self._tail_bytes += len(chunk)
                self._check_tail()
                return b""
            chunk = b"".join([*self._tail, chunk])
        end = _last_separator_end(chunk)
        complete, rest = chunk[:end], chunk[end:]
        self._tail = [rest] if rest else []
        self._tail_end = rest[-3:]
        self._tail_bytes = len(rest)
        self._check_tail()
        if not complete:
            return b""
        events = _split_events(complete)
        kept = [event for event in events if self._keep(event)]
        return complete if len(kept) == len(events) else b"".join(kept)

    def _check_tail(self) -> None:
        if self._tail_bytes > self.max_event_bytes:
            self._tail, self._tail_bytes = [], 0  # what was held is not sent on, nor kept
            raise EventTooLong(f"an upstream event passed {self.max_event_bytes} bytes "
                               "without ending")

    @property
    def saw_done(self) -> bool:
        """Whether the stream ended as its API ends a whole stream."""
        return self.end_event is not None

    def finish(self) -> bytes:
        """Whatever incomplete event is left when the upstream closes."""
        tail, self._tail = b"".join(self._tail), []
        if tail and self._keep(tail):
            return tail
        return b""

    def _keep(self, event: bytes) -> bool:
        self.events += 1
        payload = _data_of(event)
        if payload is None:
            return True
        if payload.strip() == b"[DONE]":
            self.end_event = event
            return True
        try:
            parsed: Any = orjson.loads(payload)
        except orjson.JSONDecodeError:
            return True
        if not isinstance(parsed, dict):
            return True
        return self._read(parsed, event)

    def _read(self, parsed: dict[str, Any], event: bytes) -> bool:
        """Reads one event's JSON; whether to pass the event on."""
        if self.upstream_model is None:
            model = parsed.get("model")
            self.upstream_model = model if isinstance(model, str) else None
        usage = parse_usage(parsed.get("usage"))
        if usage is not None:
            self.usage = usage
        self.content_chars += output_chars(parsed, "delta")
        # The chunk the gateway asked for, whether or not its usage could be read.
        is_usage_only = parsed.get("choices") == [] and isinstance(parsed.get("usage"), dict)
        return not (is_usage_only and self.drop_usage_chunk)


# The events that end a Responses stream; each carries the response, with its usage.
RESPONSE_ENDS = ("response.completed", "response.incomplete", "response.failed")


@dataclass(slots=True)
class ResponsesWatcher(StreamWatcher):
    """A Responses API stream: ``response.created`` first (with the model), deltas, then one
    of :data:`RESPONSE_ENDS` with the usage. No ``[DONE]``."""

    def _read(self, parsed: dict[str, Any], event: bytes) -> bool:
        kind = parsed.get("type")
        if not isinstance(kind, str):
            return True
        if kind.endswith(".delta"):
            delta = parsed.get("delta")
            self.content_chars += len(delta) if isinstance(delta, str) else 0
            return True
        response = parsed.get("response")
        if isinstance(response, dict):
            if self.upstream_model is None:
                model = response.get("model")
                self.upstream_model = model if isinstance(model, str) else None
            if kind in RESPONSE_ENDS:
                self.end_event = event
                self.usage = parse_usage(response.get("usage")) or self.usage
        return True


@dataclass(slots=True)
class TranscriptWatcher(StreamWatcher):
    """A streamed transcription: ``transcript.text.delta`` events, then
    ``transcript.text.done`` with the usage (tokens, or a duration: see metering)."""

    def _read(self, parsed: dict[str, Any], event: bytes) -> bool:
        kind = parsed.get("type")
        if kind == "transcript.text.delta":
            delta = parsed.get("delta")
            self.content_chars += len(delta) if isinstance(delta, str) else 0
        elif kind == "transcript.text.done":
            self.end_event = event
            self.usage = audio_usage(parsed.get("usage")) or self.usage
        return True


class PassThrough(StreamWatcher):
    """Bytes that are not events (audio): passed on as they come, read for nothing."""

    __slots__ = ()

    def feed(self, chunk: bytes) -> bytes:
        return chunk

    def finish(self) -> bytes:
        return b""


def _event_end(data: bytes, found: int) -> int:
    """Where the event whose blank line starts at ``found`` ends: after the separator, and
    after the LF that makes its last CR a CRLF (``\r\n\r\n`` is one event's end)."""
    end = found + 2
    if data[end - 1] == CR and end < len(data) and data[end] == LF:
        end += 1
    return end


def _last_separator_end(data: bytes) -> int:
    """Where the last complete event ends (0: none). A CR that follows an LF at the very
    end of what came is taken for the start of a CRLF (an upstream that ends its lines in
    CRLF) and waits for the next byte, so that ``\r\n\r\n`` stays whole; one after a CR
    (``\r\r``: an upstream of bare CRs) ends its event at once."""
    best = 0
    for separator in _SEPARATORS:
        found = data.rfind(separator)
        if separator == b"\n\r" and found >= 0 and found + 2 == len(data):
            found = data.rfind(separator, 0, found + 1)
        if found >= 0:
            best = max(best, _event_end(data, found))
    return best


def _split_events(data: bytes) -> list[bytes]:
    """Complete events, each with its separator. Linear: the next position of each
    separator is looked up again only once it has been passed (a stream that never uses
    ``\r\r`` must not rescan the rest of the chunk for it after every event)."""
    events = []
    start = 0
    size = len(data)
    found = [data.find(separator) for separator in _SEPARATORS]
    while start < size:
        for i, separator in enumerate(_SEPARATORS):
            if 0 <= found[i] < start:
                found[i] = data.find(separator, start)
        first = min((f for f in found if f >= 0), default=-1)
        if first < 0:
            events.append(data[start:])
            break
        end = _event_end(data, first)
        events.append(data[start:end])
        start = end
    return events


def _data_of(event: bytes) -> bytes | None:
    lines = [line[5:].lstrip(b" ") for line in event.splitlines() if line.startswith(b"data:")]
    return b"\n".join(lines) if lines else None

