"""Running reconciliations: fetch the provider's report, compare, store, tell the webhook.

The CLI, the API and the scheduled run all go through :func:`run_reconciliation`, so the
page's "last result" is whichever ran last. A run that finds a difference (a row that is not
``match`` or ``within_tolerance``) logs a ``reconciliation.mismatch`` delivery for the anomaly
webhook, when one is set; its id is derived from the differences, so the same differences
found again are not sent twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime
from typing import Any

from tallygate.config import Provider, Settings
from tallygate.domain.records import now_us
from tallygate.ledger.reconcile import days_of_period, reconciliation
from tallygate.ledger.service import Ledger
from tallygate.ledger.timerange import BadParameter
from tallygate.providers import ProviderError, ProviderReport, fetch_report
from tallygate.store import reconciliation as run_store
from tallygate.store import webhooks as delivery_store

log = logging.getLogger("tallygate.reconcile")
Fetch = Callable[[Provider, date, date], Awaitable[ProviderReport]]
EVENT = "reconciliation.mismatch"


def provider_of(settings: Settings, name: str | None) -> Provider:
    if not name:
        raise BadParameter("provider", "required: the name of a [[providers]] entry")
    provider = settings.provider_named(name)
    if provider is None:
        known = ", ".join(p.name for p in settings.providers) or "none are configured"
        raise BadParameter("provider", f"{name!r} names no [[providers]] entry ({known})")
    return provider


def upstream_names(settings: Settings, provider: Provider) -> dict[str, str]:
    """Public model -> the upstream name its calls count under when they carry none."""
    return {route.model: route.upstream_model or route.model for route in settings.routes
            if route.provider == provider.name}


async def run_reconciliation(ledger: Ledger, settings: Settings, name: str | None,
                             period: str, *, fetch: Fetch = fetch_report,
                             today: date | None = None) -> dict[str, Any]:
    """Reconcile ``period`` (``Nd``) with provider ``name``'s report, store the answer and
    queue a webhook delivery when it differs. Bad parameters raise ``BadParameter``; a
    provider that cannot be asked raises ``ProviderError`` (that run is stored too)."""
    provider = provider_of(settings, name)
    start, end = days_of_period(period, today)
    run_id = uuid.uuid4().hex
    try:
        report = await fetch(provider, start, end)
    except ProviderError as exc:
        await asyncio.to_thread(run_store.save_run, ledger.db, run_id, provider.name,
                                now_us(), start.isoformat(), end.isoformat(), "error", None,
                                str(exc))
        raise
    result = await asyncio.to_thread(
        reconciliation, ledger, provider, upstream_names(settings, provider), report, start,
        end, settings.reconcile_tolerance)
    result["id"] = run_id
    await asyncio.to_thread(_store_and_notify, ledger, settings, result)
    return result


def _store_and_notify(ledger: Ledger, settings: Settings, result: dict[str, Any]) -> None:
    created = now_us()
    run_store.save_run(ledger.db, result["id"], result["provider"], created, result["start"],
                       result["end"], result["status"], result, None)
    if result["status"] != "mismatch" or settings.anomaly_webhook_url is None:
        return
    differing = [row for row in result["rows"]
                 if row["status"] not in ("match", "within_tolerance")]
    fingerprint = json.dumps([result["provider"], [
        [row["day"], row["upstream_model"],
         {m: [c["status"], c["provider"], c["tallygate"]] for m, c in row["cells"].items()}]
        for row in differing]], sort_keys=True)
    delivery_id = "recon-" + hashlib.sha256(fingerprint.encode()).hexdigest()[:40]
    summary = {key: result[key] for key in ("id", "provider", "kind", "start", "end",
                                             "status", "counts", "currency")}
    body = {"event": EVENT, "reconciliation": summary | {"rows": differing}}
    delivery_store.add_delivery(ledger.db, delivery_id, EVENT,
                                json.dumps(body, separators=(",", ":")), created)


class ReconcileScheduler:
    """Reconciles every provider each ``reconcile_interval_s`` (over ``reconcile_days``).
    Several processes share the work through the stored runs: a provider reconciled less
    than an interval ago, by any process, is left alone."""

    def __init__(self, ledger: Ledger, settings: Settings, fetch: Fetch = fetch_report) -> None:
        self.ledger = ledger
        self.settings = settings
        self.fetch = fetch

    async def run(self) -> None:
        poll = min(60.0, self.settings.reconcile_interval_s)
        while True:
            try:
                await self.run_due()
            except Exception:
                log.exception("scheduled reconciliation failed; trying again")
            await asyncio.sleep(poll)

    async def run_due(self, now_s: float | None = None) -> int:
        """Reconcile the providers that are due; returns how many were."""
        now = time.time() if now_s is None else now_s
        interval_us = int(self.settings.reconcile_interval_s * 1_000_000)
        done = 0
        for provider in self.settings.providers:
            last = await asyncio.to_thread(run_store.latest_run_at, self.ledger.db,
                                           provider.name)
            if last is not None and int(now * 1_000_000) - last < interval_us:
                continue
            try:
                await run_reconciliation(
                    self.ledger, self.settings, provider.name,
                    f"{self.settings.reconcile_days}d", fetch=self.fetch,
                    today=datetime.fromtimestamp(now, UTC).date())
            except ProviderError as exc:
                log.warning("scheduled reconciliation: %s", exc)
            done += 1
        return done
