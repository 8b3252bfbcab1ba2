"""The ASGI application: wires the parts together and keeps them on ``app.state``.

The gateway's endpoints and the health probes are answered here, in raw ASGI: a relayed
call skips every framework's routing, exception and dependency machinery (a measurable
share of the time it adds, docs/benchmarks.md). Every other path (the ``/api/v1`` API,
the pages, ``/metrics``, the OpenAPI document) belongs to the admin application, on
FastAPI, which is built the first time one of them is asked for: a process that only relays
calls never loads FastAPI, the API's models or the templates, and starts faster and smaller.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from starlette.datastructures import State
from starlette.types import ASGIApp, Receive, Scope, Send

from tallygate.config import Settings
from tallygate.errors import error_body
from tallygate.gateway import anthropic
from tallygate.gateway.endpoints import ENDPOINTS
from tallygate.gateway.proxy import Gateway
from tallygate.gateway.wiring import build_gateway, make_counters, return_freed_memory
from tallygate.health import LIVE, readiness
from tallygate.keys.secrets import hash_secret
from tallygate.keys.service import KeyService
from tallygate.ledger.anomalies import AnomalyParams
from tallygate.ledger.maintenance import purge_expired
from tallygate.ledger.recorder import Recorder
from tallygate.ledger.service import Ledger
from tallygate.ledger.spool import Spool, spool_directory
from tallygate.metrics import LedgerMetrics
from tallygate.redact import redact_logs
from tallygate.store.database import Database
from tallygate.store.meta import get_value
from tallygate.web.security import HEADERS
from tallygate.web.sessions import Sessions, SignInBrake

if TYPE_CHECKING:
    from fastapi import FastAPI

    from tallygate.ledger.webhook import AnomalyNotifier

log = logging.getLogger("tallygate")
ADMIN_HASH = "admin_token_sha256"
# The database `serve --workers N` resolved, for its workers (it outranks the TOML file).
WORKER_DATABASE_URL = "TALLYGATE_SERVE_DATABASE_URL"
PURGE_EVERY_S = 3600

Handler = Callable[[Gateway, Scope, Receive, Send], Awaitable[None]]
PROBES = ("/healthz", "/readyz")
TRACES = "/v1/traces"  # OTLP/HTTP's default path for traces
SECURITY_HEADERS = [(name.encode(), value.encode()) for name, value in HEADERS.items()]


def admin_token_hash(settings: Settings, db: Database) -> str | None:
    """The configured admin token wins; else the one ``serve`` generated and stored."""
    if settings.admin_token is not None:
        return hash_secret(settings.admin_token.get_secret_value())
    return get_value(db, ADMIN_HASH)


class Tallygate:
    """The application ``create_app`` returns; ``state`` holds the running parts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.state = State()
        self.handlers: dict[tuple[str, str], Handler] = {
            **{("POST", path): Gateway.forward_form if endpoint.body == "multipart"
               else Gateway.forward for path, endpoint in ENDPOINTS.items()},
            # Custom service routes, at the paths their routes give (config.py keeps them
            # off the built-in endpoints).
            **{("POST", route.path): Gateway.forward_service for route in settings.routes
               if route.path is not None},
            ("GET", "/v1/models"): Gateway.models,
            ("POST", anthropic.MESSAGES): anthropic.messages,
            ("POST", anthropic.COUNT_TOKENS): anthropic.count_tokens,
            ("POST", TRACES): _export_traces,
        }
        self._admin: FastAPI | None = None
        self._admin_building = asyncio.Lock()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            method, path = scope["method"], scope["path"]
            handler = self.handlers.get((method, path))
            if handler is not None:
                await _answering_failures(handler, self.state, scope, receive, send)
                return
            if method in ("GET", "HEAD") and path in PROBES:
                await self._health(path, send, with_body=method == "GET")
                return
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        scope["app"] = self  # until the admin application puts itself there
        admin = self._admin or await self._build_admin()
        await admin(scope, receive, send)

    @property
    def admin_loaded(self) -> bool:
        return self._admin is not None

    @property
    def admin(self) -> FastAPI:
        """The admin application, built now if no request has built it yet."""
        if self._admin is None:
            self._admin = _admin_app(self.state)
        return self._admin

    def openapi(self) -> dict[str, Any]:
        return self.admin.openapi()

    async def _build_admin(self) -> ASGIApp:
        async with self._admin_building:
            if self._admin is None:
                # Off the event loop: importing FastAPI and building the routes takes a few
                # hundred milliseconds that relayed calls should not wait for.
                self._admin = await asyncio.to_thread(_admin_app, self.state)
                gc.freeze()  # long-lived, like start-up's objects (see _lifespan)
        return self._admin

    async def _health(self, path: str, send: Send, *, with_body: bool) -> None:
        status, body = (200, LIVE) if path == "/healthz" else await asyncio.to_thread(
            readiness, self.state.db, self.state.recorder)
        content = orjson.dumps(body)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(content)).encode()),
                                *SECURITY_HEADERS]})
        await send({"type": "http.response.body", "body": content if with_body else b""})

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        """Start-up and shutdown (ASGI lifespan). Once started, everything start-up built
        (modules, settings, the database engine) is moved out of the garbage collector's
        reach with ``gc.freeze``: otherwise each full collection walks those hundreds of
        thousands of objects again, a pause of 100 ms and more in the middle of calls
        (measured: the gateway's p99 at 500 requests/s, docs/benchmarks.md)."""
        await receive()  # lifespan.startup
        async with contextlib.AsyncExitStack() as running:
            try:
                await running.enter_async_context(_running(self.settings, self.state))
            except Exception as exc:
                await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                raise
            await send({"type": "lifespan.startup.complete"})
            gc.collect()  # start-up's garbage goes first, rather than frozen for good
            gc.freeze()
            return_freed_memory()
            await receive()  # lifespan.shutdown
            gc.unfreeze()
            try:
                await running.aclose()
            except Exception as exc:
                await send({"type": "lifespan.shutdown.failed", "message": repr(exc)})
                raise
        await send({"type": "lifespan.shutdown.complete"})


