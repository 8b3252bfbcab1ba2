"""Every endpoint beyond chat, through the official openai SDK unchanged, against an upstream
written apart from tallygate (openai_upstream.py): each record holds what the upstream
billed, measure by measure, on SQLite and PostgreSQL.

Each record is asserted as the recorder is handed it (``Records.made``), and every one of
those is checked to be stored as made: ``units``, ``unit``, ``cache_write_tokens`` and
``upstream_model`` here, the token measures, status and cost in the tests.
"""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import openai
import pytest

from tallygate.app import create_app
from tallygate.config import Route, RoutePrice, load_settings
from tallygate.domain.records import CallRecord
from tallygate.store.database import Database
from tests.gateway.openai_upstream import (
    AUDIO_BYTES_PER_SECOND,
    OCR_PAGES,
    RESPONSE_USAGE,
    SPEECH_CHUNK,
    SPEECH_CHUNKS,
    Seen,
    serve_upstream,
)
from tests.reliability.support import ADMIN, new_key, wait_until
from tests.servers import serve_app

M = Decimal(1_000_000)
NANO = Decimal(1_000_000_000)


def _price(**prices: str) -> RoutePrice:
    return RoutePrice(**{name: Decimal(value) for name, value in prices.items()})


def routes(base: str) -> list[Route]:
    return [
        Route(model="gpt-4.1", base_url=base, price=_price(
            input_per_million="2.00", cached_input_per_million="0.50",
            output_per_million="8.00")),
        Route(model="chat-4o", base_url=base, upstream_model="gpt-4o"),
        Route(model="rerank-bge", base_url=base, kind="service", upstream_model="bge-reranker",
              price=_price(input_per_million="0.02")),
        Route(model="rerank-cohere", base_url=base, kind="service",
              upstream_model="cohere-rerank-v3.5", price=_price(per_unit="0.002")),
        Route(model="transcribe", base_url=base, upstream_model="gpt-4o-transcribe",
              price=_price(input_per_million="6.00", output_per_million="10.00")),
        Route(model="whisper", base_url=base, upstream_model="whisper-1",
              price=_price(per_unit="0.0001")),
        Route(model="tts", base_url=base, upstream_model="tts-1",
              price=_price(per_unit="0.000015")),
        Route(model="image-gpt", base_url=base, upstream_model="gpt-image-1",
              price=_price(input_per_million="5.00", output_per_million="40.00")),
        Route(model="dalle", base_url=base, upstream_model="dall-e-3",
              price=_price(per_unit="0.04")),
        Route(model="moderation", base_url=base, upstream_model="omni-moderation-latest"),
        Route(model="ocr", base_url=base, kind="service", path="/v1/ocr/scan", unit="page",
              units_from="/usage/pages", price=_price(per_unit="0.01")),
        Route(model="ocr-flat", base_url=base, kind="service", path="/v1/ocr/count",
              price=_price(per_unit="0.005")),
        Route(model="ocr-missing", base_url=base, kind="service", path="/v1/ocr/missing",
              unit="page", units_from="/usage/sheets"),
    ]


@dataclass
class Records:
    """The gateway under test, and every record its recorder was handed."""

    url: str
    db_url: str
    app: Any
    made: list[CallRecord] = field(default_factory=list)

    def watch(self) -> None:
        recorder = self.app.state.recorder
        record, record_and_commit = recorder.record, recorder.record_and_commit

        def capture(call: CallRecord) -> None:
            self.made.append(call)
            record(call)

        async def capture_and_commit(call: CallRecord) -> None:
            self.made.append(call)
            await record_and_commit(call)

        recorder.record, recorder.record_and_commit = capture, capture_and_commit

    def made_for(self, key_id: str, count: int = 1) -> list[CallRecord]:
        made: list[CallRecord] = wait_until(
            lambda: len(r := [c for c in self.made if c.api_key_id == key_id]) >= count and r,
            timeout=10)
        kept = {row["id"]: row for row in self.stored(key_id, len(made))}
        for record in made:
            row = kept[record.id]
            assert (row["cache_write_tokens"], row["units"], row["unit"],
                    row["upstream_model"]) == (record.cache_write_tokens, record.units,
                                               record.unit, record.upstream_model)
        return made

    def stored(self, key_id: str, count: int = 1) -> list[dict[str, Any]]:
        def find() -> list[dict[str, Any]] | None:
            response = httpx.get(f"{self.url}/api/v1/usage/calls", timeout=10,
                                 params={"period": "3d", "limit": 1000, "api_key_id": key_id},
                                 headers={"Authorization": f"Bearer {ADMIN}"})
            data: list[dict[str, Any]] = response.json()["data"]
            return data if len(data) >= count else None
        return wait_until(find, timeout=10)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, Seen]]:
    with serve_upstream() as served:
        yield served


