"""Building the gateway from settings, and its routes on the application."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

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


class GatewayEndpoints:
    """ASGI middleware that answers the gateway's endpoints itself.

    It sits just inside Starlette's error middleware, so a gateway call skips FastAPI's
    routing, exception and dependency machinery (a measurable share of a proxied call); every
    other path goes on to FastAPI.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.handlers: dict[tuple[str, str], Callable[[Gateway, Request],
                                                      Awaitable[Response]]] = {
            ("POST", path): Gateway.forward for path in ENDPOINTS}
        self.handlers[("GET", "/v1/models")] = Gateway.models

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        handler = self.handlers.get((scope.get("method", ""), scope.get("path", "")))
        if handler is None or scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        gateway: Gateway = scope["app"].state.gateway
        response = await handler(gateway, Request(scope, receive))
        await response(scope, receive, send)
