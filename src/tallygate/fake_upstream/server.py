"""The fake upstream's ASGI application: which endpoint answers a path, and the controls every
endpoint shares (latency, injected failures)."""

from __future__ import annotations

import asyncio
import hashlib
import random
from typing import Any

import orjson

from tallygate.fake_upstream import anthropic, audio, chat, responses, services
from tallygate.fake_upstream.asgi import (
    Receive,
    Scope,
    Send,
    anthropic_error,
    finish,
    header,
    lifespan,
    openai_error,
    read_body,
    send_json,
    start,
)
from tallygate.fake_upstream.call import Call, FakeSettings, Upload
from tallygate.fake_upstream.multipart import MultipartError, boundary_of, read_form
from tallygate.fake_upstream.provider_reports import PATHS as REPORT_PATHS
from tallygate.fake_upstream.provider_reports import FakeProviderReports

# Path (after /v1/ or /) → endpoint. Multipart endpoints read their body as a stream.
ENDPOINTS = frozenset({
    "chat/completions", "completions", "embeddings", "responses", "messages",
    "messages/count_tokens", "rerank", "audio/transcriptions", "audio/translations",
    "audio/speech", "images/generations", "moderations", "ocr"})
_ANTHROPIC_ERRORS = {400: "invalid_request_error", 401: "authentication_error",
                     403: "permission_error", 404: "not_found_error", 413: "request_too_large",
                     429: "rate_limit_error", 529: "overloaded_error"}


def endpoint_of(path: str) -> tuple[str | None, bool]:
    """(endpoint, asked at Cohere's /v2/rerank)."""
    if path == "/v2/rerank":
        return "rerank", True
    name = path.removeprefix("/v1/") if path.startswith("/v1/") else path.lstrip("/")
    return (name if name in ENDPOINTS else None), False


class FakeUpstream:
    def __init__(self, settings: FakeSettings | None = None,
                 provider_reports: FakeProviderReports | None = None) -> None:
        self.settings = settings or FakeSettings()
        # The provider account's usage and cost reports, served beside the models (the demo).
        self.provider_reports = provider_reports
        self._random = random.Random(self.settings.seed)
        self.requests = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if self.provider_reports is not None and path in REPORT_PATHS:
            await self.provider_reports.answer(scope, send)
            return
        if method == "GET":
            await self._get(path, send)
            return
        if method != "POST":
            await send_json(send, 405, openai_error("method not allowed"))
            return
        endpoint, cohere = endpoint_of(path)
        self.requests += 1
        if endpoint is None:
            await read_body(receive)
            await send_json(send, 404, openai_error(f"no route {path}"))
            return
        content_type = header(scope, b"content-type")
        boundary = boundary_of(content_type) if content_type.startswith("multipart/") else None
        upload: Upload | None = None
        body = b""
        try:
            if boundary is not None:
                request, upload = await read_form(receive, boundary)
            else:
                body = await read_body(receive)
                request = orjson.loads(body)
        except (MultipartError, orjson.JSONDecodeError) as exc:
            await _fail(endpoint, send, 400, f"invalid body: {exc}", "invalid_request_error")
            return
        if not isinstance(request, dict):
            await _fail(endpoint, send, 400, "the body must be an object", "invalid_request_error")
            return
        if endpoint in ("audio/transcriptions", "audio/translations") and boundary is None:
            await _fail(endpoint, send, 400, "this endpoint takes a multipart/form-data body",
                       "invalid_request_error")
            return
        given = request.get("fake")
        control: dict[str, Any] = given if isinstance(given, dict) else {}
        seed = body if upload is None else orjson.dumps(request) + upload.sha256.encode()
        digest = int.from_bytes(hashlib.blake2b(seed, digest_size=8).digest(), "big")
        call = Call(request, control, digest, self.settings, upload, cohere)
        s = self.settings
        latency = float(control.get("latency_ms", s.latency_ms))
        status = int(control.get("status", 0)) or (
            500 if s.error_rate and self._random.random() < s.error_rate else 200)
        if latency:
            await asyncio.sleep(latency / 1000)
        if status != 200:
            await _fail(endpoint, send, status, f"injected failure ({status})", None)
            return
        await self._answer(endpoint, call, body, scope, send)

    async def _answer(self, endpoint: str, call: Call, body: bytes, scope: Scope,
                      send: Send) -> None:
        if endpoint == "chat/completions":
            await chat.chat(call, send)
        elif endpoint == "completions":
            await chat.completion(call, send)
        elif endpoint == "embeddings":
            await chat.embedding(call, send)
        elif endpoint == "responses":
            await responses.responses(call, send)
        elif endpoint == "messages":
            await anthropic.messages(call, send, body)
        elif endpoint == "messages/count_tokens":
            await anthropic.count_tokens(call, send, body)
        elif endpoint == "rerank":
            await services.rerank(call, send)
        elif endpoint == "moderations":
            await services.moderation(call, send)
        elif endpoint == "images/generations":
            await services.image(call, send, _base_url(scope))
        elif endpoint == "ocr":
            await services.ocr(call, send)
        elif endpoint == "audio/speech":
            await audio.speech(call, send)
        else:
            await audio.transcription(call, send, "transcribe" if endpoint.endswith(
                "transcriptions") else "translate")

    async def _get(self, path: str, send: Send) -> None:
        if path in ("/v1/models", "/models"):
            await send_json(send, 200, {"object": "list", "data": [
                {"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]})
        elif path == "/healthz":
            await send_json(send, 200, {"status": "ok"})
        elif path.startswith("/fake-images/"):
            await start(send, 200, [(b"content-type", b"image/png")])
            await finish(send, services.PNG)
        else:
            await send_json(send, 404, openai_error(f"no route {path}"))


async def _fail(endpoint: str, send: Send, status: int, message: str, kind: str | None) -> None:
    """How this endpoint says it failed: Anthropic's error shape on its endpoints."""
    if endpoint.startswith("messages"):
        await send_json(send, status, anthropic_error(
            message, kind or _ANTHROPIC_ERRORS.get(status, "api_error")))
    else:
        await send_json(send, status, openai_error(message, kind or "fake_upstream_error"))


def _base_url(scope: Scope) -> str:
    host = header(scope, b"host")
    if not host and scope.get("server"):
        server_host, port = scope["server"]
        host = f"{server_host}:{port}"
    return f"http://{host}"
