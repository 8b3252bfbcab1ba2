"""An OpenAI-compatible upstream for the demo, the tests and the benchmarks.

Token counts are deterministic: a request is mapped (by a hash of its body) to a row of the
Azure LLM inference trace, whose input and output token counts it reports (chat and
embeddings take the conversation trace, completions the code trace; ``max_tokens`` caps the
output). Latency, chunking and failures are set per server and can be overridden per request
by an extra body field, which the gateway forwards untouched like any unknown field::

    {"model": "...", "messages": [...], "fake": {"status": 500, "latency_ms": 20,
     "chunks": 4, "chunk_delay_ms": 5, "cut_after": 2, "no_usage": true,
     "input_tokens": 10, "output_tokens": 3, "stamp": true}}

``stamp`` puts the time each streamed event left (``sent_at``, Unix seconds) into the event,
so a benchmark on the same machine can tell how long the event took to reach it.

It is a bare ASGI application (no framework), so it is never the bottleneck of a benchmark.
"""

from __future__ import annotations

import asyncio
import hashlib
import random
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

import orjson

from tallygate.demo.trace import load_trace

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_SSE = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


@dataclass(frozen=True, slots=True)
class FakeSettings:
    latency_ms: float = 0.0  # before the answer (non-streamed) or the first chunk
    chunks: int = 8  # content chunks of a stream
    chunk_delay_ms: float = 0.0
    error_rate: float = 0.0  # share of requests answered 500
    report_usage: bool = True  # False: like providers that never report usage
    seed: int = 0