@pytest.fixture
def gw(db: Database, upstream: tuple[str, Seen]) -> Iterator[Records]:
    app = create_app(load_settings(database_url=db.url, admin_token=ADMIN,
                                   routes=routes(f"{upstream[0]}/v1"), flush_interval_ms=10,
                                   key_cache_seconds=0))
    with serve_app(app) as url:
        records = Records(url, db.url, app)
        records.watch()
        yield records


@pytest.fixture
def sdk(gw: Records) -> Iterator[Callable[[], tuple[str, openai.OpenAI]]]:
    made: list[openai.OpenAI] = []

    def for_new_key() -> tuple[str, openai.OpenAI]:
        key_id, key = new_key(gw.db_url)
        made.append(openai.OpenAI(base_url=f"{gw.url}/v1", api_key=key, max_retries=0))
        return key_id, made[-1]

    yield for_new_key
    for client in made:
        client.close()


def cost(input_tokens: int = 0, cached: int = 0, output: int = 0, units: int = 0, *,
         price_in: str = "0", price_cached: str = "0", price_out: str = "0",
         per_unit: str = "0") -> int:
    """What the upstream's figures cost at the route's price, computed here apart."""
    amount = ((input_tokens - cached) * Decimal(price_in) + cached * Decimal(price_cached)
              + output * Decimal(price_out)) / M + units * Decimal(per_unit)
    return int(amount * NANO)


def assert_unit_cost(gw: Records, record: CallRecord, expected: int) -> None:
    """A call billed by units costs its units at the route's ``per_unit``. The price table
    holds ``per_unit`` once the ledger's branch (i14-ledger14) stores it; until then the
    ledger prices a unit at 0, and the record is held to the ledger's own pricing of its
    units (which the gateway must have passed)."""
    ledger = gw.app.state.ledger
    assert record.cost_nano == ledger.cost_of(
        record.model, record.ts_us, record.input_tokens, record.cached_input_tokens,
        record.output_tokens, record.status_code, record.api_key_id,
        cache_write_tokens=record.cache_write_tokens, units=record.units)
    if ledger.cost_of(record.model, record.ts_us, 0, 0, 0, units=1):  # per_unit is stored
        assert record.cost_nano == expected


RESPONSE_COST = cost(RESPONSE_USAGE["input_tokens"], 1024, RESPONSE_USAGE["output_tokens"],
                     price_in="2.00", price_cached="0.50", price_out="8.00")


RESPONSE_MEASURES = {"input_tokens": 1200, "cached_input_tokens": 1024, "output_tokens": 900,
                     "reasoning_tokens": 640, "estimated": False}


def assert_response_usage(record: CallRecord | dict[str, Any]) -> None:
    def value(name: str) -> Any:
        return record[name] if isinstance(record, dict) else getattr(record, name)
    assert {name: value(name) for name in RESPONSE_MEASURES} == RESPONSE_MEASURES


def test_responses_plain_and_streamed(gw: Records, sdk: Any) -> None:
    key_id, client = sdk()
    answer = client.responses.create(model="gpt-4.1", input="Say hello")
    assert answer.output_text == "Hello there."
    assert answer.usage is not None and answer.usage.input_tokens == 1200
    events = list(client.responses.create(model="gpt-4.1", input="Say hello", stream=True))
    assert [e.type for e in events][-1] == "response.completed"
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta") \
        == "Hello there."
    made = gw.made_for(key_id, 2)
    for record in made:
        assert_response_usage(record)
        assert (record.status_code, record.endpoint, record.model_category) == (
            200, "/v1/responses", "chat")
        assert record.upstream_model == "gpt-4.1-2025-04-14"
        assert record.cost_nano == RESPONSE_COST
    assert made[1].ttft_ms is not None
    for stored in gw.stored(key_id, 2):
        assert_response_usage(stored)
        assert Decimal(stored["cost"]) * NANO == RESPONSE_COST


