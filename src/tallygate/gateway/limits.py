"""Every limit of a key, checked before a call goes upstream; usage counted after it.

Order: status, expiry, model, IP, tokens per minute, token quota, cost budget, calls in
flight (``max_concurrency``), requests per minute. The first that fails decides the answer.
Quota periods are calendar periods in UTC (``daily`` from 00:00 UTC, ``monthly`` from the
1st). A quota or budget can be overshot by the calls already in flight when it is reached
(their tokens are not known until they finish); see docs/gateway.md. A call let in takes one
of its key's ``max_concurrency`` slots, which :meth:`Limits.release` gives back when the call
is recorded (a slot whose process died frees when its lease, ``concurrency_lease_s``, ends).

When the counters cannot be reached (Redis down), a key with counted limits gets what
``redis_failure`` says: ``open`` lets the call through unchecked, ``closed`` refuses it with
503. The counters are then left alone for ``COUNTERS_RETRY_S`` before one call tries them
again, so an outage costs each call nothing. The usage this process could not add meanwhile
is kept (per key and period) and added once they answer: the counters other processes keep
are never reset because this one lost Redis for a moment. A counter missing from Redis (new,
expired, or Redis restarted empty) is started from the ledger plus what is still on its way
there (the recorder's unwritten batch and the spool), so no call is left out.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import Protocol

from tallygate.gateway.counters import (
    Counters,
    CountersUnavailable,
    retry_after_s,
    weighted,
)
from tallygate.keys.access import ip_allowed
from tallygate.keys.service import effective_status
from tallygate.ledger.periods import next_period_start, period_of
from tallygate.ledger.service import Ledger
from tallygate.store.keys import StoredKey
from tallygate.store.usage import Aggregate, CallFilter, aggregate

US = 1_000_000
_PERIOD_TTL_S = {"daily": 2 * 86400, "monthly": 35 * 86400, "total": 7 * 86400}
COUNTERS_RETRY_S = 1.0
CONCURRENCY_RETRY_S = 1  # a slot frees when any call of the key ends: soon, usually
log = logging.getLogger("tallygate.gateway")


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a call is refused, in OpenAI's terms."""

    status: int
    code: str
    message: str
    param: str | None = None
    retry_after_s: int | None = None


def has_counted_limits(key: StoredKey) -> bool:
    return (key.rpm_limit is not None or key.tpm_limit is not None
            or key.quota_tokens is not None or key.budget_nano is not None
            or key.max_concurrency is not None)


class InFlight(Protocol):
    """Usage recorded but not yet in the database (the recorder)."""

    def usage_mark(self) -> tuple[int, bool]: ...

    def in_flight_usage(self, api_key_id: str, start_us: int) -> tuple[int, int]: ...


class _NothingInFlight:
    def usage_mark(self) -> tuple[int, bool]:
        return 0, False

    def in_flight_usage(self, api_key_id: str, start_us: int) -> tuple[int, int]:
        return 0, 0


MAX_OWED = 100_000  # keys x periods whose uncounted usage is kept through an outage
CONSISTENT_READ_TRIES = 20


