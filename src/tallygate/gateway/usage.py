"""Usage as upstreams report it, and estimates where they do not.

OpenAI's ``usage`` object: ``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
``prompt_tokens_details.cached_tokens`` and ``completion_tokens_details.reasoning_tokens``.
Some providers put ``cached_tokens``/``prompt_cache_hit_tokens`` at the top level; both are read.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False
    cache_write_tokens: int = 0  # part of input_tokens, as cached_input_tokens is
    units: int = 0  # what a call is billed by besides tokens (record.unit says what)
    unit: str | None = None


# No call comes near ten billion tokens; a count above it is a broken upstream, not usage,
# and taken as such it would overflow the ledger's 64-bit columns and the key's counters.
MAX_COUNT = 10**10


def _count(value: Any) -> int | None:
    """A token count as an upstream may write it (``12`` or ``12.0``), or None."""
    if isinstance(value, float) and value.is_integer() and value <= MAX_COUNT:
        value = int(value)
    return value if isinstance(value, int) and not isinstance(value, bool) \
        and 0 <= value <= MAX_COUNT else None


def _int(value: Any) -> int:
    return _count(value) or 0


def parse_usage(usage: Any) -> Usage | None:
    """The upstream's usage object as a :class:`Usage`, or None if it does not say how many
    tokens went in, or says how many came out in a way it cannot read (then the call is
    estimated). A missing side is derived from ``total_tokens`` where it can be; an absent
    output count is 0 (embeddings have none)."""
    if not isinstance(usage, dict):
        return None
    input_tokens = _count(usage.get("prompt_tokens", usage.get("input_tokens")))
    given_output = usage.get("completion_tokens", usage.get("output_tokens"))
    output_tokens = _count(given_output)
    total = _count(usage.get("total_tokens"))
    if input_tokens is None:
        if output_tokens is None or total is None or total < output_tokens:
            return None
        input_tokens = total - output_tokens
    if output_tokens is None:
        if total is not None and total >= input_tokens:
            output_tokens = total - input_tokens
        elif given_output is not None:
            return None  # a count given but unreadable: estimated, not recorded as none
        else:
            output_tokens = 0
    prompt_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    cached = cache_write = 0
    if isinstance(prompt_details, dict):
        cached = _int(prompt_details.get("cached_tokens"))
        # The Responses API's input_tokens_details.cache_write_tokens: part of input_tokens.
        cache_write = _int(prompt_details.get("cache_write_tokens"))
    cached = cached or _int(usage.get("prompt_cache_hit_tokens")) or _int(
        usage.get("cached_tokens"))
    completion_details = usage.get("completion_tokens_details") or usage.get(
        "output_tokens_details")
    reasoning = _int(completion_details.get("reasoning_tokens")) if isinstance(
        completion_details, dict) else 0
    cached = min(cached, input_tokens)
    return Usage(input_tokens, output_tokens, cached, min(reasoning, output_tokens),
                 cache_write_tokens=min(cache_write, input_tokens - cached))


def whole_units(value: Any) -> int | None:
    """A count of units as an answer gives it: a whole number, or a fraction rounded up
    (12.2 seconds of audio are 13 seconds); None if it is not a count."""
    if isinstance(value, float) and math.isfinite(value) and 0 <= value <= MAX_COUNT:
        return math.ceil(value)
    return _count(value)


def audio_usage(usage: Any) -> Usage | None:
    """A transcription's usage: tokens (``{"type": "tokens", "input_tokens", ...}``), or the
    audio's length (``{"type": "duration", "seconds": 12.2}``) as whole seconds, rounded up."""
    if isinstance(usage, dict) and usage.get("type") == "duration":
        seconds = whole_units(usage.get("seconds"))
        return None if seconds is None else Usage(units=seconds, unit="second")
    return parse_usage(usage)


def estimate_tokens_of_text(text_length: int) -> int:
    """About four characters a token for English and code (OpenAI's rule of thumb); a
    ledger marks such figures ``estimated``."""
    return (text_length + 3) // 4


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """Input tokens from the request body: the text of messages (their tool calls too),
    prompt or input, and the tools offered (as their JSON)."""
    length = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                length += message_chars(message) + 4 * 4  # role and framing
    length += _text_length(body.get("prompt")) + _text_length(body.get("input"))
    for offered in ("tools", "functions"):
        if isinstance(body.get(offered), list):
            length += _json_length(body[offered])
    return estimate_tokens_of_text(length)


def _json_length(value: Any) -> int:
    """The length of ``value`` as JSON. orjson refuses to encode more than 254 levels, and a
    body the gateway accepted may have up to 1 024 (what orjson decodes): those are measured
    by a walk that adds up what the encoding would hold."""
    try:
        return len(orjson.dumps(value))
    except orjson.JSONEncodeError:
        pass
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item) + 2
        elif isinstance(item, dict):
            total += 2 + sum(len(name) + 4 for name in item)
            stack.extend(item.values())
        elif isinstance(item, list):
            total += 2 + len(item)
            stack.extend(item)
        else:
            total += 4  # a number, true, false or null
    return total


def message_chars(message: dict[str, Any]) -> int:
    """The characters of what a message (or a stream's delta) says: its content and reasoning,
    and the names and arguments of its tool or function calls."""
    total = _text_length(message.get("content"))
    reasoning = message.get("reasoning_content")
    total += len(reasoning) if isinstance(reasoning, str) else 0
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        if isinstance(call, dict):
            total += _function_chars(call.get("function"))
    return total + _function_chars(message.get("function_call"))


def _function_chars(function: Any) -> int:
    if not isinstance(function, dict):
        return 0
    return sum(len(part) for part in (function.get("name"), function.get("arguments"))
               if isinstance(part, str))


def _text_length(value: Any) -> int:
    """The characters of a content: a string, or parts (``{"text": ...}``), in lists. A walk
    with a stack of its own, not recursion: a body or an answer may nest lists 1 024 deep (as
    deep as the gateway's JSON parser goes), past Python's recursion limit, and the estimate
    must not fail."""
    if isinstance(value, str):  # the usual content, and every event of a stream
        return len(value)
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            stack.append(item.get("text"))
    return total


def output_chars(answer: dict[str, Any], part: str) -> int:
    """The characters generated in an answer's choices: each choice's ``part`` (``message``
    for a whole answer, ``delta`` for a stream's event) or its completion ``text``."""
    total = 0
    choices = answer.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        if not isinstance(choice, dict):
            continue
        said = choice.get(part)
        total += message_chars(said) if isinstance(said, dict) else 0
        text = choice.get("text")
        total += len(text) if isinstance(text, str) else 0
    return total
