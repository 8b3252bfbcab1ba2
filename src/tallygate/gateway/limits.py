"""Every limit of a key, checked before a call goes upstream; usage counted after it.

Order: status, expiry, model, IP, requests per minute, tokens per minute, token quota, cost
budget. The first that fails decides the answer. Quota periods are calendar periods in UTC
(``daily`` from 00:00 UTC, ``monthly`` from the 1st). A quota or budget can be overshot by the
calls already in flight when it is reached (their tokens are not known until they finish);
see docs/gateway.md.
"""

from __future__ import annotations

import asyncio
import ipaddress
import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from tallygate.gateway.counters import Counters
from tallygate.keys.service import effective_status
from tallygate.ledger.service import Ledger
from tallygate.store.keys import StoredKey
from tallygate.store.usage import Aggregate, CallFilter, aggregate

US = 1_000_000
_PERIOD_TTL_S = {"daily": 2 * 86400, "monthly": 35 * 86400, "total": 7 * 86400}


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call is refused, in OpenAI's terms."""

    status: int
    code: str
    message: str
    param: str | None = None
    retry_after_s: int | None = None


def period_of(quota_period: str, now: float) -> tuple[str, int]:
    """The period's name and its start (µs) for a quota counted ``daily``, ``monthly`` or
    in ``total``."""
    moment = datetime.fromtimestamp(now, UTC)
    if quota_period == "daily":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), int(start.timestamp()) * US
    if quota_period == "monthly":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m"), int(start.timestamp()) * US
    return "total", 0


def next_period_start(quota_period: str, now: float) -> float | None:
    """When a daily or monthly quota starts again (None for a total quota)."""
    moment = datetime.fromtimestamp(now, UTC)
    if quota_period == "daily":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    elif quota_period == "monthly":
        year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year,
                                                                        moment.month + 1)
        start = datetime(year, month, 1, tzinfo=UTC)
    else:
        return None
    return start.timestamp()


def ip_allowed(allowed: list[str] | None, client_ip: str | None) -> bool:
    if not allowed:
        return True
    if client_ip is None:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(net, strict=False) for net in allowed)


class Limits:
    def __init__(self, counters: Counters, ledger: Ledger) -> None:
        self.counters = counters
        self.ledger = ledger

    async def check(self, key: StoredKey, model: str, client_ip: str | None,
                    now: float) -> Refusal | None:
        status = effective_status(key, int(now * US))
        if status != "active":
            return Refusal(403, f"key_{status}", f"This API key is {status}.")
        if key.allowed_models is not None and model not in key.allowed_models:
            return Refusal(403, "model_not_allowed",
                           f"This API key may not use the model {model!r}.", "model")
        if not ip_allowed(key.allowed_ips, client_ip):
            return Refusal(403, "ip_not_allowed", "This API key may not be used from this "
                                                  "address.")
        if key.tpm_limit is not None:
            used = await self.counters.window_tokens(key.id, now)
            if used >= key.tpm_limit:
                return Refusal(429, "tokens_per_minute_exceeded",
                               f"Rate limit reached: {key.tpm_limit} tokens per minute.",
                               retry_after_s=max(1, math.ceil(60 - now % 60)))
        if key.quota_tokens is not None or key.budget_nano is not None:
            refusal = await self._check_quota(key, now)
            if refusal is not None:
                return refusal
        if key.rpm_limit is not None:
            wait = await self.counters.take_request(key.id, key.rpm_limit, now)
            if wait is not None:
                return Refusal(429, "requests_per_minute_exceeded",
                               f"Rate limit reached: {key.rpm_limit} requests per minute.",
                               retry_after_s=max(1, math.ceil(wait)))
        return None

    async def _check_quota(self, key: StoredKey, now: float) -> Refusal | None:
        period, start_us = period_of(key.quota_period, now)
        tokens, cost = await self.counters.period_used(
            key.id, period, _PERIOD_TTL_S[key.quota_period],
            lambda: self._ledger_usage(key.id, start_us, now))
        next_start = next_period_start(key.quota_period, now)
        retry = None if next_start is None else max(1, math.ceil(next_start - now))
        if key.quota_tokens is not None and tokens >= key.quota_tokens:
            return Refusal(429, "insufficient_quota",
                           f"This API key has used its {key.quota_period} quota of "
                           f"{key.quota_tokens} tokens.", retry_after_s=retry)
        if key.budget_nano is not None and cost >= key.budget_nano:
            return Refusal(429, "insufficient_quota",
                           f"This API key has used its {key.quota_period} budget.",
                           retry_after_s=retry)
        return None

    async def _ledger_usage(self, key_id: str, start_us: int, now: float) -> tuple[int, int]:
        spec = Aggregate(start_us, int(now + 86400) * US, CallFilter(api_key_ids=(key_id,)),
                         measures=("total_tokens", "cost_nano"))
        rows = await asyncio.to_thread(aggregate, self.ledger.db, spec)
        return sum(r[2] for r in rows), sum(r[3] for r in rows)

    async def count(self, key: StoredKey, tokens: int, cost_nano: int, now: float) -> None:
        """Add a finished call's usage to the key's windows and periods."""
        if key.tpm_limit is not None and tokens:
            await self.counters.add_tokens(key.id, tokens, now)
        if key.quota_tokens is not None or key.budget_nano is not None:
            period, _ = period_of(key.quota_period, now)
            await self.counters.add_period(key.id, period, tokens, cost_nano)
