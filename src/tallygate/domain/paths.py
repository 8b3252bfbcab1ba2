"""The gateway's own paths: the ones a custom service route may not take.

Kept here, below the configuration that checks routes against them; gateway/endpoints.py
asserts that every endpoint it serves is listed.
"""

from __future__ import annotations

# The OpenAI-compatible endpoints (gateway/endpoints.py ENDPOINTS), and those served by other
# parts of the gateway (the model list, Anthropic's Messages API, OTLP's traces).
OPENAI_PATHS = frozenset({
    "/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/responses",
    "/v1/rerank", "/v1/moderations", "/v1/images/generations", "/v1/audio/speech",
    "/v1/audio/transcriptions", "/v1/audio/translations",
})
RESERVED_PATHS = OPENAI_PATHS | {"/v1/models", "/v1/messages", "/v1/messages/count_tokens",
                                 "/v1/traces"}