def test_a_responses_stream_whose_client_leaves_is_metered_with_the_upstreams_usage(
        gw: Records) -> None:
    from tests.gateway.test_stream_settling import leave_after

    key_id, key = new_key(gw.db_url)
    body = {"model": "gpt-4.1", "input": "hi", "stream": True, "fake": {"usage_delay_s": 0.5}}
    received = leave_after(gw.url, key, body, b'"delta":"Hello"', path="/v1/responses")
    assert b"response.completed" not in received
    (record,) = gw.made_for(key_id)
    assert_response_usage(record)
    assert record.status_code == 499
    assert gw.app.state.gateway.client.connector._acquired == set()
    # ... and one whose client stays to the end is 200, though it left as the end arrived.
    key_id, key = new_key(gw.db_url)
    leave_after(gw.url, key, body | {"fake": {}}, b"response.completed", path="/v1/responses")
    (record,) = gw.made_for(key_id)
    assert (record.status_code, record.estimated) == (200, False)


def test_a_responses_stream_without_its_end_is_an_error(gw: Records) -> None:
    key_id, key = new_key(gw.db_url)
    with httpx.stream("POST", f"{gw.url}/v1/responses", timeout=10,
                      json={"model": "gpt-4.1", "input": "hi", "stream": True,
                            "fake": {"no_end": True}},
                      headers={"Authorization": f"Bearer {key}"}) as response:
        received = b"".join(response.iter_raw())
    assert b'"code":"upstream_incomplete"' in received.replace(b" ", b"")
    (record,) = gw.made_for(key_id)
    assert (record.status_code, record.estimated) == (502, True)
    assert record.output_tokens == math.ceil(len("Hello there.") / 4)
    assert record.upstream_model == "gpt-4.1-2025-04-14"


def test_transcriptions_and_translations_with_a_file(gw: Records, sdk: Any,
                                                     upstream: tuple[str, Seen]) -> None:
    key_id, client = sdk()
    audio = bytes(range(256)) * 200  # 51 200 bytes: 3.2 s at the upstream's rate
    seconds = math.ceil(len(audio) / AUDIO_BYTES_PER_SECOND)
    text = client.audio.transcriptions.create(model="transcribe", file=("a.wav", audio),
                                              language="en")
    assert text.text == "Hello world"
    seen = upstream[1]
    assert seen.form_fields["model"] == "gpt-4o-transcribe"  # renamed in the form
    assert seen.form_fields["language"] == "en" and seen.file_bytes == len(audio)
    client.audio.transcriptions.create(model="whisper", file=("a.wav", audio))
    with pytest.warns(DeprecationWarning):  # the SDK still sends it, with a warning
        client.audio.translations.create(model="whisper", file=("a.wav", io.BytesIO(audio)))
    events = list(client.audio.transcriptions.create(model="transcribe", stream=True,
                                                     file=("a.wav", audio)))
    assert events[-1].type == "transcript.text.done"
    made = gw.made_for(key_id, 4)
    tokens, whisper, translation, streamed = made
    audio_tokens = math.ceil(len(audio) / AUDIO_BYTES_PER_SECOND * 10)
    for record in (tokens, streamed):
        assert (record.input_tokens, record.output_tokens, record.units, record.estimated) \
            == (14 + audio_tokens, 45, 0, False)
        assert record.cost_nano == cost(14 + audio_tokens, 0, 45, price_in="6.00",
                                        price_out="10.00")
    for record in (whisper, translation):
        assert (record.input_tokens, record.units, record.unit, record.estimated) == (
            0, seconds, "second", False)
        assert_unit_cost(gw, record, cost(units=seconds, per_unit="0.0001"))
    assert [r.endpoint for r in made] == ["/v1/audio/transcriptions"] * 2 + [
        "/v1/audio/translations", "/v1/audio/transcriptions"]
    assert {r.model_category for r in made} == {"audio"}
    assert all(r["status_code"] == 200 for r in gw.stored(key_id, 4))


def test_speech_is_streamed_through_and_billed_by_characters(gw: Records, sdk: Any) -> None:
    key_id, client = sdk()
    with client.audio.speech.with_streaming_response.create(
            model="tts", voice="alloy", input="Hello, world!") as answer:
        pieces = list(answer.iter_bytes())
        assert answer.headers["content-type"] == "audio/mpeg"
    assert b"".join(pieces) == SPEECH_CHUNK * SPEECH_CHUNKS
    (record,) = gw.made_for(key_id)
    assert (record.units, record.unit, record.input_tokens, record.estimated) == (
        len("Hello, world!"), "character", 0, False)
    assert_unit_cost(gw, record, cost(units=13, per_unit="0.000015"))
    assert (record.model_category, record.status_code) == ("audio", 200)


