"""The demo's routes on the built-in fake upstream, through the gateway, with the official
SDKs: each kind of call is recorded as the upstream billed it.

The endpoints and the record's new columns come from other parts of issue 14: a gateway that
answers 404 for an endpoint skips that test, and a ledger without the columns for cache
writes, units and the upstream's model ends the test as an expected failure, naming it."""

from __future__ import annotations

import io
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tallygate.app import create_app
from tallygate.config import load_settings
from tallygate.demo.routes import (
    CLAUDE,
    OCR_SERVICE,
    R1_32B,
    RERANK_SERVICE,
    WHISPER,
    gateway_routes,
)
from tallygate.domain.records import CallRecord, now_us
from tallygate.fake_upstream import FakeSettings, FakeUpstream
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.store.database import Database
from tallygate.store.usage import CallFilter, iter_calls
from tests.servers import serve_app

ADMIN = "demo-routes-admin-token"


@pytest.fixture(scope="module")
def demo_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Database]]:
    path: Path = tmp_path_factory.mktemp("demo-routes") / "demo.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    key = KeyService(db).create(KeyCreate(name="demo"), "test").key
    with serve_app(FakeUpstream(FakeSettings(chunks=4))) as upstream:
        settings = load_settings(database_url=db.url, admin_token=ADMIN,
                                 routes=gateway_routes(f"{upstream}/v1"),
                                 flush_interval_ms=10, key_cache_seconds=0)
        with serve_app(create_app(settings)) as url:
            yield url, key, db
    db.dispose()


def recorded(db: Database, model: str) -> CallRecord:
    """The newest record of ``model``, once the recorder has written it."""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        found = list(iter_calls(db, CallFilter(models=(model,)), 0, now_us() + 60_000_000,
                                limit=1))
        if found:
            return found[0]
        time.sleep(0.02)
    raise AssertionError(f"no record of {model}")


def served(answer: httpx.Response | None, path: str) -> None:
    """The gateway serves ``path``: a 404 that names no model is a route it lacks."""
    assert answer is None or answer.status_code != 404 or "model" in answer.text, path


def wav(seconds: float, rate: int = 16_000) -> bytes:
    data = int(seconds * rate) * 2
    return (b"RIFF" + struct.pack("<I", 36 + data) + b"WAVEfmt "
            + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * 2, 2, 16)
            + b"data" + struct.pack("<I", data) + bytes(data))


def test_chat_records_the_model_the_upstream_ran(demo_gateway: Any) -> None:
    url, key, db = demo_gateway
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
        answer = client.chat.completions.create(model=R1_32B, messages=[
            {"role": "user", "content": "hello"}])
    assert answer.model == "deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"
    record = recorded(db, R1_32B)
    assert answer.usage is not None and record.input_tokens == answer.usage.prompt_tokens
    assert record.upstream_model == answer.model


def test_the_rerank_service_is_metered_by_its_tokens(demo_gateway: Any) -> None:
    url, key, db = demo_gateway
    answer = httpx.post(f"{url}/v1/rerank", headers={"authorization": f"Bearer {key}"},
                        json={"model": RERANK_SERVICE, "query": "usage spikes",
                              "documents": ["a spike on Tuesday", "a quiet week"]})
    served(answer, "/v1/rerank")
    assert answer.status_code == 200, answer.text
    record = recorded(db, RERANK_SERVICE)
    assert (record.call_type, record.model_category) == ("service", "rerank")
    assert record.input_tokens == answer.json()["usage"]["total_tokens"]


def test_the_ocr_service_is_billed_per_page(demo_gateway: Any) -> None:
    url, key, db = demo_gateway
    answer = httpx.post(f"{url}/v1/ocr", headers={"authorization": f"Bearer {key}"},
                        json={"model": OCR_SERVICE, "fake": {"pages": 3},
                              "document": {"type": "document_url",
                                           "document_url": "https://example.com/scan.pdf"}})
    served(answer, "/v1/ocr")
    assert answer.status_code == 200, answer.text
    assert answer.json()["usage"] == {"pages": 3}
    record = recorded(db, OCR_SERVICE)
    assert record.call_type == "service" and record.status_code == 200
    assert (record.units, record.unit) == (3, "page")


def test_whisper_is_billed_by_the_second(demo_gateway: Any) -> None:
    url, key, db = demo_gateway
    with openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0) as client:
        try:
            answer = client.audio.transcriptions.create(
                model=WHISPER, file=("note.wav", io.BytesIO(wav(12.5)), "audio/wav"))
        except openai.NotFoundError as exc:
            served(exc.response, "/v1/audio/transcriptions")
            raise
    assert answer.usage is not None and answer.usage.type == "duration"
    record = recorded(db, WHISPER)
    assert record.model_category == "audio"
    assert (record.units, record.unit) == (13, "second")


def test_the_anthropic_route_records_cache_writes(demo_gateway: Any) -> None:
    anthropic = pytest.importorskip("anthropic")
    url, key, db = demo_gateway
    with anthropic.Anthropic(base_url=url, api_key=key, max_retries=0) as client:
        try:
            message = client.messages.create(
                model=CLAUDE, max_tokens=256,
                system=[{"type": "text", "text": "You explain usage.",
                         "cache_control": {"type": "ephemeral"}}],
                messages=[{"role": "user", "content": "What did key 7 spend?"}],
                extra_body={"fake": {"input_tokens": 3000, "cache_write_tokens": 2048}})
        except anthropic.NotFoundError as exc:
            served(exc.response, "/v1/messages")
            raise
    usage = message.usage
    assert (usage.input_tokens, usage.cache_creation_input_tokens) == (952, 2048)
    record = recorded(db, CLAUDE)
    assert record.input_tokens == 3000  # uncached + cache reads + cache writes
    assert record.cache_write_tokens == 2048
