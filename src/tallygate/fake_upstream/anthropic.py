"""``POST /v1/messages``: Anthropic's Messages API, streamed and not, with prompt caching and
tool use.

A request that marks a ``cache_control`` breakpoint caches a prefix of its input (at least
1 024 tokens, Anthropic's minimum): a quarter of such requests write it (to the 1-hour cache
when the request asks for ``"ttl": "1h"``, else the 5-minute one), the rest read it.
``usage.input_tokens`` is then only the uncached rest, as Anthropic reports it. A request that
offers tools gets a ``tool_use`` block for one of them (``stop_reason = "tool_use"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from tallygate.fake_upstream.asgi import SSE, Send, chunk, finish, send_json, sse, start
from tallygate.fake_upstream.call import Call, estimate_tokens, served_model, split, text

CACHE_MIN = 1024
WRITE_SHARE = 0.25


@dataclass(frozen=True, slots=True)
class MessagesUsage:
    input_tokens: int  # uncached
    cache_read: int
    cache_write_5m: int
    cache_write_1h: int
    output_tokens: int

    @property
    def cache_write(self) -> int:
        return self.cache_write_5m + self.cache_write_1h

    def inputs(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens,
                "cache_creation_input_tokens": self.cache_write,
                "cache_read_input_tokens": self.cache_read}

    def as_dict(self, output_tokens: int | None = None) -> dict[str, Any]:
        return {**self.inputs(),
                "cache_creation": {"ephemeral_5m_input_tokens": self.cache_write_5m,
                                   "ephemeral_1h_input_tokens": self.cache_write_1h},
                "output_tokens": self.output_tokens if output_tokens is None
                else output_tokens,
                "service_tier": "standard"}


def messages_usage(call: Call, body: bytes) -> MessagesUsage:
    total, output = call.trace_tokens("conv")
    read = write = 0
    if b'"cache_control"' in body:
        prefix = int(total * (0.5 + 0.45 * call.draw("prefix")))
        if prefix >= CACHE_MIN:
            if call.draw("write") < WRITE_SHARE:
                write = prefix
            else:
                read = prefix
    read = call.count("cache_read_tokens", read)
    write = call.count("cache_write_tokens", write)
    one_hour = b'"ttl"' in body and b'"1h"' in body
    write_1h = call.count("cache_write_1h_tokens", write if one_hour else 0)
    write_5m = call.count("cache_write_5m_tokens", max(0, write - write_1h))
    return MessagesUsage(max(0, total - read - write_5m - write_1h), read, write_5m, write_1h,
                         output)


def _tool(call: Call) -> dict[str, Any] | None:
    """The client tool the answer calls, if the request offers any and does not forbid it."""
    tools = call.request.get("tools")
    choice = call.request.get("tool_choice")
    if not isinstance(tools, list) or (isinstance(choice, dict)
                                       and choice.get("type") == "none"):
        return None
    named = [t for t in tools if isinstance(t, dict) and isinstance(t.get("name"), str)
             and t.get("type") in (None, "custom")]
    if isinstance(choice, dict) and choice.get("type") == "tool":
        named = [t for t in named if t["name"] == choice.get("name")] or named
    return named[int(call.draw("tool") * len(named))] if named else None


def _tool_input(tool: dict[str, Any]) -> dict[str, Any]:
    schema = tool.get("input_schema")
    properties = schema.get("properties") if isinstance(schema, dict) else None
    example = {"string": "example", "integer": 1, "number": 1.5, "boolean": True,
               "array": [], "object": {}}
    if not isinstance(properties, dict):
        return {}
    return {name: (spec.get("enum") or [example.get(str(spec.get("type")), "example")])[0]
            if isinstance(spec, dict) else "example" for name, spec in properties.items()}


async def messages(call: Call, send: Send, body: bytes) -> None:
    usage = messages_usage(call, body)
    tool = _tool(call)
    tool_block = None if tool is None else {
        "type": "tool_use", "id": call.new_id("toolu_01", 22), "name": tool["name"],
        "input": _tool_input(tool)}
    answer = text(usage.output_tokens)
    if tool_block is not None:  # a short preamble, then the call
        answer = text(max(1, usage.output_tokens // 8))
    stop_reason = "tool_use" if tool_block else "end_turn"
    message_id = call.new_id("msg_01", 22)
    if call.stream:
        await _stream(call, send, usage, message_id, answer, tool_block, stop_reason)
        return
    content: list[dict[str, Any]] = [{"type": "text", "text": answer}]
    if tool_block is not None:
        content.append(tool_block)
    message = _message(call, message_id, content, stop_reason)
    if call.report_usage:
        message["usage"] = usage.as_dict()
    await send_json(send, 200, message)


async def _stream(call: Call, send: Send, usage: MessagesUsage, message_id: str, answer: str,
                  tool_block: dict[str, Any] | None, stop_reason: str) -> None:
    await start(send, 200, SSE)

    async def emit(data: dict[str, Any]) -> None:
        await chunk(send, sse(data, event=data["type"], stamp=call.stamp))

    opening = _message(call, message_id, [], None)
    if call.report_usage:
        opening["usage"] = usage.as_dict(output_tokens=1)
    await emit({"type": "message_start", "message": opening})
    await emit({"type": "content_block_start", "index": 0,
                "content_block": {"type": "text", "text": ""}})
    await emit({"type": "ping"})
    cut_after = call.cut_after
    for number, piece in enumerate(split(answer, call.chunks), 1):
        await call.pause()
        await emit({"type": "content_block_delta", "index": 0,
                    "delta": {"type": "text_delta", "text": piece}})
        if cut_after is not None and number >= cut_after:
            await finish(send)
            return  # the stream ends before message_delta, so without the final usage
    await emit({"type": "content_block_stop", "index": 0})
    if tool_block is not None:
        await emit({"type": "content_block_start", "index": 1,
                    "content_block": {**tool_block, "input": {}}})
        arguments = orjson.dumps(tool_block["input"]).decode()
        for piece in split(arguments, 3):
            await emit({"type": "content_block_delta", "index": 1,
                        "delta": {"type": "input_json_delta", "partial_json": piece}})
        await emit({"type": "content_block_stop", "index": 1})
    delta: dict[str, Any] = {"type": "message_delta",
                             "delta": {"stop_reason": stop_reason, "stop_sequence": None}}
    if call.report_usage:  # cumulative: the whole call's counts, not what came since
        delta["usage"] = {**usage.inputs(), "output_tokens": usage.output_tokens}
    await emit(delta)
    await finish(send, sse({"type": "message_stop"}, event="message_stop", stamp=call.stamp))


def _message(call: Call, message_id: str, content: list[dict[str, Any]],
             stop_reason: str | None) -> dict[str, Any]:
    return {"id": message_id, "type": "message", "role": "assistant", "content": content,
            "model": served_model(call.model), "stop_reason": stop_reason,
            "stop_sequence": None}


async def count_tokens(call: Call, send: Send, body: bytes) -> None:
    """``POST /v1/messages/count_tokens``: the input a message with this body would have."""
    total, _ = call.trace_tokens("conv")
    await send_json(send, 200, {"input_tokens": total or estimate_tokens(body.decode(
        errors="replace"))})
