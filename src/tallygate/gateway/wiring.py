"""Building the gateway from settings, and its routes on the application."""

from __future__ import annotations

import ctypes
import gc
from collections.abc import Awaitable, Callable

from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


Handler = Callable[[Gateway, Scope, Receive, Send], Awaitable[None]]


class GatewayEndpoints:
    """ASGI middleware that answers the gateway's endpoints itself.

    It sits just inside Starlette's error middleware, so a gateway call skips FastAPI's
    routing, exception and dependency machinery (a measurable share of a proxied call); every
    other path goes on to FastAPI.

    Once the application has started, everything start-up built (modules, routes, settings,
    the database engine) is moved out of the garbage collector's reach with ``gc.freeze``:
    otherwise each full collection walks those hundreds of thousands of objects again,
    a pause of 100 ms and more in the middle of calls (measured: the gateway's p99 at
    500 requests/s, docs/benchmarks.md). Shutdown hands them back.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.handlers: dict[tuple[str, str], Handler] = {
            ("POST", path): Gateway.forward for path in ENDPOINTS}
        self.handlers[("GET", "/v1/models")] = Gateway.models

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            handler = self.handlers.get((scope["method"], scope["path"]))
            if handler is not None:
                await handler(scope["app"].state.gateway, scope, receive, send)
                return
        elif scope["type"] == "lifespan":
            await self.app(scope, receive, _freezing_after_startup(send))
            return
        await self.app(scope, receive, send)


def _freezing_after_startup(send: Send) -> Send:
    async def send_and_freeze(message: Message) -> None:
        if message["type"] == "lifespan.shutdown.complete":
            gc.unfreeze()
        await send(message)
        if message["type"] == "lifespan.startup.complete":
            gc.collect()  # start-up's garbage goes first, rather than frozen for good
            gc.freeze()
            _return_freed_memory()

    return send_and_freeze


def _return_freed_memory() -> None:
    """Give the memory start-up freed (import-time scratch, schema building) back to the
    system: glibc keeps it mapped otherwise, and the idle process looks that much larger."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
