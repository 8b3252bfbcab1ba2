"""Model categories, and how a call's category is derived when nobody says."""

from __future__ import annotations

MODEL_CATEGORIES = ("chat", "completion", "embedding", "rerank", "image", "audio", "other")

CALL_TYPES = ("model", "service", "internal")

# What a call may be billed by besides tokens (a record's ``unit``).
UNITS = ("image", "second", "character", "search_unit", "page", "request")

_BY_ENDPOINT = {
    "/v1/chat/completions": "chat",
    "/v1/completions": "completion",
    "/v1/embeddings": "embedding",
    "/v1/messages": "chat",
    "/v1/responses": "chat",
    "/v1/rerank": "rerank",
    "/v1/images/generations": "image",
    "/v1/audio/transcriptions": "audio",
    "/v1/audio/translations": "audio",
    "/v1/audio/speech": "audio",
    "/v1/moderations": "other",
}


def category_for_endpoint(endpoint: str | None) -> str:
    """The category an endpoint implies; ``other`` for anything unknown."""
    return _BY_ENDPOINT.get(endpoint or "", "other")
