"""The ASGI application: wires the parts together and keeps them on ``app.state``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from tallygate import __version__
from tallygate.api import dimensions, health, keys, usage
from tallygate.api.errors import install_error_handlers
from tallygate.config import Settings
from tallygate.gateway.wiring import GatewayEndpoints, build_gateway, make_counters
from tallygate.keys.secrets import hash_secret
from tallygate.keys.service import KeyService
from tallygate.ledger.maintenance import purge_expired
from tallygate.ledger.recorder import Recorder
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tallygate.store.meta import get_value
from tallygate.web import pages
from tallygate.web.security import SecurityHeaders
from tallygate.web.sessions import Sessions, SignInBrake

log = logging.getLogger("tallygate")
ADMIN_HASH = "admin_token_sha256"
PURGE_EVERY_S = 3600


def admin_token_hash(settings: Settings, db: Database) -> str | None:
    """The configured admin token wins; else the one ``serve`` generated and stored."""
    if settings.admin_token is not None:
        return hash_secret(settings.admin_token.get_secret_value())
    return get_value(db, ADMIN_HASH)


def create_app(settings: Settings) -> FastAPI:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        db = Database(settings.database_url)
        try:
            db.ensure_current()
        except Exception:
            db.dispose()
            raise
        ledger = Ledger(db, currency=settings.currency,
                        minute_retention_days=settings.minute_retention_days,
                        raw_retention_days=settings.raw_retention_days)
        ledger.sync_route_prices(settings.routes)
        recorder = Recorder(ledger, flush_interval_s=settings.flush_interval_ms / 1000,
                            max_batch=settings.flush_max_records)
        app.state.settings = settings
        app.state.db = db
        app.state.ledger = ledger
        app.state.keys = KeyService(db)
        app.state.sessions = Sessions(db)
        app.state.sign_in_brake = SignInBrake()
        app.state.recorder = recorder
        app.state.admin_token_hash = admin_token_hash(settings, db)
        counters = make_counters(settings)
        gateway = build_gateway(settings, ledger, recorder, counters)
        app.state.gateway = gateway
        app.state.keys.listeners.append(gateway.key_cache.clear)
        await recorder.start()
        purger = asyncio.create_task(_purge_periodically(ledger), name="tallygate-purge")
        try:
            yield
        finally:
            purger.cancel()
            await gateway.client.close()
            await recorder.stop()
            await counters.close()
            db.dispose()

    app = FastAPI(
        title="tallygate",
        version=__version__,
        summary="OpenAI-compatible LLM API gateway with an exact usage ledger",
        lifespan=lifespan,
        docs_url=None,  # served from vendored assets by web/pages.py
        redoc_url=None,
    )
    install_error_handlers(app)
    app.include_router(dimensions.router)
    app.include_router(usage.router)
    app.include_router(keys.router)
    app.include_router(health.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "web" / "static"),
              name="static")
    app.add_middleware(SecurityHeaders)
    app.add_middleware(GatewayEndpoints)  # added last: outermost, ahead of the rest
    return app


async def _purge_periodically(ledger: Ledger) -> None:
    while True:
        try:
            await asyncio.to_thread(purge_expired, ledger)
        except Exception:
            log.exception("purging expired records failed; will try again")
        await asyncio.sleep(PURGE_EVERY_S)


def app_from_environment() -> FastAPI:
    """For ``uvicorn --factory`` with several workers: settings from the environment."""
    from tallygate.config import load_settings

    return create_app(load_settings())
