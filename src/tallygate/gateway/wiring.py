"""Building the gateway from settings, and its routes on the application."""

from __future__ import annotations

from fastapi import FastAPI
from starlette.routing import Route as StarletteRoute

from tallygate.config import Settings
from tallygate.gateway.counters import Counters, MemoryCounters, RedisCounters
from tallygate.gateway.keycache import KeyCache
from tallygate.gateway.limits import Limits
from tallygate.gateway.proxy import ENDPOINTS, Gateway
from tallygate.gateway.upstream import make_client, resolve_upstreams
from tallygate.ledger.recorder import Recorder
from tallygate.ledger.service import Ledger


def make_counters(settings: Settings) -> Counters:
    return RedisCounters(settings.redis_url) if settings.redis_url else MemoryCounters()


def build_gateway(settings: Settings, ledger: Ledger, recorder: Recorder,
                  counters: Counters) -> Gateway:
    return Gateway(
        ledger=ledger,
        recorder=recorder,
        key_cache=KeyCache(ledger.db, settings.key_cache_seconds),
        limits=Limits(counters, ledger),
        client=make_client(settings.upstream_connect_timeout_s, settings.upstream_timeout_s),
        upstreams=resolve_upstreams(settings.routes),
        strict=settings.durability == "strict",
    )


def add_gateway_routes(app: FastAPI) -> None:
    """Plain Starlette routes (no dependency injection on the hot path); they find the
    gateway on ``app.state`` at request time."""

    async def forward(request):  # type: ignore[no-untyped-def]
        return await request.app.state.gateway.forward(request)

    async def models(request):  # type: ignore[no-untyped-def]
        return await request.app.state.gateway.models(request)

    for path in ENDPOINTS:
        app.router.routes.append(StarletteRoute(path, forward, methods=["POST"]))
    app.router.routes.append(StarletteRoute("/v1/models", models, methods=["GET"]))