async def _export_traces(gateway: Gateway, scope: Scope, receive: Receive, send: Send) -> None:
    """OTLP/HTTP traces (gateway/traces.py), imported at the first export: it loads
    protobuf, which a process that only relays calls has no use for."""
    from tallygate.gateway import traces

    await traces.export(gateway, scope, receive, send)


def create_app(settings: Settings) -> Tallygate:
    redact_logs()  # also in a worker process, which starts here
    return Tallygate(settings)


def _admin_app(state: State) -> FastAPI:
    from tallygate.admin import build_admin_app

    return build_admin_app(state)


async def _answering_failures(handler: Handler, state: State, scope: Scope,
                              receive: Receive, send: Send) -> None:
    """A gateway endpoint that fails unexpectedly answers 500 in OpenAI's shape, if it had
    not started answering, and the failure is logged with its traceback."""
    started = False

    async def watched(message: Any) -> None:
        nonlocal started
        started = started or message["type"] == "http.response.start"
        await send(message)

    try:
        await handler(state.gateway, scope, receive, watched)
    except Exception:
        log.exception("a gateway call failed")
        if not started:
            message = "The gateway failed; the failure is logged."
            body = anthropic.error_json(500, message) if scope["path"].startswith(
                anthropic.MESSAGES) else orjson.dumps(error_body(500, message, "internal_error"))
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})


@contextlib.asynccontextmanager
async def _running(settings: Settings, state: State) -> AsyncIterator[None]:
    """Everything the application runs with, started in order and stopped in reverse."""
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
                        spool=Spool(spool_directory(settings.spool_dir, db.url)),
                        refusal_records_per_minute=settings.refusal_records_per_minute)
    ledger_metrics.watch(recorder)
    state.metrics = ledger_metrics
    state.anomaly_params = AnomalyParams(threshold=settings.anomaly_threshold,
                                         hour_seasonality=settings.anomaly_hour_seasonality)
    state.settings = settings
    state.db = db
    state.ledger = ledger
    state.keys = KeyService(db)
    state.sign_in_brake = SignInBrake()
    state.recorder = recorder
    state.admin_token_hash = admin_token_hash(settings, db)
    state.sessions = Sessions(db, state.admin_token_hash)
    counters = make_counters(settings)
    gateway = build_gateway(settings, ledger, recorder, counters)
    gateway.limits.redis_failure = settings.redis_failure
    state.gateway = gateway
    ledger_metrics.watch_unrecorded(gateway.unrecorded)
    state.keys.listeners.append(gateway.key_cache.clear)
    state.keys.listeners.append(ledger.prices_changed)  # a new discount, at once
    purger = notifier = notifying = reconciling = None
    stopping = asyncio.Event()
    try:
        await recorder.start()
        purger = asyncio.create_task(_purge_periodically(ledger, stopping),
                                     name="tallygate-purge")
        notifier = _webhook_notifier(settings, ledger, state.anomaly_params)
        notifying = None if notifier is None else asyncio.create_task(
            notifier.run(), name="tallygate-anomaly-webhook")
        reconciling = _reconcile_periodically(settings, ledger)
        yield
    finally:  # also when start-up fails half-way: nothing is left running
        if purger is not None:
            stopping.set()
            await purger  # a purge under way holds a connection: it ends before the pool
        if notifier is not None and notifying is not None:
            notifying.cancel()
            await notifier.close()
        if reconciling is not None:
            reconciling.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciling
        await gateway.client.close()
        await gateway.key_cache.close()
        await recorder.stop()
        await counters.close()
        db.dispose()


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


def _reconcile_periodically(settings: Settings, ledger: Ledger) -> asyncio.Task[None] | None:
    """The scheduled reconciliation (``reconcile_interval_s``), when it is on."""
    if not settings.reconcile_interval_s or not settings.providers:
        return None
    from tallygate.ledger.reconciler import ReconcileScheduler  # loads httpx

    return asyncio.create_task(ReconcileScheduler(ledger, settings).run(),
                               name="tallygate-reconcile")


async def _purge_periodically(ledger: Ledger, stopping: asyncio.Event) -> None:
    """Purge now and every hour until ``stopping``. Not cancelled: cancelling would leave
    the purge's thread running with a connection the database's closing then orphans."""
    while not stopping.is_set():
        try:
            await asyncio.to_thread(purge_expired, ledger)
        except Exception:
            log.exception("purging expired records failed; will try again")
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), PURGE_EVERY_S)


def app_from_environment() -> Tallygate:
    """For ``uvicorn --factory`` with several workers: settings from the environment and
    the TOML file named by ``TALLYGATE_CONFIG``, as ``serve`` read them."""
    import os

    from tallygate.config import load_settings

    config = os.environ.get("TALLYGATE_CONFIG")
    return create_app(load_settings(Path(config) if config else None,
                                    database_url=os.environ.get(WORKER_DATABASE_URL)))
