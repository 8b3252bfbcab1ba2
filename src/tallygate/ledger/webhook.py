"""Anomalies sent to a webhook: HMAC-signed, retried with back-off, every attempt logged.

Each process that has a webhook URL looks for anomalies every ``check_interval_s`` over the
last hours, logs each new one in ``webhook_deliveries`` (its id is the anomaly's, so however
many processes find it, it is sent once) and posts the due deliveries. A failed post (no
answer, or not 2xx) is tried again after 5 s, 10 s, 20 s … (doubling, at most an hour) until
``max_attempts``, then marked ``failed``.

The body is JSON; ``X-Tallygate-Signature: t=<unix seconds>,v1=<hex>`` carries
HMAC-SHA256(secret, ``"<t>.<body>"``), so a receiver can check both who sent it and that it is
fresh (see :func:`verify_signature` and docs/anomalies.md).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
from dataclasses import dataclass

import httpx

from tallygate.domain.records import format_ts
from tallygate.domain.records import now_us as current_us
from tallygate.ledger.anomalies import AnomalyParams, find_anomalies
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import UsageQuery
from tallygate.ledger.timerange import resolve_range
from tallygate.store import keys as key_store
from tallygate.store import webhooks as delivery_store
from tallygate.store.usage import CallFilter

log = logging.getLogger("tallygate.webhook")
US = 1_000_000
SIGNATURE_HEADER = "X-Tallygate-Signature"


def sign(secret: str, timestamp: int, body: bytes) -> str:
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify_signature(secret: str, header: str, body: bytes, *, now_s: float | None = None,
                     tolerance_s: int = 300) -> bool:
    """What a receiver does: the signature matches and is at most ``tolerance_s`` old."""
    parts = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    now = time.time() if now_s is None else now_s
    if abs(now - timestamp) > tolerance_s:
        return False
    expected = sign(secret, timestamp, body).split("v1=", 1)[1]
    return hmac.compare_digest(expected, parts.get("v1", ""))


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    url: str
    secret: str | None
    check_interval_s: float = 300
    window_hours: int = 26  # how far back each check looks (a restart misses nothing)
    max_attempts: int = 8
    first_backoff_s: float = 5
    timeout_s: float = 10


class AnomalyNotifier:
    def __init__(self, ledger: Ledger, config: WebhookConfig,
                 params: AnomalyParams | None = None,
                 client: httpx.AsyncClient | None = None) -> None:
        self.ledger = ledger
        self.config = config
        self.params = params or AnomalyParams()
        self.client = client or httpx.AsyncClient(timeout=config.timeout_s)
        self._last_check = -float("inf")

    async def run(self) -> None:
        """Check and deliver until cancelled; a failing round is logged and tried again."""
        poll = min(5.0, self.config.check_interval_s)
        while True:
            try:
                if time.monotonic() - self._last_check >= self.config.check_interval_s:
                    self._last_check = time.monotonic()
                    await self.check()
                await self.deliver_due()
            except Exception:
                log.exception("anomaly webhook round failed; trying again")
            await asyncio.sleep(poll)

    async def close(self) -> None:
        await self.client.aclose()

    async def check(self, now_us: int | None = None) -> int:
        """Log a delivery for each anomaly of the last ``window_hours`` not logged yet."""
        now = current_us() if now_us is None else now_us
        return await asyncio.to_thread(self._check, now)

    def _check(self, now: int) -> int:
        start = now - self.config.window_hours * 3600 * US
        time_range = resolve_range(None, format_ts(start), format_ts(now + 1), "UTC")
        query = UsageQuery(CallFilter(), time_range)
        found = find_anomalies(self.ledger, query, self.params, now_us=now)
        names = key_store.key_names(self.ledger.db)
        added = 0
        for anomaly in found:
            event = f"anomaly.{anomaly.kind}"
            body = {"event": event, "anomaly": anomaly.as_dict(time_range.tz, names)}
            added += delivery_store.add_delivery(
                self.ledger.db, anomaly.id, event, json.dumps(body, separators=(",", ":")),
                now)
        return added

    async def deliver_due(self, now_us: int | None = None) -> int:
        """Post every due delivery once; returns how many were delivered."""
        now = current_us() if now_us is None else now_us
        lease = int((self.config.timeout_s + 5) * US)
        due = await asyncio.to_thread(delivery_store.claim_due, self.ledger.db, now, lease)
        delivered = 0
        for delivery in due:
            delivered += await self._post(delivery)
        return delivered

    async def _post(self, delivery: delivery_store.Delivery) -> bool:
        body = delivery.payload.encode()
        headers = {"Content-Type": "application/json", "User-Agent": "tallygate-webhook",
                   "X-Tallygate-Event": delivery.event, "X-Tallygate-Delivery": delivery.id}
        if self.config.secret:
            headers[SIGNATURE_HEADER] = sign(self.config.secret, int(time.time()), body)
        status: int | None = None
        error: str | None = None
        try:
            response = await self.client.post(self.config.url, content=body, headers=headers)
            status = response.status_code
            if not 200 <= status < 300:
                error = f"answered {status}"
        except httpx.HTTPError as exc:
            # The exception's class, not its text: the URL (maybe with a token) stays out.
            error = exc.__class__.__name__
        attempts = delivery.attempts + 1
        now = current_us()
        if error is None:
            outcome, next_at = "delivered", None
        elif attempts >= self.config.max_attempts:
            outcome, next_at = "failed", None
            log.warning("anomaly webhook %s failed %d times (%s); giving up", delivery.id,
                        attempts, error)
        else:
            backoff = min(3600.0, self.config.first_backoff_s * 2 ** (attempts - 1))
            outcome, next_at = "pending", now + int(backoff * US)
        try:
            await asyncio.to_thread(delivery_store.record_attempt, self.ledger.db,
                                    delivery.id, now_us=now, status=outcome,
                                    response_status=status, error=error,
                                    next_attempt_at=next_at)
        except Exception:
            # Its lease runs out and it is posted again: at least once, never lost.
            log.exception("logging webhook delivery %s failed", delivery.id)
        return error is None
