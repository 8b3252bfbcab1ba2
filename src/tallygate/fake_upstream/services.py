"""Rerank, moderation, image generation and a custom OCR service.

Rerank answers in vLLM's / Jina's shape (``usage.total_tokens``, four characters a token of
the query and each document), or in Cohere's (``meta.billed_units.search_units``: one per
query of up to 100 document chunks of 500 tokens) when asked at ``/v2/rerank`` or with
``fake.shape = "cohere"``. The gpt-image models report usage tokens as OpenAI bills them (a
fixed count per image for its size and quality); DALL·E reports none.
"""

from __future__ import annotations

import base64
import math
import time
import uuid
from typing import Any

from tallygate.fake_upstream.asgi import Send, send_json
from tallygate.fake_upstream.audio import upload_headers
from tallygate.fake_upstream.call import Call, estimate_tokens, served_model, text

SEARCH_UNIT_DOCUMENTS = 100
SEARCH_UNIT_CHUNK_TOKENS = 500
# A 1×1 transparent PNG: every generated image.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==")
# gpt-image-1 output tokens per image, by quality and size (OpenAI's image pricing table).
IMAGE_TOKENS = {
    "low": {"1024x1024": 272, "1024x1536": 408, "1536x1024": 400},
    "medium": {"1024x1024": 1056, "1024x1536": 1584, "1536x1024": 1568},
    "high": {"1024x1024": 4160, "1024x1536": 6240, "1536x1024": 6208},
}
MODERATION_CATEGORIES = (
    "harassment", "harassment/threatening", "hate", "hate/threatening", "illicit",
    "illicit/violent", "self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
    "sexual/minors", "violence", "violence/graphic")
_IMAGE_CATEGORIES = {"self-harm", "self-harm/instructions", "self-harm/intent", "sexual",
                     "violence", "violence/graphic"}
OCR_PAGE_COUNTS = (1, 1, 1, 1, 2, 2, 3, 4, 6, 9, 14)  # most scans are one page


def _document_text(document: Any) -> str:
    if isinstance(document, str):
        return document
    if isinstance(document, dict):
        return str(document.get("text", ""))
    return ""


async def rerank(call: Call, send: Send) -> None:
    query = str(call.request.get("query", ""))
    given = call.request.get("documents")
    documents = [_document_text(d) for d in given] if isinstance(given, list) else []
    scored = sorted(((call.draw(f"score:{i}:{doc}"), i) for i, doc in enumerate(documents)),
                    reverse=True)
    top_n = call.request.get("top_n")
    if isinstance(top_n, int) and top_n > 0:
        scored = scored[:top_n]
    pair_tokens = [estimate_tokens(query) + estimate_tokens(doc) for doc in documents]
    if call.cohere or call.control.get("shape") == "cohere":
        chunks = sum(max(1, math.ceil(n / SEARCH_UNIT_CHUNK_TOKENS)) for n in pair_tokens)
        answer: dict[str, Any] = {
            "id": str(uuid.uuid4()),
            "results": [{"index": i, "relevance_score": round(score, 6)}
                        for score, i in scored],
            "meta": {"api_version": {"version": "2"}}}
        if call.report_usage:
            answer["meta"]["billed_units"] = {
                "search_units": call.count("search_units", max(1, math.ceil(
                    chunks / SEARCH_UNIT_DOCUMENTS)))}
        await send_json(send, 200, answer)
        return
    with_documents = call.request.get("return_documents") is not False
    answer = {"id": call.new_id("rerank-", 32), "model": served_model(call.model),
              "results": [{"index": i, "relevance_score": round(score, 6),
                           **({"document": {"text": documents[i]}} if with_documents else {})}
                          for score, i in scored]}
    if call.report_usage:
        answer["usage"] = {"total_tokens": call.count("input_tokens", sum(pair_tokens))}
    await send_json(send, 200, answer)


