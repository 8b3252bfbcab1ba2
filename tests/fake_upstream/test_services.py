"""Rerank, moderation, images and the OCR service: shapes and usage as their APIs bill."""

from __future__ import annotations

import httpx
import openai
from openai.types import ImagesResponse, ModerationCreateResponse

DOCUMENTS = ["Tallygate meters every call.", "Paris is the capital of France.",
             {"text": "A ledger of usage, exact to the token."}]


def test_rerank_in_the_vllm_and_jina_shape(fake_url: str) -> None:
    answer = httpx.post(f"{fake_url}/v1/rerank", json={
        "model": "bge-reranker-v2-m3", "query": "what meters usage?", "documents": DOCUMENTS,
        "top_n": 2}).json()
    assert answer["model"] == "bge-reranker-v2-m3" and answer["id"].startswith("rerank-")
    results = answer["results"]
    assert len(results) == 2
    assert results[0]["relevance_score"] >= results[1]["relevance_score"]
    assert {"index", "relevance_score", "document"} <= set(results[0])
    # four characters a token: the query (5) with each document (7, 8 and 10)
    assert answer["usage"] == {"total_tokens": 5 * 3 + 7 + 8 + 10}


def test_rerank_in_coheres_shape_bills_search_units(fake_url: str) -> None:
    many = [f"document number {i}" for i in range(150)]
    answer = httpx.post(f"{fake_url}/v2/rerank", json={
        "model": "rerank-v3.5", "query": "q", "documents": many}).json()
    assert "usage" not in answer
    assert answer["meta"]["billed_units"] == {"search_units": 2}  # 150 documents: two units
    assert len(answer["results"]) == 150 and "document" not in answer["results"][0]
    same = httpx.post(f"{fake_url}/v1/rerank", json={
        "model": "rerank-v3.5", "query": "q", "documents": many[:3],
        "fake": {"shape": "cohere"}}).json()
    assert same["meta"]["billed_units"] == {"search_units": 1}


def test_moderations_parse_with_the_sdk(fake_url: str, oai: openai.OpenAI) -> None:
    answer = oai.moderations.create(
        model="omni-moderation-latest", input=["hello", "a second text"])
    assert isinstance(answer, ModerationCreateResponse)
    assert answer.model == "omni-moderation-2024-09-26" and len(answer.results) == 2
    raw = httpx.post(f"{fake_url}/v1/moderations", json={"input": "x"}).json()
    ModerationCreateResponse.model_validate(raw)
    assert "harassment/threatening" in raw["results"][0]["categories"]


def test_gpt_image_reports_tokens_per_image_and_dall_e_none(
        fake_url: str, oai: openai.OpenAI) -> None:
    images = oai.images.generate(model="gpt-image-1", prompt="a ledger", n=2,
                                 size="1024x1536", quality="high")
    assert isinstance(images, ImagesResponse) and images.data and len(images.data) == 2
    assert images.data[0].b64_json and images.usage is not None
    assert images.usage.output_tokens == 2 * 6240
    assert images.usage.input_tokens == images.usage.input_tokens_details.text_tokens == 2
    assert images.usage.total_tokens == 2 + 2 * 6240
    dalle = oai.images.generate(model="dall-e-3", prompt="a ledger", n=1)
    assert dalle.usage is None and dalle.data and dalle.data[0].url
    assert dalle.data[0].revised_prompt == "a ledger"
    picture = httpx.get(dalle.data[0].url)
    assert picture.status_code == 200 and picture.content.startswith(b"\x89PNG")


def test_the_ocr_service_reports_pages(fake_url: str) -> None:
    answer = httpx.post(f"{fake_url}/v1/ocr", json={
        "model": "cltech/ocr-service",
        "document": {"type": "document_url", "document_url": "https://example.com/a.pdf"}})
    pages = answer.json()["usage"]["pages"]
    assert 1 <= pages <= 14 and len(answer.json()["pages"]) == pages
    image = httpx.post(f"{fake_url}/v1/ocr", json={
        "model": "m", "document": {"type": "image_url", "image_url": "https://x/y.png"}})
    assert image.json()["usage"] == {"pages": 1}
    pdf = b"%PDF-1.7\n" + b"".join(
        b"%d 0 obj << /Type /Page /Parent 2 0 R >> endobj\n" % n for n in range(3)) + (
        b"2 0 obj << /Type /Pages /Count 3 >> endobj\n" + b"x" * 200_000)
    uploaded = httpx.post(f"{fake_url}/v1/ocr", data={"model": "cltech/ocr-service"},
                          files={"file": ("scan.pdf", pdf, "application/pdf")})
    assert uploaded.json()["usage"] == {"pages": 3}
    assert uploaded.headers["x-fake-upload-bytes"] == str(len(pdf))
    told = httpx.post(f"{fake_url}/ocr", json={"model": "m", "fake": {"pages": 7}})
    assert told.json()["usage"] == {"pages": 7}


def test_unknown_paths_and_bad_bodies(fake_url: str) -> None:
    assert httpx.post(f"{fake_url}/v1/nowhere", json={}).status_code == 404
    bad = httpx.post(f"{fake_url}/v1/rerank", content=b"{not json",
                     headers={"content-type": "application/json"})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


def test_a_control_that_is_no_number_is_ignored(fake_url: str) -> None:
    answer = httpx.post(f"{fake_url}/v1/ocr", json={
        "model": "m", "fake": {"pages": "many"},
        "document": {"type": "image_url", "image_url": "https://x/y.png"}})
    assert answer.status_code == 200 and answer.json()["usage"] == {"pages": 1}
