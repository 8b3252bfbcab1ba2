"""How one call to each demo model looks: token sizes, reasoning, caching, units and latency.

Token sizes come from a request of the Azure trace (``conv`` for chat and the services,
``code`` for code completion); the numbers here bend them into each model's character
(a reasoning model thinks before it answers, an embedding has no output, Anthropic's model
reads and writes a prompt cache, ...). Calls billed by something else carry units: pages of
the OCR service, seconds of audio for Whisper; they report no tokens, as the fake upstream
(and the gateway's reading of it) gives none.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from tallygate.demo.routes import (
    BGE_M3,
    CLAUDE,
    OCR_SERVICE,
    QWEN_CODER,
    R1_32B,
    R1_LLAMA_70B,
    RERANK_SERVICE,
    WHISPER,
)

CACHE_BLOCK = 64  # prefix caches hold whole blocks of tokens
ANTHROPIC_CACHE_MIN = 1024  # Anthropic caches no shorter prefix
OCR_PAGES = (1, 1, 1, 1, 2, 2, 3, 4, 6, 9, 14)  # most scans are one page


@dataclass(frozen=True, slots=True)
class ModelShape:
    trace: str  # which service of the trace gives its arrivals and token sizes
    stream_share: float = 0.0  # share of calls streamed (they record time to first token)
    cache_share: float = 0.0  # share of calls that hit a cached prompt prefix
    reasoning_share: float = 0.0  # share of calls that report reasoning tokens
    reasoning_per_output: tuple[float, float] = (0.0, 0.0)  # reasoning / answer tokens
    has_output: bool = True
    max_input: int | None = None  # the model's context limit
    estimated_share: float = 0.0  # no usage reported (client gone, service without usage)
    base_ms: float = 50.0
    prefill_ms_per_1k: float = 20.0
    decode_ms_per_token: float = 0.0
    cache_write_share: float = 0.0  # share of calls that write a prompt cache (Anthropic)
    system_tokens: int = 0  # a long system prompt and tool definitions before every chat
    unit: str | None = None  # billed by "page" or "second" instead of tokens
    ms_per_unit: float = 0.0


MODEL_SHAPES: Mapping[str, ModelShape] = MappingProxyType({
    R1_32B: ModelShape("conv", stream_share=0.8, cache_share=0.35, reasoning_share=0.92,
                       reasoning_per_output=(0.8, 3.5), max_input=32_768, estimated_share=0.005,
                       base_ms=180, prefill_ms_per_1k=60, decode_ms_per_token=22),
    R1_LLAMA_70B: ModelShape("conv", stream_share=0.6, cache_share=0.3, reasoning_share=0.88,
                             reasoning_per_output=(0.6, 2.5), max_input=32_768,
                             estimated_share=0.004, base_ms=250, prefill_ms_per_1k=110,
                             decode_ms_per_token=38),
    QWEN_CODER: ModelShape("code", stream_share=0.3, cache_share=0.15, max_input=32_768,
                           base_ms=40, prefill_ms_per_1k=15, decode_ms_per_token=9),
    BGE_M3: ModelShape("conv", has_output=False, max_input=8192, base_ms=15,
                       prefill_ms_per_1k=8),
    RERANK_SERVICE: ModelShape("conv", has_output=False, max_input=8192, base_ms=30,
                               prefill_ms_per_1k=20),
    CLAUDE: ModelShape("conv", stream_share=0.75, cache_share=0.5, cache_write_share=0.15,
                       system_tokens=2600, max_input=200_000, base_ms=420, prefill_ms_per_1k=45,
                       decode_ms_per_token=14),
    WHISPER: ModelShape("conv", has_output=False, unit="second", base_ms=250,
                        ms_per_unit=60),
    OCR_SERVICE: ModelShape("conv", estimated_share=0.02, unit="page", base_ms=600,
                            ms_per_unit=900),
})


@dataclass(frozen=True, slots=True)
class CallShape:
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    reasoning_tokens: int
    latency_ms: int
    ttft_ms: int | None
    estimated: bool
    cache_write_tokens: int = 0
    units: int = 0


def billed_in_units(rng: random.Random, shape: ModelShape) -> CallShape:
    """A call of a service billed by pages or seconds: units, no tokens. One that reported
    no count is 0 units, estimated, as the gateway records it."""
    if shape.unit == "page":
        units = rng.choice(OCR_PAGES)
    else:  # seconds of audio: voice notes and calls, a median of 45 s
        units = min(1800, max(1, round(45 * math.exp(0.9 * rng.gauss()))))
    estimated = shape.estimated_share > 0 and rng.random() < shape.estimated_share
    latency_ms = (shape.base_ms + shape.ms_per_unit * units) * math.exp(0.25 * rng.gauss())
    return CallShape(0, 0, 0, 0, max(1, round(latency_ms)), None, estimated,
                     units=0 if estimated else units)


def successful_call(rng: random.Random, shape: ModelShape, trace_input: int,
                    trace_output: int) -> CallShape:
    """A call that succeeded, sized after one request of the trace."""
    if shape.unit is not None:
        return billed_in_units(rng, shape)
    input_tokens = trace_input + shape.system_tokens
    if shape.max_input is not None:
        input_tokens = min(input_tokens, shape.max_input)
    answer = max(trace_output, 1) if shape.has_output else 0
    reasoning = 0
    if shape.reasoning_share and rng.random() < shape.reasoning_share:
        reasoning = int(answer * rng.uniform(*shape.reasoning_per_output))
    cached = written = 0
    if shape.cache_share or shape.cache_write_share:
        draw = rng.random()
        if draw < shape.cache_share:
            cached = int(input_tokens * rng.uniform(0.3, 0.95)) // CACHE_BLOCK * CACHE_BLOCK
        elif draw < shape.cache_share + shape.cache_write_share:
            written = int(input_tokens * rng.uniform(0.3, 0.95))
            written = written if written >= ANTHROPIC_CACHE_MIN else 0
    output_tokens = answer + reasoning
    streamed = shape.stream_share > 0 and rng.random() < shape.stream_share
    estimated = shape.estimated_share > 0 and rng.random() < shape.estimated_share
    if estimated:
        # Nothing reported: the gateway counted what it saw, and knows of no reasoning or cache.
        output_tokens = int(output_tokens * rng.uniform(0.1, 0.9))
        reasoning = cached = written = 0
    prefill_ms = shape.base_ms + shape.prefill_ms_per_1k * (
        input_tokens - cached * 0.9 + written * 0.25) / 1000
    # exp(gauss) rather than lognormvariate: the same distribution, at half the cost.
    first_token_ms = prefill_ms * math.exp(0.3 * rng.gauss())
    latency_ms = first_token_ms + (
        shape.decode_ms_per_token * output_tokens * math.exp(0.15 * rng.gauss()))
    return CallShape(input_tokens, output_tokens, cached, reasoning, max(1, round(latency_ms)),
                     max(1, round(first_token_ms)) if streamed else None, estimated,
                     cache_write_tokens=written)


def failed_call_latency_ms(rng: random.Random, status_code: int) -> int:
    """How long a failure takes: a refusal at the gateway is quick, a timeout is not."""
    if status_code == 429:
        return rng.randint(1, 4)
    if status_code < 500:
        return rng.randint(5, 60)
    if status_code == 504:
        return rng.randint(60_000, 60_400)
    return round(rng.uniform(20, 1500))