class Limits:
    def __init__(self, counters: Counters, ledger: Ledger, *,
                 redis_failure: str = "open", in_flight: InFlight | None = None,
                 concurrency_lease_s: float = 900) -> None:
        self.counters = counters
        self.concurrency_lease_s = concurrency_lease_s
        self.ledger = ledger
        self.redis_failure = redis_failure  # "open" or "closed"
        self.in_flight: InFlight = in_flight or _NothingInFlight()
        # Usage this process could not add to the counters, added once they answer.
        self._owed: dict[tuple[str, str], tuple[int, int]] = {}
        self.unchecked_calls = 0  # let through while the counters were unreachable
        self._down_since: float | None = None  # monotonic; None while the counters answer
        self._retry_at = 0.0
        self._probing = False

    async def check(self, key: StoredKey, model: str | None, client_ip: str | None,
                    now: float, call_id: str | None = None, *,
                    usage_limits: bool = True) -> Refusal | None:
        """Why this call may not go upstream, or None. With ``call_id``, a call let in holds
        one of the key's ``max_concurrency`` slots until :meth:`release` (without, as for a
        free call, it takes none). Without ``usage_limits`` the tokens per minute, quota and
        budget are not checked, only the requests per minute (for usage reported after the
        fact, which refusing would only leave unrecorded)."""
        refusal = self.check_key(key, model, client_ip, now)
        if refusal is not None or not (has_counted_limits(key) if usage_limits
                                       else key.rpm_limit is not None):
            return refusal
        if not self._counters_usable(probe=True):
            return self._counters_unavailable()
        try:
            refusal = await self._check_counted(key, now, call_id, usage_limits)
        except CountersUnavailable as exc:
            self._counters_failed(exc)
            return self._counters_unavailable()
        finally:
            self._probing = False
        await self._counters_answered()
        return refusal

    def check_key(self, key: StoredKey, model: str | None, client_ip: str | None,
                  now: float) -> Refusal | None:
        """Whether the key may be used now, from there, for ``model`` (None: any model, as
        for listing them); nothing counted."""
        status = effective_status(key, int(now * US))
        if status != "active":
            return Refusal(403, f"key_{status}", f"This API key is {status}.")
        if model is not None and key.allowed_models is not None \
                and model not in key.allowed_models:
            return Refusal(403, "model_not_allowed",
                           f"This API key may not use the model {model!r}.", "model")
        if not ip_allowed(key.allowed_ips, client_ip):
            return Refusal(403, "ip_not_allowed", "This API key may not be used from this "
                                                  "address.")
        return None

    async def _check_counted(self, key: StoredKey, now: float,
                             call_id: str | None, usage_limits: bool = True) -> Refusal | None:
        if usage_limits and key.tpm_limit is not None:
            current, previous = await self.counters.window_tokens(key.id, now)
            if weighted(current, previous, now) >= key.tpm_limit:
                return Refusal(429, "tokens_per_minute_exceeded",
                               f"Rate limit reached: {key.tpm_limit} tokens per minute.",
                               retry_after_s=retry_after_s(current, previous,
                                                           key.tpm_limit, now))
        if usage_limits and (key.quota_tokens is not None or key.budget_nano is not None):
            refusal = await self._check_quota(key, now)
            if refusal is not None:
                return refusal
        # A slot before the request is logged: a call refused for its concurrency is not
        # counted against the key's rate (a slot is given back, a logged request is not).
        slot = call_id if key.max_concurrency is not None else None
        if slot is not None and key.max_concurrency is not None and not \
                await self.counters.acquire_slot(key.id, key.max_concurrency, slot,
                                                 self.concurrency_lease_s, now):
            return Refusal(429, "concurrency_limit_exceeded",
                           f"Concurrency limit reached: {key.max_concurrency} calls of this "
                           "API key at once.", retry_after_s=CONCURRENCY_RETRY_S)
        if key.rpm_limit is not None:
            wait = await self.counters.take_request(key.id, key.rpm_limit, now)
            if wait is not None:
                if slot is not None:
                    await self.counters.release_slot(key.id, slot)
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
        """The key's usage from ``start_us``: what the ledger holds plus what is on its way
        there, read so that no batch moved between the two meanwhile (else read again; after
        ``CONSISTENT_READ_TRIES`` a batch may count twice, never not at all)."""
        spec = Aggregate(start_us, int(now + 86400) * US, CallFilter(api_key_ids=(key_id,)),
                         measures=("total_tokens", "cost_nano"))
        for _ in range(CONSISTENT_READ_TRIES):
            before = self.in_flight.usage_mark()
            pending = self.in_flight.in_flight_usage(key_id, start_us)
            try:
                rows = await asyncio.to_thread(aggregate, self.ledger.db, spec)
            except Exception as exc:  # the database is away: the quota cannot be known either
                raise CountersUnavailable(f"the ledger could not be read to start the quota "
                                          f"counter ({exc.__class__.__name__})") from exc
            if not before[1] and self.in_flight.usage_mark() == before:
                break
            await asyncio.sleep(0.002)  # a batch was being written: read both again
        return (sum(r[2] for r in rows) + pending[0], sum(r[3] for r in rows) + pending[1])

    async def count(self, key: StoredKey, tokens: int, cost_nano: int, now: float) -> None:
        """Add a finished call's usage to the key's windows and periods. While the counters
        cannot be reached, the period usage is kept and added once they answer (the token
        window is a minute long: what it missed has passed by then)."""
        if not has_counted_limits(key):
            return
        counts_period = key.quota_tokens is not None or key.budget_nano is not None
        period = period_of(key.quota_period, now)[0] if counts_period else ""
        if not self._counters_usable(probe=False):
            if counts_period:
                self._owe(key.id, period, tokens, cost_nano)
            return
        try:
            if key.tpm_limit is not None and tokens:
                await self.counters.add_tokens(key.id, tokens, now)
            if counts_period:
                await self.counters.add_period(key.id, period, tokens, cost_nano)
        except CountersUnavailable as exc:
            if counts_period:
                self._owe(key.id, period, tokens, cost_nano)
            self._counters_failed(exc)

    def _owe(self, key_id: str, period: str, tokens: int, cost_nano: int) -> None:
        owed = self._owed.get((key_id, period))
        if owed is None and len(self._owed) >= MAX_OWED:
            return  # the counters of keys past this many start again from the ledger
        owed_tokens, owed_cost = owed or (0, 0)
        self._owed[(key_id, period)] = (owed_tokens + tokens, owed_cost + cost_nano)

    async def release(self, key: StoredKey, call_id: str) -> None:
        """Give back the call's concurrency slot (nothing to do when it holds none, or while
        the counters cannot be reached: its lease ends it)."""
        if key.max_concurrency is None or not self._counters_usable(probe=False):
            return
        try:
            await self.counters.release_slot(key.id, call_id)
        except CountersUnavailable as exc:
            self._counters_failed(exc)

    # -- when the counters cannot be reached -----------------------------------------------

    def _counters_usable(self, *, probe: bool) -> bool:
        """True while the counters answer; after a failure, once every ``COUNTERS_RETRY_S``
        for one probing call (other calls meanwhile do not wait on an unreachable Redis)."""
        if self._down_since is None:
            return True
        if probe and not self._probing and time.monotonic() >= self._retry_at:
            self._probing = True
            return True
        return False

    def _counters_unavailable(self) -> Refusal | None:
        if self.redis_failure == "open":
            self.unchecked_calls += 1
            return None
        return Refusal(503, "limits_unavailable",
                       "This API key's limits cannot be checked right now; try again shortly.",
                       retry_after_s=max(1, math.ceil(COUNTERS_RETRY_S)))

    def _counters_failed(self, exc: CountersUnavailable) -> None:
        self._retry_at = time.monotonic() + COUNTERS_RETRY_S
        if self._down_since is None:
            self._down_since = time.monotonic()
            what = ("calls of keys with limits go through unchecked" if
                    self.redis_failure == "open" else
                    "calls of keys with limits are refused with 503")
            log.warning("limit counters unavailable (%s): %s until they answer "
                        "(redis_failure = %s)", exc, what, self.redis_failure)

    async def _counters_answered(self) -> None:
        if self._down_since is None:
            return
        log.warning("limit counters answer again after %.1f s (%d calls went through "
                    "unchecked); the usage they missed from this process is added now",
                    time.monotonic() - self._down_since, self.unchecked_calls)
        self._down_since = None
        owed, self._owed = self._owed, {}
        for number, ((key_id, period), (tokens, cost)) in enumerate(owed.items()):
            try:
                # Added where the counter is kept; a counter missing by now starts from the
                # ledger, which holds these calls (or has them on their way).
                await self.counters.add_period(key_id, period, tokens, cost)
            except CountersUnavailable as exc:
                for (late_key, late_period), (late_tokens, late_cost) in \
                        list(owed.items())[number:]:
                    self._owe(late_key, late_period, late_tokens, late_cost)
                self._counters_failed(exc)
                return
