"""The demo's models and services, with their prices.

:data:`DEMO_ROUTES` seeds the price table and can become the gateway's routes (``model``,
``kind``, ``category`` and the price fields match :class:`tallygate.config.Route`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from types import MappingProxyType
from typing import Literal

from tallygate.config import Route, RoutePrice
from tallygate.ledger.pricing import Price, PriceTable

R1_32B = "cltech/deepseek-r1-32b"
R1_LLAMA_70B = "deepseek-r1-distill-llama-70b"
QWEN_CODER = "qwen2.5-coder-7b"
BGE_M3 = "bge-m3"
RERANK_SERVICE = "cltech/rerank-service"
OCR_SERVICE = "cltech/ocr-service"


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

    def price(self, effective_from_us: int = 0) -> Price:
        return Price(
            model=self.model, effective_from_us=effective_from_us,
            input_per_million=self.input_per_million,
            output_per_million=self.output_per_million,
            cached_input_per_million=self.cached_input_per_million,
            per_call=self.per_call, currency=self.currency,
        )


DEMO_ROUTES: tuple[DemoRoute, ...] = (
    DemoRoute(R1_32B, "chat", "model", "/v1/chat/completions",
              input_per_million=Decimal("0.50"), cached_input_per_million=Decimal("0.10"),
              output_per_million=Decimal("2.00")),
    DemoRoute(R1_LLAMA_70B, "chat", "model", "/v1/chat/completions",
              input_per_million=Decimal("0.75"), cached_input_per_million=Decimal("0.15"),
              output_per_million=Decimal("0.99")),
    DemoRoute(QWEN_CODER, "completion", "model", "/v1/completions",
              input_per_million=Decimal("0.05"), cached_input_per_million=Decimal("0.01"),
              output_per_million=Decimal("0.10")),
    DemoRoute(BGE_M3, "embedding", "model", "/v1/embeddings",
              input_per_million=Decimal("0.01")),
    # The platform's own services report their calls; they bill per call.
    DemoRoute(RERANK_SERVICE, "rerank", "service", "/v1/rerank",
              input_per_million=Decimal("0.02"), per_call=Decimal("0.0002")),
    DemoRoute(OCR_SERVICE, "other", "service", "/v1/ocr", per_call=Decimal("0.0015")),
)

ROUTES_BY_MODEL: Mapping[str, DemoRoute] = MappingProxyType(
    {route.model: route for route in DEMO_ROUTES})


def demo_prices() -> list[Price]:
    """Every demo route's price, in force since the epoch."""
    return [route.price() for route in DEMO_ROUTES]


def demo_price_table() -> PriceTable:
    return PriceTable(demo_prices())


def gateway_routes(base_url: str) -> list[Route]:
    """The demo routes as gateway routes, all served by the fake upstream at ``base_url``
    (services answer chat completions there, like many self-hosted services do)."""
    return [
        Route(model=r.model, base_url=base_url, kind=r.kind, category=r.category,
              price=RoutePrice(input_per_million=r.input_per_million,
                               cached_input_per_million=r.cached_input_per_million,
                               output_per_million=r.output_per_million, per_call=r.per_call,
                               currency=r.currency))
        for r in DEMO_ROUTES
    ]
