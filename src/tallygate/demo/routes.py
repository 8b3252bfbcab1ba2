"""The demo's models and services, with their prices.

:data:`DEMO_ROUTES` seeds the price table and becomes the gateway's routes (``model``,
``kind``, ``category``, ``protocol``, ``path``, ``unit``, ``units_from`` and the price fields
match :class:`tallygate.config.Route`), every one served by the built-in fake upstream: the
self-hosted models under their Hugging Face names (the answers' ``model``), an Anthropic model
with prompt caching, Whisper billed by the second, and the platform's rerank and OCR services.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Literal

from tallygate.config import Route, RoutePrice
from tallygate.domain.pricing import Price, PriceTable

R1_32B = "cltech/deepseek-r1-32b"
R1_LLAMA_70B = "deepseek-r1-distill-llama-70b"
QWEN_CODER = "qwen2.5-coder-7b"
BGE_M3 = "bge-m3"
RERANK_SERVICE = "cltech/rerank-service"
OCR_SERVICE = "cltech/ocr-service"
CLAUDE = "claude-sonnet-4-5"
WHISPER = "whisper-1"


@dataclass(frozen=True, slots=True)
class DemoRoute:
    """One public model name; prices are per million tokens, plus per call for services."""

    model: str
    category: str
    kind: Literal["model", "service"]
    endpoint: str
    input_per_million: Decimal = Decimal(0)
    cached_input_per_million: Decimal | None = None
    output_per_million: Decimal = Decimal(0)
    per_call: Decimal = Decimal(0)
    currency: str = "USD"
    cache_write_per_million: Decimal | None = None
    per_unit: Decimal = Decimal(0)
    protocol: Literal["openai", "anthropic"] = "openai"
    path: str | None = None  # a custom service endpoint
    unit: str | None = None  # what its calls are billed by besides tokens
    units_from: str | None = None
    upstream_model: str | None = None  # the name the upstream serves it under

    def price(self, effective_from_us: int = 0) -> Price:
        return Price(
            model=self.model, effective_from_us=effective_from_us,
            input_per_million=self.input_per_million,
            output_per_million=self.output_per_million,
            cached_input_per_million=self.cached_input_per_million,
            per_call=self.per_call, currency=self.currency,
            cache_write_per_million=self.cache_write_per_million, per_unit=self.per_unit,
        )


DEMO_ROUTES: tuple[DemoRoute, ...] = (
    DemoRoute(R1_32B, "chat", "model", "/v1/chat/completions",
              input_per_million=Decimal("0.50"), cached_input_per_million=Decimal("0.10"),
              output_per_million=Decimal("2.00"),
              upstream_model="deepseek-ai/DeepSeek-R1-Distill-Qwen-32B"),
    DemoRoute(R1_LLAMA_70B, "chat", "model", "/v1/chat/completions",
              input_per_million=Decimal("0.75"), cached_input_per_million=Decimal("0.15"),
              output_per_million=Decimal("0.99"),
              upstream_model="deepseek-ai/DeepSeek-R1-Distill-Llama-70B"),
    DemoRoute(QWEN_CODER, "completion", "model", "/v1/completions",
              input_per_million=Decimal("0.05"), cached_input_per_million=Decimal("0.01"),
              output_per_million=Decimal("0.10"),
              upstream_model="Qwen/Qwen2.5-Coder-7B-Instruct"),
    DemoRoute(BGE_M3, "embedding", "model", "/v1/embeddings",
              input_per_million=Decimal("0.01"), upstream_model="BAAI/bge-m3"),
    # Anthropic's Messages API: cache reads at a tenth of the input price, writes at 1.25×.
    DemoRoute(CLAUDE, "chat", "model", "/v1/messages", protocol="anthropic",
              input_per_million=Decimal("3.00"), cached_input_per_million=Decimal("0.30"),
              cache_write_per_million=Decimal("3.75"), output_per_million=Decimal("15.00")),
    # Billed by the second of audio ($0.006 a minute).
    DemoRoute(WHISPER, "audio", "model", "/v1/audio/transcriptions", unit="second",
              per_unit=Decimal("0.0001")),
    # The platform's own services, through the gateway like the models.
    DemoRoute(RERANK_SERVICE, "rerank", "service", "/v1/rerank",
              input_per_million=Decimal("0.02"), per_call=Decimal("0.0002"),
              upstream_model="BAAI/bge-reranker-v2-m3"),
    DemoRoute(OCR_SERVICE, "other", "service", "/v1/ocr", path="/v1/ocr", unit="page",
              units_from="/usage/pages", per_unit=Decimal("0.0015")),
)

ROUTES_BY_MODEL: Mapping[str, DemoRoute] = MappingProxyType(
    {route.model: route for route in DEMO_ROUTES})


def demo_prices() -> list[Price]:
    """Every demo route's price, in force since the epoch."""
    return [route.price() for route in DEMO_ROUTES]


def demo_price_table() -> PriceTable:
    return PriceTable(demo_prices())


def gateway_routes(base_url: str) -> list[Route]:
    """The demo routes as gateway routes, all served by the fake upstream at ``base_url``."""
    return [
        Route.model_validate({
            "model": r.model, "base_url": base_url, "kind": r.kind, "category": r.category,
            "protocol": r.protocol, "upstream_model": r.upstream_model,
            # unit and units_from belong to custom service routes; the gateway reads the
            # built-in endpoints' units (audio seconds) from their answers.
            **({"path": r.path, "unit": r.unit, "units_from": r.units_from} if r.path else {}),
            "price": RoutePrice(input_per_million=r.input_per_million,
                                cached_input_per_million=r.cached_input_per_million,
                                output_per_million=r.output_per_million, per_call=r.per_call,
                                currency=r.currency,
                                cache_write_per_million=r.cache_write_per_million,
                                per_unit=r.per_unit)})
        for r in DEMO_ROUTES
    ]
