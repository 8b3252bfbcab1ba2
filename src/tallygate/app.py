"""The ASGI application: wires the parts together and keeps them on ``app.state``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from tallygate import __version__
from tallygate.api import anomalies, dimensions, health, keys, metrics, pricing, usage
from tallygate.api.errors import install_error_handlers
from tallygate.config import Settings
from tallygate.gateway.wiring import GatewayEndpoints, build_gateway, make_counters
from tallygate.keys.secrets import hash_secret
from tallygate.keys.service import KeyService
from tallygate.ledger.anomalies import AnomalyParams
from tallygate.ledger.maintenance import purge_expired
from tallygate.ledger.recorder import Recorder
from tallygate.ledger.service import Ledger
from tallygate.ledger.spool import Spool, spool_directory
from tallygate.metrics import LedgerMetrics
from tallygate.store.database import Database
from tallygate.store.meta import get_value
from tallygate.web import pages
from tallygate.web.security import SecurityHeaders
from tallygate.web.sessions import Sessions, SignInBrake

if TYPE_CHECKING:
    from tallygate.ledger.webhook import AnomalyNotifier

log = logging.getLogger("tallygate")
ADMIN_HASH = "admin_token_sha256"
# The database `serve --workers N` resolved, for its workers (it outranks the TOML file).
WORKER_DATABASE_URL = "TALLYGATE_SERVE_DATABASE_URL"
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
        ledger = Ledger.from_settings(db, settings)
        ledger.sync_route_prices(settings.routes)
        ledger_metrics = LedgerMetrics(currency=settings.currency,
                                       per_key=settings.metrics_per_key)
        recorder = Recorder(ledger, flush_interval_s=settings.flush_interval_ms / 1000,
                            max_batch=settings.flush_max_records, observer=ledger_metrics,
                            spool=Spool(spool_directory(settings.spool_dir, db.url)))
        ledger_metrics.watch(recorder)
        app.state.metrics = ledger_metrics
        app.state.anomaly_params = AnomalyParams(
            threshold=settings.anomaly_threshold,
            hour_seasonality=settings.anomaly_hour_seasonality)
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
        gateway.limits.redis_failure = settings.redis_failure
        app.state.gateway = gateway
        app.state.keys.listeners.append(gateway.key_cache.clear)
        app.state.keys.listeners.append(ledger.prices_changed)  # a new discount, at once
        await recorder.start()
        purger = asyncio.create_task(_purge_periodically(ledger), name="tallygate-purge")
        notifier = _webhook_notifier(settings, ledger, app.state.anomaly_params)
        notifying = None if notifier is None else asyncio.create_task(
            notifier.run(), name="tallygate-anomaly-webhook")
        try:
            yield
        finally:
            purger.cancel()
            if notifier is not None and notifying is not None:
                notifying.cancel()
                await notifier.close()
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
    app.openapi = _openapi_with_error_answers(app)  # type: ignore[method-assign]
    app.include_router(dimensions.router)
    app.include_router(usage.router)
    app.include_router(keys.router)
    app.include_router(pricing.router)
    app.include_router(anomalies.router)
    app.include_router(metrics.router)
    app.include_router(health.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "web" / "static"),
              name="static")
    app.add_middleware(SecurityHeaders)
    app.add_middleware(GatewayEndpoints)  # added last: outermost, ahead of the rest
    return app


def _webhook_notifier(settings: Settings, ledger: Ledger,
                      params: AnomalyParams) -> AnomalyNotifier | None:
    if settings.anomaly_webhook_url is None:
        return None
    from tallygate.ledger.webhook import AnomalyNotifier, WebhookConfig  # loads httpx

    secret = settings.anomaly_webhook_secret
    return AnomalyNotifier(ledger, WebhookConfig(
        url=settings.anomaly_webhook_url,
        secret=None if secret is None else secret.get_secret_value(),
        check_interval_s=settings.anomaly_check_interval_s), params)


async def _purge_periodically(ledger: Ledger) -> None:
    while True:
        try:
            await asyncio.to_thread(purge_expired, ledger)
        except Exception:
            log.exception("purging expired records failed; will try again")
        await asyncio.sleep(PURGE_EVERY_S)


_ERROR_SCHEMA = {
    "type": "object", "required": ["error"], "description": "OpenAI's error shape.",
    "properties": {"error": {
        "type": "object", "required": ["message", "type", "code", "param"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "code": {"type": ["string", "null"]},
                       "param": {"type": ["string", "null"]}}}}}
_ERROR_ANSWERS = {
    "400": "A bad parameter or body; `param` names it.",
    "401": "No credential, or an unknown one.",
    "403": "An API key asking for admin endpoints or another key's usage; an inactive key.",
}


def _openapi_with_error_answers(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document with the errors ``/api/v1`` really answers (docs/api.md): FastAPI
    would document 422 for invalid input, where tallygate answers 400, in OpenAI's shape."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = FastAPI.openapi(app)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Error"] = _ERROR_SCHEMA
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path, operations in document["paths"].items():
            if not path.startswith("/api/v1/"):
                continue
            for method, operation in operations.items():
                answers = operation["responses"]
                answers.pop("422", None)
                wanted = dict(_ERROR_ANSWERS)
                if "{" in path:
                    wanted["404"] = "No such resource."
                if method == "post" and path.endswith("/events"):
                    wanted["413"] = "Too many events, or too large a body."
                for status, description in wanted.items():
                    answers.setdefault(status, {"description": description, "content": error})
        if "schemas/HTTPValidationError" not in str(document["paths"]):
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        app.openapi_schema = document
        return document

    return openapi


def app_from_environment() -> FastAPI:
    """For ``uvicorn --factory`` with several workers: settings from the environment and
    the TOML file named by ``TALLYGATE_CONFIG``, as ``serve`` read them."""
    import os

    from tallygate.config import load_settings

    config = os.environ.get("TALLYGATE_CONFIG")
    return create_app(load_settings(Path(config) if config else None,
                                    database_url=os.environ.get(WORKER_DATABASE_URL)))
