"""Usage as upstreams report it, and estimates where they do not.

OpenAI's ``usage`` object: ``prompt_tokens``, ``completion_tokens``, ``total_tokens``,
``prompt_tokens_details.cached_tokens`` and ``completion_tokens_details.reasoning_tokens``.
Some providers put ``cached_tokens``/``prompt_cache_hit_tokens`` at the top level; both are read.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0
    estimated: bool = False


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def parse_usage(usage: Any) -> Usage | None:
    """The upstream's usage object as a :class:`Usage`, or None if there is none."""
    if not isinstance(usage, dict):
        return None
    input_tokens = _int(usage.get("prompt_tokens", usage.get("input_tokens")))
    output_tokens = _int(usage.get("completion_tokens", usage.get("output_tokens")))
    prompt_details = usage.get("prompt_tokens_details") or usage.get("input_tokens_details")
    cached = _int(prompt_details.get("cached_tokens")) if isinstance(prompt_details, dict) else 0
    cached = cached or _int(usage.get("prompt_cache_hit_tokens")) or _int(
        usage.get("cached_tokens"))
    completion_details = usage.get("completion_tokens_details") or usage.get(
        "output_tokens_details")
    reasoning = _int(completion_details.get("reasoning_tokens")) if isinstance(
        completion_details, dict) else 0
    return Usage(input_tokens, output_tokens, min(cached, input_tokens),
                 min(reasoning, output_tokens))


def estimate_tokens_of_text(text_length: int) -> int:
    """About four characters a token for English and code (OpenAI's rule of thumb); a
    ledger marks such figures ``estimated``."""
    return (text_length + 3) // 4


def estimate_input_tokens(body: dict[str, Any]) -> int:
    """Input tokens from the request body: the text of messages, prompt or input."""
    length = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict):
                length += _text_length(message.get("content")) + 4 * 4  # role and framing
    length += _text_length(body.get("prompt")) + _text_length(body.get("input"))
    return estimate_tokens_of_text(length)


def _text_length(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_length(item) for item in value)
    if isinstance(value, dict):
        return _text_length(value.get("text"))
    return 0
