"""Usage as Anthropic's Messages API reports it: a message's ``usage``, or a stream's.

A message's ``usage`` has ``input_tokens`` (the input that was neither read from nor written
to the prompt cache), ``cache_read_input_tokens``, ``cache_creation_input_tokens`` (with its
split by lifetime in ``cache_creation``: ``ephemeral_5m_input_tokens``,
``ephemeral_1h_input_tokens``) and ``output_tokens`` (with ``output_tokens_details.
thinking_tokens``, the part spent thinking). The ledger counts input as OpenAI and
OpenTelemetry do, all of it: uncached + cache reads + cache writes; ``cached_input_tokens`` are
the reads and ``cache_write_tokens`` the writes.

A stream gives the usage twice: in ``message_start`` (the input, and an output count that has
just begun) and in each ``message_delta``, whose counts are cumulative: the last one given of
each field is the bill. Some Anthropic-compatible upstreams give the input only there (0 in
``message_start``), which the same rule covers. A stream that ended before any
``message_delta`` has its input from ``message_start`` and its output estimated.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import orjson

from tallygate.gateway.sse import StreamWatcher
from tallygate.gateway.usage import (
    Usage,
    _count,
    estimate_input_tokens,
    estimate_tokens_of_text,
)

COUNTS = ("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens",
          "output_tokens")
SPLIT = {"ephemeral_5m_input_tokens": "cache_write_5m_tokens",
         "ephemeral_1h_input_tokens": "cache_write_1h_tokens"}


@dataclass(slots=True)
class Reported:
    """The counts an upstream gave, the later replacing the earlier, field by field."""

    counts: dict[str, int] = field(default_factory=dict)
    # The cache writes by lifetime, as the record's metadata keeps them.
    split: dict[str, int] = field(default_factory=dict)
    thinking: int = 0

    def take(self, usage: Any) -> None:
        if not isinstance(usage, dict):
            return
        for name in COUNTS:
            value = _count(usage.get(name))
            if value is not None:
                self.counts[name] = value
        creation = usage.get("cache_creation")
        if isinstance(creation, dict):
            for name, kept_as in SPLIT.items():
                value = _count(creation.get(name))
                if value is not None:
                    self.split[kept_as] = value
        details = usage.get("output_tokens_details")
        if isinstance(details, dict):
            self.thinking = _count(details.get("thinking_tokens")) or self.thinking

    def usage(self) -> Usage | None:
        """The ledger's usage, or None when the input or output count is missing."""
        uncached = self.counts.get("input_tokens")
        output = self.counts.get("output_tokens")
        if uncached is None or output is None:
            return None
        read = self.counts.get("cache_read_input_tokens", 0)
        written = self.counts.get("cache_creation_input_tokens")
        if written is None:  # only the split given: the writes are its sum
            written = sum(self.split.values())
        return Usage(uncached + read + written, output, read, min(self.thinking, output),
                     cache_write_tokens=written)


def usage_of_message(message: Any) -> tuple[Usage | None, dict[str, int], str | None]:
    """A whole message's usage, cache-write split and model (``None`` where not given)."""
    if not isinstance(message, dict):
        return None, {}, None
    reported = Reported()
    reported.take(message.get("usage"))
    model = message.get("model")
    return reported.usage(), reported.split, model if isinstance(model, str) else None


def content_chars(blocks: Any) -> int:
    """The characters a message's content blocks generated: text, thinking, and the input
    of tool calls (as JSON)."""
    total = 0
    for block in blocks if isinstance(blocks, list) else []:
        if not isinstance(block, dict):
            continue
        for name in ("text", "thinking", "name"):
            value = block.get(name)
            total += len(value) if isinstance(value, str) else 0
        if "input" in block:
            with contextlib.suppress(orjson.JSONEncodeError):  # deeper than it encodes
                total += len(orjson.dumps(block["input"]))
    return total


def estimate_message_input(body: dict[str, Any]) -> int:
    """Input tokens from a Messages request: its messages and tools, and its system prompt
    (a string or text blocks, measured as a prompt is)."""
    return estimate_input_tokens(body | {"prompt": body.get("system")})


@dataclass(slots=True)
class MessageWatcher(StreamWatcher):
    """Reads a Messages stream as it is relayed (nothing is left out): its usage, model
    (``upstream_model``), generated characters, and whether ``message_stop`` (the stream's
    end: ``end_event``) or an ``error`` event came by."""

    reported: Reported = field(default_factory=Reported)
    final: bool = False  # a message_delta came: its counts are the bill
    upstream_error: bool = False  # the upstream sent an error event

    def _read(self, parsed: dict[str, Any], event: bytes) -> bool:
        kind = parsed.get("type")
        if kind == "content_block_delta":
            delta = parsed.get("delta")
            if isinstance(delta, dict):
                for name in ("text", "partial_json", "thinking"):
                    value = delta.get(name)
                    self.content_chars += len(value) if isinstance(value, str) else 0
        elif kind == "content_block_start":
            self.content_chars += content_chars([parsed.get("content_block")])
        elif kind == "message_start":
            message = parsed.get("message")
            if isinstance(message, dict):
                self.reported.take(message.get("usage"))
                model = message.get("model")
                self.upstream_model = model if isinstance(model, str) else self.upstream_model
        elif kind == "message_delta":
            self.reported.take(parsed.get("usage"))
            self.final = True
        elif kind == "message_stop":
            self.end_event = event
        elif kind == "error":
            self.upstream_error = True
        return True

    def settled_usage(self, body: dict[str, Any], body_bytes: int) -> Usage:
        """The bill when the stream gave it; else what it gave, with the rest estimated."""
        usage = self.reported.usage()
        if usage is not None and self.final:
            return usage
        generated = estimate_tokens_of_text(self.content_chars)
        if usage is not None:  # message_start only: its input is exact, its output begun
            return Usage(usage.input_tokens, max(usage.output_tokens, generated),
                         usage.cached_input_tokens, estimated=True,
                         cache_write_tokens=usage.cache_write_tokens)
        try:
            input_tokens = estimate_message_input(body)
        except Exception:  # a body that defeats the estimator: its length stands for its text
            input_tokens = estimate_tokens_of_text(body_bytes)
        return Usage(input_tokens, generated, estimated=True)
