"""``POST /v1/responses``: OpenAI's Responses API, streamed (its typed event sequence, usage in
``response.completed``) and not.

Cached input comes in OpenAI's prompt-cache steps (the first 1 024 tokens, then 128 at a
time); reasoning models (o-series, gpt-5, R1, or a request with ``reasoning``) think before
they answer, and ``output_tokens`` counts both, as OpenAI reports it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from tallygate.fake_upstream.asgi import SSE, Send, chunk, finish, send_json, sse, start
from tallygate.fake_upstream.call import Call, is_reasoning_model, served_model, split, text

CACHE_MIN = 1024
CACHE_STEP = 128


@dataclass(frozen=True, slots=True)
class ResponseUsage:
    input_tokens: int
    cached_tokens: int
    output_tokens: int  # answer + reasoning
    reasoning_tokens: int

    def as_dict(self) -> dict[str, Any]:
        return {"input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": self.cached_tokens,
                                         "cache_write_tokens": 0},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
                "total_tokens": self.input_tokens + self.output_tokens}


def response_usage(call: Call) -> ResponseUsage:
    input_tokens, answer = call.trace_tokens("conv", caps=())
    reasoning = 0
    effort = call.request.get("reasoning")
    thinks = (is_reasoning_model(call.model) if effort is None
              else isinstance(effort, dict) and effort.get("effort") not in ("none", "minimal"))
    if thinks:
        reasoning = round(answer * (0.5 + 2.5 * call.draw("reasoning")))
    reasoning = call.count("reasoning_tokens", reasoning)
    cap = call.request.get("max_output_tokens")
    if isinstance(cap, int) and cap > 0 and answer + reasoning > cap:
        reasoning = min(reasoning, cap - 1)
        answer = max(1, cap - reasoning)
    cached = 0
    hit_share = 0.8 if call.request.get("prompt_cache_key") else 0.4
    if input_tokens >= CACHE_MIN and call.draw("cache") < hit_share:
        prefix = int(input_tokens * (0.5 + 0.45 * call.draw("prefix")))
        if prefix >= CACHE_MIN:
            cached = CACHE_MIN + (prefix - CACHE_MIN) // CACHE_STEP * CACHE_STEP
    cached = min(call.count("cached_tokens", cached), input_tokens)
    return ResponseUsage(input_tokens, cached, answer + reasoning, reasoning)


async def responses(call: Call, send: Send) -> None:
    usage = response_usage(call)
    answer_tokens = usage.output_tokens - usage.reasoning_tokens
    response_id = call.new_id("resp_", 48)
    message_id = call.new_id("msg_", 48)
    reasoning_item = ({"id": call.new_id("rs_", 48), "type": "reasoning", "summary": []}
                      if usage.reasoning_tokens else None)
    created = time.time()
    if not call.stream:
        content = text(answer_tokens)
        output = [*([reasoning_item] if reasoning_item else []),
                  _message(message_id, "completed", [_output_text(content)])]
        await send_json(send, 200, _response(call, response_id, created, "completed", output,
                                             usage if call.report_usage else None))
        return
    await _stream(call, send, usage, response_id, message_id, reasoning_item, created)


async def _stream(call: Call, send: Send, usage: ResponseUsage, response_id: str,
                  message_id: str, reasoning_item: dict[str, Any] | None,
                  created: float) -> None:
    await start(send, 200, SSE)
    sequence = 0

    async def emit(kind: str, **fields: Any) -> None:
        nonlocal sequence
        await chunk(send, sse({"type": kind, "sequence_number": sequence, **fields},
                              event=kind, stamp=call.stamp))
        sequence += 1

    pending = _response(call, response_id, created, "in_progress", [], None)
    await emit("response.created", response=pending)
    await emit("response.in_progress", response=pending)
    output: list[dict[str, Any]] = []
    if reasoning_item is not None:
        await emit("response.output_item.added", output_index=0, item=reasoning_item)
        await emit("response.output_item.done", output_index=0, item=reasoning_item)
        output.append(reasoning_item)
    index = len(output)
    place = {"item_id": message_id, "output_index": index, "content_index": 0}
    await emit("response.output_item.added", output_index=index,
               item=_message(message_id, "in_progress", []))
    await emit("response.content_part.added", **place, part=_output_text(""))
    content = text(usage.output_tokens - usage.reasoning_tokens)
    cut_after = call.cut_after
    for number, piece in enumerate(split(content, call.chunks), 1):
        await call.pause()
        await emit("response.output_text.delta", **place, delta=piece, logprobs=[])
        if cut_after is not None and number >= cut_after:
            await finish(send)
            return  # the stream ends before response.completed, so without usage
    await emit("response.output_text.done", **place, text=content, logprobs=[])
    await emit("response.content_part.done", **place, part=_output_text(content))
    message = _message(message_id, "completed", [_output_text(content)])
    await emit("response.output_item.done", output_index=index, item=message)
    output.append(message)
    done = _response(call, response_id, created, "completed", output,
                     usage if call.report_usage else None)
    kind = "response.completed"
    await finish(send, sse({"type": kind, "sequence_number": sequence, "response": done},
                           event=kind, stamp=call.stamp))


def _response(call: Call, response_id: str, created: float, status: str,
              output: list[dict[str, Any]], usage: ResponseUsage | None) -> dict[str, Any]:
    request = call.request
    instructions = request.get("instructions")
    effort = request.get("reasoning")
    tools = request.get("tools")
    return {
        "id": response_id, "object": "response", "created_at": int(created),
        "status": status, "completed_at": int(time.time()) if status == "completed" else None,
        "background": False, "error": None, "incomplete_details": None,
        "instructions": instructions if isinstance(instructions, str) else None,
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": None, "model": served_model(call.model), "output": output,
        "parallel_tool_calls": request.get("parallel_tool_calls", True) is not False,
        "previous_response_id": request.get("previous_response_id"),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "reasoning": {"effort": effort.get("effort"), "summary": None}
        if isinstance(effort, dict) else {"effort": None, "summary": None},
        "safety_identifier": None, "service_tier": "default", "store": True,
        "temperature": 1.0, "text": {"format": {"type": "text"}, "verbosity": "medium"},
        "tool_choice": "auto", "tools": tools if isinstance(tools, list) else [],
        "top_logprobs": 0, "top_p": 1.0, "truncation": "disabled",
        "usage": None if usage is None else usage.as_dict(), "user": None, "metadata": {},
    }


def _message(message_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": message_id, "type": "message", "status": status, "role": "assistant",
            "content": content}


def _output_text(content: str) -> dict[str, Any]:
    return {"type": "output_text", "text": content, "annotations": [], "logprobs": []}
