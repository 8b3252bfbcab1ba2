"""A minimal upstream for the endpoints beyond chat, written apart from tallygate's fake
upstream (aiohttp, not tallygate's code): realistic bodies, with the usage OpenAI's API
reports, and a note of what it was sent so a test can reconcile the two.

A request may steer it through ``"fake"`` (JSON bodies; the SDKs' ``extra_body``):
``usage_delay_s`` (a Responses stream pauses that long before its ``response.completed``),
``no_end`` (a Responses stream ends without it).
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiohttp import web

RESPONSE_USAGE = {"input_tokens": 1200, "input_tokens_details": {"cached_tokens": 1024},
                  "output_tokens": 900, "output_tokens_details": {"reasoning_tokens": 640},
                  "total_tokens": 2100}
AUDIO_BYTES_PER_SECOND = 16_000  # what the upstream takes the upload's length to mean
SPEECH_CHUNK = b"\x00\x01" * 8192
SPEECH_CHUNKS = 8
OCR_PAGES = 3


@dataclass
class Seen:
    """What the upstream was sent, per path (the last call)."""

    bodies: dict[str, Any] = field(default_factory=dict)
    form_fields: dict[str, str] = field(default_factory=dict)
    file_bytes: int = 0
    content_length: str | None = None
    query: str = ""


SEEN = web.AppKey("seen", Seen)


def _response_object(model: str, status: str = "completed") -> dict[str, Any]:
    return {"id": "resp_1", "object": "response", "created_at": 1_733_000_000,
            "status": status, "model": f"{model}-2025-04-14", "output": [
                {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "Hello there.",
                              "annotations": []}]}],
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": [],
            "usage": RESPONSE_USAGE}


def _sse(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: " + kind.encode() + b"\ndata: " + orjson.dumps(data) + b"\n\n"


async def responses(request: web.Request) -> web.StreamResponse:
    body = await request.json()
    request.app[SEEN].bodies[request.path] = body
    fake = body.get("fake") or {}
    model = body["model"]
    if not body.get("stream"):
        return web.json_response(_response_object(model))
    answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
    await answer.prepare(request)
    whole = _response_object(model)
    started = whole | {"status": "in_progress", "output": [], "usage": None}
    await answer.write(_sse("response.created", {"type": "response.created", "sequence_number": 0,
                                                 "response": started}))
    for number, word in enumerate(("Hello", " there", ".")):
        await asyncio.sleep(0.05)
        await answer.write(_sse("response.output_text.delta", {
            "type": "response.output_text.delta", "sequence_number": number + 1,
            "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": word,
            "logprobs": []}))
    await asyncio.sleep(float(fake.get("usage_delay_s", 0)))
    if not fake.get("no_end"):
        await answer.write(_sse("response.completed", {
            "type": "response.completed", "sequence_number": 4, "response": whole}))
    await answer.write_eof()
    return answer


async def rerank(request: web.Request) -> web.Response:
    body = await request.json()
    request.app[SEEN].bodies[request.path] = body
    results = [{"index": i, "relevance_score": 1 / (i + 1)}
               for i in range(len(body["documents"]))]
    if body["model"].startswith("cohere"):
        return web.json_response({"id": "r1", "results": results, "meta": {
            "api_version": {"version": "2"}, "billed_units": {"search_units": 2}}})
    return web.json_response({"id": "r1", "model": f"{body['model']}-v2", "results": results,
                              "usage": {"total_tokens": 321}})


async def transcriptions(request: web.Request) -> web.StreamResponse:
    """Reads the form as it comes (never the whole file at once)."""
    seen: Seen = request.app[SEEN]
    seen.form_fields, seen.file_bytes = {}, 0
    seen.content_length = request.headers.get("content-length")
    reader = await request.multipart()
    async for part in reader:
        if part.filename is not None:  # type: ignore[union-attr]
            while chunk := await part.read_chunk(64 * 1024):  # type: ignore[union-attr]
                seen.file_bytes += len(chunk)
        else:
            seen.form_fields[part.name or ""] = await part.text()  # type: ignore[union-attr]
    model = seen.form_fields.get("model", "")
    seconds = seen.file_bytes / AUDIO_BYTES_PER_SECOND
    if model.startswith("whisper"):
        usage: dict[str, Any] = {"type": "duration", "seconds": seconds}
    else:
        usage = {"type": "tokens", "input_tokens": 14 + math.ceil(seconds * 10),
                 "input_token_details": {"text_tokens": 14,
                                         "audio_tokens": math.ceil(seconds * 10)},
                 "output_tokens": 45, "total_tokens": 59 + math.ceil(seconds * 10)}
    if seen.form_fields.get("stream") == "true":
        answer = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await answer.prepare(request)
        for word in ("Hello", " world"):
            await answer.write(b"data: " + orjson.dumps(
                {"type": "transcript.text.delta", "delta": word}) + b"\n\n")
        await answer.write(b"data: " + orjson.dumps(
            {"type": "transcript.text.done", "text": "Hello world", "usage": usage}) + b"\n\n")
        await answer.write_eof()
        return answer
    return web.json_response({"text": "Hello world", "usage": usage})


async def speech(request: web.Request) -> web.StreamResponse:
    request.app[SEEN].bodies[request.path] = await request.json()
    answer = web.StreamResponse(headers={"content-type": "audio/mpeg"})
    await answer.prepare(request)
    for _ in range(SPEECH_CHUNKS):
        await answer.write(SPEECH_CHUNK)
        await asyncio.sleep(0.01)
    await answer.write_eof()
    return answer


async def images(request: web.Request) -> web.Response:
    body = await request.json()
    request.app[SEEN].bodies[request.path] = body
    data = [{"b64_json": "aGVsbG8="} for _ in range(body.get("n", 1))]
    answer: dict[str, Any] = {"created": 1_733_000_000, "data": data}
    if body["model"].startswith("gpt-image"):
        answer["usage"] = {"input_tokens": 50, "input_tokens_details": {
            "text_tokens": 50, "image_tokens": 0}, "output_tokens": 4160 * len(data),
            "total_tokens": 50 + 4160 * len(data)}
    return web.json_response(answer)


async def moderations(request: web.Request) -> web.Response:
    body = await request.json()
    request.app[SEEN].bodies[request.path] = body
    return web.json_response({"id": "modr-1", "model": "omni-moderation-2024-09-26",
                              "results": [{"flagged": False, "categories": {},
                                           "category_scores": {}}]})


async def chat(request: web.Request) -> web.Response:
    body = await request.json()
    request.app[SEEN].bodies[request.path] = body
    return web.json_response({
        "id": "c1", "object": "chat.completion", "created": 1, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 9, "completion_tokens": 1, "total_tokens": 10}})


async def ocr(request: web.Request) -> web.Response:
    seen: Seen = request.app[SEEN]
    seen.bodies[request.path] = await request.read()
    seen.query = request.query_string
    return web.json_response({"pages": [{"text": "page"}] * OCR_PAGES,
                              "usage": {"pages": OCR_PAGES}})


def build_app() -> web.Application:
    app = web.Application(client_max_size=1024**3)
    app[SEEN] = Seen()
    app.router.add_post("/v1/responses", responses)
    app.router.add_post("/v1/rerank", rerank)
    app.router.add_post("/v1/audio/transcriptions", transcriptions)
    app.router.add_post("/v1/audio/translations", transcriptions)
    app.router.add_post("/v1/audio/speech", speech)
    app.router.add_post("/v1/images/generations", images)
    app.router.add_post("/v1/moderations", moderations)
    app.router.add_post("/v1/chat/completions", chat)
    for path in ("/v1/ocr/scan", "/v1/ocr/count", "/v1/ocr/missing"):
        app.router.add_post(path, ocr)
    return app


@contextmanager
def serve_upstream() -> Iterator[tuple[str, Seen]]:
    """The upstream on a free port, in a thread of its own; its base URL (without /v1)."""
    app = build_app()
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}", app[SEEN]
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
