"""A real fake upstream and a real gateway, over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import httpx
import pytest

from tallygate.app import create_app
from tallygate.config import Route, RoutePrice, load_settings
from tallygate.fake_upstream import FakeSettings, FakeUpstream
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.store.database import Database
from tests.conftest import RECENT
from tests.servers import free_port, serve_app

ADMIN = "test-admin-token"
CHAT = "cltech/deepseek-r1-32b"
SERVICE = "cltech/ocr-service"
EMBED = "bge-m3"
PRICE = RoutePrice(input_per_million=Decimal("0.50"), cached_input_per_million=Decimal("0.10"),
                   output_per_million=Decimal("2.00"))


@pytest.fixture(scope="module")
def upstream() -> Iterator[tuple[str, FakeUpstream]]:
    fake = FakeUpstream(FakeSettings(chunks=4))
    with serve_app(fake) as url:
        yield url, fake


@dataclass
class GatewayUnderTest:
    url: str
    db: Database
    keys: KeyService

    def new_key(self, **fields: Any) -> tuple[str, str]:
        created = self.keys.create(KeyCreate(name=fields.pop("name", "test"), **fields), "test")
        return created.id, created.key

    def admin(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"Authorization": f"Bearer {ADMIN}"},
                            timeout=30)

    def summary(self, **params: Any) -> dict[str, Any]:
        with self.admin() as client:
            response = client.get("/api/v1/usage/summary", params={"period": RECENT, **params})
            response.raise_for_status()
            return response.json()  # type: ignore[no-any-return]

    def calls(self, **params: Any) -> list[dict[str, Any]]:
        with self.admin() as client:
            response = client.get("/api/v1/usage/calls",
                                  params={"period": RECENT, "limit": 1000, **params})
            response.raise_for_status()
            return response.json()["data"]  # type: ignore[no-any-return]


def _settings(db: Database, upstream_url: str, **overrides: Any) -> Any:
    base = f"{upstream_url}/v1"
    routes = [
        Route(model=CHAT, base_url=base, upstream_model="deepseek-r1-32b", category="chat",
              price=PRICE),
        Route(model=SERVICE, base_url=base, kind="service", category="other",
              price=RoutePrice(per_call=Decimal("0.002"))),
        Route(model=EMBED, base_url=base, category="embedding"),
        Route(model="down-model", base_url=f"http://127.0.0.1:{free_port()}/v1"),
    ]
    settings = {"flush_interval_ms": 10, "key_cache_seconds": 0} | overrides
    return load_settings(database_url=db.url, admin_token=ADMIN, routes=routes, **settings)


@pytest.fixture
def make_gateway(db: Database, upstream: tuple[str, FakeUpstream]
                 ) -> Iterator[Callable[..., GatewayUnderTest]]:
    stack: list[Any] = []

    def start(**overrides: Any) -> GatewayUnderTest:
        app = create_app(_settings(db, upstream[0], **overrides))
        context = serve_app(app)
        url = context.__enter__()
        stack.append(context)
        return GatewayUnderTest(url, db, KeyService(db))

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


@pytest.fixture
def gateway(make_gateway: Callable[..., GatewayUnderTest]) -> GatewayUnderTest:
    return make_gateway()
