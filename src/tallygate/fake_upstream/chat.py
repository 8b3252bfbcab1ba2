"""Chat completions, completions and embeddings (OpenAI's shapes)."""

from __future__ import annotations

import time
from typing import Any

import orjson

from tallygate.fake_upstream.asgi import SSE, Send, chunk, finish, send_json, start
from tallygate.fake_upstream.call import Call, split, text


async def chat(call: Call, send: Send) -> None:
    await _generate("chat", call, send)


async def completion(call: Call, send: Send) -> None:
    await _generate("completion", call, send)


async def _generate(kind: str, call: Call, send: Send) -> None:
    input_tokens, output_tokens = call.trace_tokens("code" if kind == "completion" else "conv")
    if call.stream:
        options = call.request.get("stream_options")
        include_usage = call.report_usage and isinstance(options, dict) and bool(
            options.get("include_usage"))
        await _stream(send, kind, call, input_tokens, output_tokens, include_usage)
        return
    content = text(output_tokens)
    choice: dict[str, Any] = (
        {"index": 0, "message": {"role": "assistant", "content": content},
         "finish_reason": "stop"} if kind == "chat" else
        {"index": 0, "text": content, "finish_reason": "stop"})
    answer: dict[str, Any] = {
        "id": _id(kind, call), "object": "chat.completion" if kind == "chat" else
        "text_completion", "created": int(time.time()), "model": call.model,
        "choices": [choice]}
    if call.report_usage:
        answer["usage"] = usage(input_tokens, output_tokens)
    await send_json(send, 200, answer)


async def _stream(send: Send, kind: str, call: Call, input_tokens: int, output_tokens: int,
                  include_usage: bool) -> None:
    await start(send, 200, SSE)
    call_id, created, model, stamp = _id(kind, call), int(time.time()), call.model, call.stamp
    obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
    cut_after = call.cut_after

    def event(choice: dict[str, Any] | None, counts: dict[str, int] | None = None) -> bytes:
        data: dict[str, Any] = {"id": call_id, "object": obj, "created": created,
                                "model": model, "choices": [] if choice is None else [choice]}
        if include_usage:
            data["usage"] = counts
        if stamp:
            data["sent_at"] = time.time()
        return b"data: " + orjson.dumps(data) + b"\n\n"

    def piece(content: str, finish_reason: str | None = None) -> dict[str, Any]:
        if kind == "chat":
            return {"index": 0, "delta": {"content": content}, "finish_reason": finish_reason}
        return {"index": 0, "text": content, "finish_reason": finish_reason}

    if kind == "chat":
        await chunk(send, event({"index": 0, "delta": {"role": "assistant", "content": ""},
                                 "finish_reason": None}))
    for number, content in enumerate(split(text(output_tokens), call.chunks), 1):
        await call.pause()
        await chunk(send, event(piece(content)))
        if call.endless_event_bytes:
            await _endless_event(send, call.endless_event_bytes)
            return
        if cut_after is not None and number >= cut_after:
            await finish(send)
            return  # the stream ends without a finish, usage or [DONE]
    await chunk(send, event(piece("", "stop")))
    if include_usage:
        await chunk(send, event(None, usage(input_tokens, output_tokens)))
    await finish(send, b"data: [DONE]\n\n")


async def _endless_event(send: Send, size: int) -> None:
    """A ``data:`` line of ``size`` bytes sent in 64 kB pieces, then the end of the body with
    the event never closed: what a broken upstream's runaway event looks like."""
    await chunk(send, b"data: ")
    piece = b"x" * 65536
    for sent in range(0, size, len(piece)):
        await chunk(send, piece[:size - sent])
    await finish(send)


async def embedding(call: Call, send: Send) -> None:
    input_tokens, _ = call.trace_tokens("conv")
    items = call.request.get("input")
    count = len(items) if isinstance(items, list) and items and not isinstance(
        items[0], int) else 1
    answer: dict[str, Any] = {
        "object": "list", "model": call.model,
        "data": [{"object": "embedding", "index": i,
                  "embedding": [round(0.01 * (i + j), 4) for j in range(8)]}
                 for i in range(count)]}
    if call.report_usage:
        answer["usage"] = {"prompt_tokens": input_tokens, "total_tokens": input_tokens}
    await send_json(send, 200, answer)


def usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens}


def _id(kind: str, call: Call) -> str:
    return call.new_id("chatcmpl-" if kind == "chat" else "cmpl-", 16)
