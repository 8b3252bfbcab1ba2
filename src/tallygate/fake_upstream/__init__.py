"""An upstream for the demo, the tests and the benchmarks: every endpoint the gateway serves.

OpenAI's chat completions, completions, embeddings, Responses, rerank (vLLM / Jina, or Cohere
at ``/v2/rerank``), audio transcriptions, translations and speech, image generations and
moderations; Anthropic's Messages (``/v1/messages``); and a custom OCR service (``/v1/ocr``,
``{"usage": {"pages": N}}``).

Token counts are deterministic: a request is mapped (by a hash of its body) to a row of the
Azure LLM inference trace, whose input and output token counts it reports (chat, Responses,
Messages and embeddings take the conversation trace, completions the code trace;
``max_tokens`` and its kin cap the output). Audio is billed by its length, images by their
size and quality, OCR by pages. Latency, chunking and failures are set per server and can be
overridden per request by an extra body field (a form field of JSON in a multipart body),
which the gateway forwards untouched like any unknown field::

    {"model": "...", "messages": [...], "fake": {"status": 500, "latency_ms": 20,
     "chunks": 4, "chunk_delay_ms": 5, "cut_after": 2, "no_usage": true,
     "input_tokens": 10, "output_tokens": 3, "stamp": true}}

Some endpoints take more: ``cached_tokens`` and ``reasoning_tokens`` (Responses),
``cache_read_tokens``, ``cache_write_tokens``, ``cache_write_1h_tokens`` (Messages),
``seconds`` (audio), ``pages`` (OCR), ``search_units`` and ``shape = "cohere"`` (rerank).
``endless_event_bytes`` (chat and completions streams) sends, after the first content
chunk, one event of that many bytes that never ends, as a broken upstream would.
``stamp`` puts the time each streamed event left (``sent_at``, Unix seconds) into the event,
so a benchmark on the same machine can tell how long the event took to reach it.

It is a bare ASGI application (no framework), so it is never the bottleneck of a benchmark;
multipart bodies are read as they stream in, never held whole.
"""

from tallygate.fake_upstream.call import FakeSettings
from tallygate.fake_upstream.server import FakeUpstream

__all__ = ["FakeSettings", "FakeUpstream"]