def test_images_by_tokens_where_given_else_by_the_image(gw: Records, sdk: Any) -> None:
    key_id, client = sdk()
    client.images.generate(model="image-gpt", prompt="a cat")
    client.images.generate(model="dalle", prompt="a cat", n=2)
    by_tokens, by_image = gw.made_for(key_id, 2)
    assert (by_tokens.input_tokens, by_tokens.output_tokens, by_tokens.units) == (50, 4160, 0)
    assert by_tokens.cost_nano == cost(50, 0, 4160, price_in="5.00", price_out="40.00")
    assert (by_image.input_tokens, by_image.units, by_image.unit) == (0, 2, "image")
    assert_unit_cost(gw, by_image, cost(units=2, per_unit="0.04"))
    assert {r.model_category for r in (by_tokens, by_image)} == {"image"}


def test_moderations_and_chat_keep_the_upstreams_model(gw: Records, sdk: Any) -> None:
    key_id, client = sdk()
    result = client.moderations.create(model="moderation", input="a friendly message")
    assert result.results[0].flagged is False
    client.chat.completions.create(model="chat-4o", messages=[{"role": "user",
                                                               "content": "hi"}])
    moderation, chat = gw.made_for(key_id, 2)
    assert moderation.upstream_model == "omni-moderation-2024-09-26"
    assert (moderation.endpoint, moderation.estimated) == ("/v1/moderations", True)
    assert (chat.upstream_model, chat.model, chat.input_tokens) == (
        "gpt-4o-2024-08-06", "chat-4o", 9)


def test_rerank_by_tokens_and_by_search_units(gw: Records) -> None:
    key_id, key = new_key(gw.db_url)
    for model in ("rerank-bge", "rerank-cohere"):
        response = httpx.post(f"{gw.url}/v1/rerank", timeout=10,
                              headers={"Authorization": f"Bearer {key}"},
                              json={"model": model, "query": "q", "documents": ["a", "b"]})
        assert response.status_code == 200 and len(response.json()["results"]) == 2
    tokens, searches = gw.made_for(key_id, 2)
    assert (tokens.input_tokens, tokens.units, tokens.upstream_model) == (
        321, 0, "bge-reranker-v2")
    assert tokens.cost_nano == cost(321, price_in="0.02")
    assert (searches.input_tokens, searches.units, searches.unit) == (0, 2, "search_unit")
    assert_unit_cost(gw, searches, cost(units=2, per_unit="0.002"))
    assert {(r.call_type, r.model_category) for r in (tokens, searches)} == {
        ("service", "rerank")}


def test_custom_service_routes(gw: Records, upstream: tuple[str, Seen]) -> None:
    key_id, key = new_key(gw.db_url)
    auth = {"Authorization": f"Bearer {key}"}
    scan = httpx.post(f"{gw.url}/v1/ocr/scan?lang=en", content=b"\x89PNG-bytes", timeout=10,
                      headers=auth | {"content-type": "image/png"})
    assert scan.status_code == 200 and scan.json()["usage"]["pages"] == OCR_PAGES
    assert upstream[1].bodies["/v1/ocr/scan"] == b"\x89PNG-bytes"
    assert upstream[1].query == "lang=en"
    flat = httpx.post(f"{gw.url}/v1/ocr/count", json={"any": "thing"}, timeout=10,
                      headers=auth)
    assert flat.status_code == 200
    scanned, counted = gw.made_for(key_id, 2)
    assert (scanned.model, scanned.endpoint, scanned.call_type) == (
        "ocr", "/v1/ocr/scan", "service")
    assert (scanned.units, scanned.unit, scanned.estimated) == (OCR_PAGES, "page", False)
    assert_unit_cost(gw, scanned, cost(units=OCR_PAGES, per_unit="0.01"))
    assert (counted.units, counted.unit) == (1, "request")
    assert_unit_cost(gw, counted, cost(units=1, per_unit="0.005"))
    # The key's limits hold for a service path as for a model.
    limited_id, limited = new_key(gw.db_url, allowed_models=["gpt-4.1"])
    refused = httpx.post(f"{gw.url}/v1/ocr/scan", content=b"x", timeout=10,
                         headers={"Authorization": f"Bearer {limited}"})
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "model_not_allowed"


def test_a_units_pointer_that_finds_nothing_is_zero_units_estimated(gw: Records) -> None:
    key_id, key = new_key(gw.db_url)
    response = httpx.post(f"{gw.url}/v1/ocr/missing", json={}, timeout=10,
                          headers={"Authorization": f"Bearer {key}"})
    assert response.status_code == 200  # the answer has usage.pages, the route reads sheets
    (record,) = gw.made_for(key_id)
    assert (record.units, record.unit, record.estimated) == (0, "page", True)