async def moderation(call: Call, send: Send) -> None:
    given = call.request.get("input")
    inputs: list[Any]
    if isinstance(given, list) and given and all(isinstance(g, dict) for g in given):
        inputs = [given]  # one multimodal input: text and image parts judged together
    elif isinstance(given, list):
        inputs = given
    else:
        inputs = [given]
    results = []
    for index, item in enumerate(inputs):
        has_image = isinstance(item, list) and any(
            isinstance(p, dict) and p.get("type") == "image_url" for p in item)
        scores = {name: round(call.draw(f"{index}:{name}") ** 40 * 0.9, 6)
                  for name in MODERATION_CATEGORIES}
        categories = {name: score > 0.5 for name, score in scores.items()}
        results.append({
            "flagged": any(categories.values()), "categories": categories,
            "category_scores": scores,
            "category_applied_input_types": {
                name: ["text", "image"] if has_image and name in _IMAGE_CATEGORIES
                else ["text"] for name in MODERATION_CATEGORIES}})
    await send_json(send, 200, {"id": call.new_id("modr-", 32),
                                "model": served_model(str(call.request.get(
                                    "model") or "omni-moderation-latest")),
                                "results": results})


async def image(call: Call, send: Send, base_url: str) -> None:
    request = call.request
    given = request.get("n")
    count = max(1, min(10, given)) if isinstance(given, int) else 1
    prompt = str(request.get("prompt", ""))
    model = call.model
    size = str(request.get("size") or "auto")
    if model.startswith("gpt-image"):
        quality = str(request.get("quality") or "auto")
        quality = "medium" if quality not in IMAGE_TOKENS else quality
        size = "1024x1024" if size not in IMAGE_TOKENS[quality] else size
        per_image = IMAGE_TOKENS[quality][size]
        encoded = base64.b64encode(PNG).decode()
        answer: dict[str, Any] = {
            "created": int(time.time()), "background": "opaque", "output_format": "png",
            "quality": quality, "size": size,
            "data": [{"b64_json": encoded} for _ in range(count)]}
        if call.report_usage:
            text_tokens = estimate_tokens(prompt)
            answer["usage"] = {
                "input_tokens": text_tokens,
                "input_tokens_details": {"text_tokens": text_tokens, "image_tokens": 0},
                "output_tokens": per_image * count,
                "output_tokens_details": {"text_tokens": 0, "image_tokens": per_image * count},
                "total_tokens": text_tokens + per_image * count}
        await send_json(send, 200, answer)
        return
    items: list[dict[str, Any]] = []
    for _ in range(count):
        item: dict[str, Any] = (
            {"b64_json": base64.b64encode(PNG).decode()}
            if request.get("response_format") == "b64_json"
            else {"url": f"{base_url}/fake-images/{call.new_id('img-', 16)}.png"})
        if model == "dall-e-3":
            item["revised_prompt"] = prompt
        items.append(item)
    await send_json(send, 200, {"created": int(time.time()), "data": items})


async def ocr(call: Call, send: Send) -> None:
    """A self-hosted OCR service: pages of Markdown, billed per page."""
    upload = call.upload
    document = call.request.get("document")
    if upload is not None and upload.pdf_pages:
        pages = upload.pdf_pages
    elif (upload is not None and upload.content_type.startswith("image/")) or (
            isinstance(document, dict) and document.get("type") == "image_url"):
        pages = 1
    else:
        pages = OCR_PAGE_COUNTS[int(call.draw("pages") * len(OCR_PAGE_COUNTS))]
    pages = max(1, call.count("pages", pages))
    _, output_tokens = call.trace_tokens("conv")
    per_page = max(1, output_tokens // pages)
    answer: dict[str, Any] = {
        "id": call.new_id("ocr-", 24), "object": "ocr.result",
        "model": served_model(call.model),
        "pages": [{"index": i, "markdown": f"# Page {i + 1}\n\n{text(per_page)}"}
                  for i in range(pages)]}
    if call.report_usage:
        answer["usage"] = {"pages": pages}
    await send_json(send, 200, answer, upload_headers(upload) if upload else ())
