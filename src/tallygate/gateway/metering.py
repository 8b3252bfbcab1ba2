"""What each endpoint's answer (or request) says a call is billed for.

Every reader is total: an answer of any shape gives a :class:`Usage`, or None when it does
not say (then the call's tokens are estimated, and the record says so).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tallygate.gateway.usage import (
    Usage,
    audio_usage,
    output_chars,
    parse_usage,
    whole_units,
)

# The usage an answer (a JSON object) reports, or None when it reports none.
AnswerReader = Callable[[dict[str, Any]], Usage | None]


def tokens_usage(answer: dict[str, Any]) -> Usage | None:
    """Chat, completions, embeddings, Responses, moderations: the ``usage`` object."""
    return parse_usage(answer.get("usage"))


def rerank_usage(answer: dict[str, Any]) -> Usage | None:
    """vLLM and Jina: ``usage.total_tokens`` (all of it input); Cohere:
    ``meta.billed_units.search_units``, as units of ``search_unit`` (with its
    ``input_tokens``/``output_tokens`` where it gives them)."""
    usage = answer.get("usage")
    tokens = None
    if isinstance(usage, dict):
        tokens = parse_usage(usage)
        if tokens is None:
            total = whole_units(usage.get("total_tokens"))
            tokens = None if total is None else Usage(input_tokens=total)
    meta = answer.get("meta")
    billed = meta.get("billed_units") if isinstance(meta, dict) else None
    if isinstance(billed, dict):
        searches = whole_units(billed.get("search_units"))
        if searches is not None:
            if tokens is None:
                tokens = parse_usage(billed) or Usage()
            return Usage(tokens.input_tokens, tokens.output_tokens,
                         units=searches, unit="search_unit")
    return tokens


def transcription_usage(answer: dict[str, Any]) -> Usage | None:
    """Transcriptions and translations: ``usage`` as tokens or as a duration; without it, a
    verbose answer's ``duration`` (seconds of audio, as whisper-1 is billed)."""
    usage = audio_usage(answer.get("usage"))
    if usage is None:
        seconds = whole_units(answer.get("duration"))
        usage = None if seconds is None else Usage(units=seconds, unit="second")
    return usage


def images_usage(answer: dict[str, Any]) -> Usage | None:
    """Token usage where the upstream gives it (gpt-image-1), else one ``image`` for each
    image in ``data`` (DALL-E and most others are billed by the image)."""
    usage = parse_usage(answer.get("usage"))
    if usage is not None:
        return usage
    data = answer.get("data")
    return Usage(units=len(data), unit="image") if isinstance(data, list) else None


def speech_usage(body: dict[str, Any]) -> Usage:
    """Speech is billed by the characters of its ``input``: known from the request, exact."""
    text = body.get("input")
    return Usage(units=len(text) if isinstance(text, str) else 0, unit="character")


def service_reader(unit: str, units_from: str | None) -> AnswerReader:
    """A custom service route: ``units_from``'s value (a JSON pointer into the answer), or
    one unit per call without it. An answer where the pointer finds no count (not JSON, no
    such member, not a non-negative number) is 0 units, marked estimated: the gateway
    cannot know what was billed, and says so rather than guess."""
    if units_from is None:
        return lambda answer: Usage(units=1, unit=unit)
    tokens = parse_pointer(units_from)

    def read(answer: dict[str, Any]) -> Usage | None:
        count = whole_units(resolve_pointer(answer, tokens))
        return Usage(units=count or 0, unit=unit, estimated=count is None)

    return read


def parse_pointer(pointer: str) -> list[str]:
    """RFC 6901: ``/a/b~1c`` is ``["a", "b/c"]``; ``""`` is the whole document."""
    if pointer == "":
        return []
    return [part.replace("~1", "/").replace("~0", "~") for part in pointer[1:].split("/")]


def resolve_pointer(document: Any, tokens: list[str]) -> Any:
    """The value at ``tokens``, or None where the document has none."""
    for token in tokens:
        if isinstance(document, dict):
            document = document.get(token)
        elif isinstance(document, list) and token.isdigit() and (
                token == "0" or not token.startswith("0")) and int(token) < len(document):
            document = document[int(token)]
        else:
            return None
    return document


def generated_chars(answer: dict[str, Any]) -> int:
    """What an answer that reports no usage generated, for the estimate: the choices' text
    (chat, completions), a Responses answer's output text, a transcription's text."""
    total = output_chars(answer, "message")
    output = answer.get("output")
    for item in output if isinstance(output, list) else []:
        if not isinstance(item, dict):
            continue
        content = item.get("content")
        for part in content if isinstance(content, list) else []:
            text = part.get("text") if isinstance(part, dict) else None
            total += len(text) if isinstance(text, str) else 0
        arguments = item.get("arguments")
        total += len(arguments) if isinstance(arguments, str) else 0
    text = answer.get("text")
    return total + (len(text) if isinstance(text, str) else 0)


def upstream_model_of(answer: dict[str, Any]) -> str | None:
    """The model the upstream says it ran (``model``)."""
    model = answer.get("model")
    return model if isinstance(model, str) else None