BAD_INPUT = [
    ("/v1/audio/transcriptions", {"json": {"model": "transcribe"}}, "Content-Type", None),
    ("/v1/audio/transcriptions", {"files": {"file": ("a.wav", b"x")}}, "model", "model"),
    ("/v1/audio/transcriptions", {"data": {"model": "transcribe"},
                                  "files": {"other": ("", b"")}}, "file", "file"),
    ("/v1/audio/translations", {"data": {"model": "whisper", "prompt": "p"},
                                "files": {"prompt2": (None, b"x")}}, "file", "file"),
    ("/v1/audio/speech", {"json": {"input": "hi", "voice": "alloy"}}, "model", "model"),
    ("/v1/responses", {"content": b"not json"}, "JSON", None),
    ("/v1/images/generations", {"json": {"prompt": "cat"}}, "model", "model"),
    # Two models: upstreams differ on which counts, so neither does.
    ("/v1/audio/transcriptions", {"data": {"model": ["whisper", "transcribe"]},
                                  "files": {"file": ("a.wav", b"x")}}, "more than once", "model"),
    ("/v1/audio/transcriptions", {"content": b"--x--", "headers": {
        "Content-Type": "multipart/form-data; boundary=" + "b" * 300}}, "boundary", None),
]


@pytest.mark.parametrize(("path", "request_args", "named", "param"), BAD_INPUT)
def test_bad_input_is_a_400_naming_the_field(gw: Records, path: str,
                                             request_args: dict[str, Any], named: str,
                                             param: str | None) -> None:
    _, key = new_key(gw.db_url)
    extra = request_args.pop("headers", {})
    response = httpx.post(f"{gw.url}{path}", timeout=10,
                          headers={"Authorization": f"Bearer {key}", **extra}, **request_args)
    assert response.status_code == 400
    error = response.json()["error"]
    assert named in error["message"] and error["param"] == param
    assert error["type"] == "invalid_request_error"


def test_an_upload_of_several_megabytes_is_streamed_not_held(
        gw: Records, upstream: tuple[str, Seen]) -> None:
    """The form is sent piece by piece; the gateway's (and this whole process's) memory
    peak stays far below the upload's size."""
    import tracemalloc

    key_id, key = new_key(gw.db_url)
    boundary = "tallygate-test-boundary"
    size = 16 * 1024 * 1024
    piece = b"\x7f" * (64 * 1024)
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\n'
            f'whisper\r\n--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="long.wav"\r\nContent-Type: audio/wav\r\n\r\n').encode()
    tail = f"\r\n--{boundary}--\r\n".encode()

    def body() -> Iterator[bytes]:
        yield head
        for _ in range(size // len(piece)):
            yield piece
        yield tail

    tracemalloc.start()
    try:
        started = time.monotonic()
        response = httpx.post(f"{gw.url}/v1/audio/transcriptions", content=body(),
                              timeout=60, headers={
                                  "Authorization": f"Bearer {key}",
                                  "Content-Type": f"multipart/form-data; boundary={boundary}",
                                  "Content-Length": str(len(head) + size + len(tail))})
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert response.status_code == 200, response.text
    assert upstream[1].file_bytes == size
    assert upstream[1].form_fields["model"] == "whisper-1"
    assert upstream[1].content_length == str(len(head) + size + len(tail) + 2)  # "-1" added
    assert peak < size / 4, (peak, time.monotonic() - started)
    (record,) = gw.made_for(key_id)
    assert record.units == math.ceil(size / AUDIO_BYTES_PER_SECOND)


def test_a_client_that_leaves_mid_upload_is_recorded(gw: Records) -> None:
    import socket

    key_id, key = new_key(gw.db_url)
    boundary = "b0undary"
    head = (f'--{boundary}\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"'
            f"\r\n\r\n").encode() + b"\x01" * 100_000
    with socket.create_connection(("127.0.0.1", int(gw.url.rsplit(":", 1)[1]))) as sock:
        sock.sendall(b"POST /v1/audio/transcriptions HTTP/1.1\r\nhost: x\r\n"
                     b"authorization: Bearer " + key.encode() + b"\r\n"
                     b"content-type: multipart/form-data; boundary=" + boundary.encode()
                     + b"\r\ncontent-length: 10000000\r\n\r\n" + head)
        time.sleep(0.3)  # the gateway has begun passing the upload on
    (record,) = gw.made_for(key_id)
    assert (record.status_code, record.model, record.endpoint) == (
        499, "whisper", "/v1/audio/transcriptions")
    wait_until(lambda: gw.app.state.gateway.client.connector._acquired == set(), timeout=5)