class FakeUpstream:
    def __init__(self, settings: FakeSettings | None = None) -> None:
        self.settings = settings or FakeSettings()
        trace = load_trace()
        self._conv = trace["conv"].token_pairs
        self._code = trace["code"].token_pairs
        self._random = random.Random(self.settings.seed)
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "GET" and path in ("/v1/models", "/models"):
            await _send_json(send, 200, {"object": "list", "data": [
                {"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]})
            return
        if method == "GET" and path == "/healthz":
            await _send_json(send, 200, {"status": "ok"})
            return
        if method != "POST":
            await _send_json(send, 405, _error("method not allowed"))
            return
        body = await _read(receive)
        self.requests += 1
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            await _send_json(send, 400, _error("invalid JSON"))
            return
        if not isinstance(request, dict):
            await _send_json(send, 400, _error("the body must be an object"))
            return
        kind = {"/v1/chat/completions": "chat", "/chat/completions": "chat",
                "/v1/completions": "completion", "/completions": "completion",
                "/v1/embeddings": "embedding", "/embeddings": "embedding"}.get(path)
        if kind is None:
            await _send_json(send, 404, _error(f"no route {path}"))
            return
        await self._answer(kind, body, request, send)

    async def _answer(self, kind: str, body: bytes, request: dict[str, Any], send: Send) -> None:
        given = request.get("fake")
        control: dict[str, Any] = given if isinstance(given, dict) else {}
        s = self.settings
        latency = float(control.get("latency_ms", s.latency_ms))
        status = int(control.get("status", 0)) or (
            500 if s.error_rate and self._random.random() < s.error_rate else 200)
        if latency:
            await asyncio.sleep(latency / 1000)
        if status != 200:
            await _send_json(send, status, _error(f"injected failure ({status})"))
            return
        input_tokens, output_tokens = self._tokens(kind, body, request, control)
        report = s.report_usage and not control.get("no_usage", False)
        model = str(request.get("model", "fake-model"))
        if kind == "embedding":
            await self._embedding(send, request, model, input_tokens, report)
        elif request.get("stream") is True:
            options = request.get("stream_options")
            include_usage = report and isinstance(options, dict) and bool(
                options.get("include_usage"))
            await self._stream(send, kind, model, input_tokens, output_tokens, include_usage,
                               int(control.get("chunks", s.chunks)),
                               float(control.get("chunk_delay_ms", s.chunk_delay_ms)),
                               control.get("cut_after"), control.get("stamp") is True)
        else:
            await self._complete(send, kind, model, input_tokens, output_tokens, report)

    def _tokens(self, kind: str, body: bytes, request: dict[str, Any],
                control: dict[str, Any]) -> tuple[int, int]:
        pairs = self._code if kind == "completion" else self._conv
        row = int.from_bytes(hashlib.blake2b(body, digest_size=8).digest(), "big") % len(pairs)
        input_tokens, output_tokens = pairs[row]
        cap = request.get("max_tokens") or request.get("max_completion_tokens")
        if isinstance(cap, int) and cap > 0:
            output_tokens = min(output_tokens, cap)
        input_tokens = int(control.get("input_tokens", input_tokens))
        output_tokens = int(control.get("output_tokens", output_tokens))
        return input_tokens, (0 if kind == "embedding" else max(1, output_tokens))

    async def _complete(self, send: Send, kind: str, model: str, input_tokens: int,
                        output_tokens: int, report: bool) -> None:
        text = _text(output_tokens)
        choice: dict[str, Any] = (
            {"index": 0, "message": {"role": "assistant", "content": text},
             "finish_reason": "stop"} if kind == "chat" else
            {"index": 0, "text": text, "finish_reason": "stop"})
        answer: dict[str, Any] = {
            "id": _id(kind), "object": "chat.completion" if kind == "chat" else
            "text_completion", "created": int(time.time()), "model": model,
            "choices": [choice]}
        if report:
            answer["usage"] = _usage(input_tokens, output_tokens)
        await _send_json(send, 200, answer)

    async def _stream(self, send: Send, kind: str, model: str, input_tokens: int,
                      output_tokens: int, include_usage: bool, chunks: int, delay_ms: float,
                      cut_after: Any, stamp: bool) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        call_id, created = _id(kind), int(time.time())
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        pieces = _split(_text(output_tokens), max(1, chunks))

        def event(choice: dict[str, Any] | None, usage: dict[str, int] | None = None) -> bytes:
            data: dict[str, Any] = {"id": call_id, "object": obj, "created": created,
                                    "model": model, "choices": [] if choice is None else
                                    [choice]}
            if include_usage:
                data["usage"] = usage
            if stamp:
                data["sent_at"] = time.time()
            return b"data: " + orjson.dumps(data) + b"\n\n"

        def piece_choice(text: str, finish: str | None = None) -> dict[str, Any]:
            if kind == "chat":
                return {"index": 0, "delta": {"content": text}, "finish_reason": finish}
            return {"index": 0, "text": text, "finish_reason": finish}

        if kind == "chat":
            await _body(send, event({"index": 0, "delta": {"role": "assistant", "content": ""},
                                     "finish_reason": None}))
        for number, text in enumerate(pieces, 1):
            if delay_ms:
                await asyncio.sleep(delay_ms / 1000)
            await _body(send, event(piece_choice(text)))
            if isinstance(cut_after, int) and number >= cut_after:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
                return  # the stream ends without a finish, usage or [DONE]
        await _body(send, event(piece_choice("", "stop")))
        if include_usage:
            await _body(send, event(None, _usage(input_tokens, output_tokens)))
        await send({"type": "http.response.body", "body": b"data: [DONE]\n\n",
                    "more_body": False})

    async def _embedding(self, send: Send, request: dict[str, Any], model: str,
                         input_tokens: int, report: bool) -> None:
        items = request.get("input")
        count = len(items) if isinstance(items, list) and items and not isinstance(
            items[0], int) else 1
        answer: dict[str, Any] = {
            "object": "list", "model": model,
            "data": [{"object": "embedding", "index": i,
                      "embedding": [round(0.01 * (i + j), 4) for j in range(8)]}
                     for i in range(count)]}
        if report:
            answer["usage"] = {"prompt_tokens": input_tokens, "total_tokens": input_tokens}
        await _send_json(send, 200, answer)


def _usage(input_tokens: int, output_tokens: int) -> dict[str, int]:
    return {"prompt_tokens": input_tokens, "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens}


def _text(tokens: int) -> str:
    """``tokens`` four-character words: the gateway's estimate of it is exact."""
    return "tok " * tokens


def _split(text: str, parts: int) -> list[str]:
    size = max(1, -(-len(text) // parts))
    return [text[i:i + size] for i in range(0, len(text), size)] or [""]


def _id(kind: str) -> str:
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return f"{prefix}-{random.getrandbits(64):016x}"


def _error(message: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "fake_upstream_error", "code": None,
                      "param": None}}


async def _read(receive: Receive) -> bytes:
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            return b"".join(chunks)


async def _body(send: Send, data: bytes) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": True})


async def _send_json(send: Send, status: int, data: Any) -> None:
    await send({"type": "http.response.start", "status": status, "headers": _JSON})
    await send({"type": "http.response.body", "body": orjson.dumps(data)})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
