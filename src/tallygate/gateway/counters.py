"""Rate and quota counters, in process memory or in Redis (shared by every gateway process).

Three primitives, each atomic (Lua scripts on Redis), so N processes never allow N× a limit:

- ``take_request``: a request against a per-minute rate, as a sliding log: at most ``limit``
  requests in any 60 seconds, exactly (a request refused is not counted).
- ``window_tokens`` / ``add_tokens``: tokens in the sliding last minute, from two one-minute
  buckets weighted by how much of the previous one still overlaps.
- ``period_used`` / ``add_period``: tokens and cost of a quota period, initialised from the
  ledger the first time a period is seen.
- ``acquire_slot`` / ``release_slot``: one of a key's calls in flight (``max_concurrency``).
  In Redis a slot is a member of a sorted set scored by its lease's end, so the slots of a
  process that died without releasing them expire instead of holding the key down for good.

When Redis cannot be reached, every operation raises :class:`CountersUnavailable` within
``REDIS_TIMEOUT_S`` (a connection refused answers at once); ``limits.Limits`` decides what a
call then gets (the ``redis_failure`` setting).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from typing import Protocol

REDIS_PREFIX = "tallygate:"
# Connect and answer timeouts, one immediate retry (a pooled connection that died with a Redis
# restart), no back-off: redis-py's defaults (5 s, ten retries) would hold a call for a minute.
REDIS_TIMEOUT_S = 1.0

_SLIDING_LOG = """
local now = tonumber(ARGV[1])
local limit = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - 60)
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tostring(tonumber(oldest[2]) + 60 - now)}
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('EXPIRE', KEYS[1], 61)
return {1, '0'}
"""

# KEYS[1]: the key's slots; ARGV: now, limit, call id, lease end, lease seconds.
_ACQUIRE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[3])
redis.call('EXPIRE', KEYS[1], math.ceil(tonumber(ARGV[5])) + 1)
return 1
"""

_ADD_TOKENS = """
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], 180)
return 1
"""

_PERIOD_INIT = """
redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'NX', 'EX', ARGV[3])
return {redis.call('GET', KEYS[1]), redis.call('GET', KEYS[2])}
"""

_PERIOD_ADD = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  redis.call('INCRBY', KEYS[1], ARGV[1])
  redis.call('INCRBY', KEYS[2], ARGV[2])
end
return 1
"""

Loader = Callable[[], Awaitable[tuple[int, int]]]


class CountersUnavailable(RuntimeError):
    """The shared counters cannot be read or written now (Redis unreachable or failing)."""


class Counters(Protocol):
    async def take_request(self, name: str, per_minute: int, now: float) -> float | None:
        """None if allowed (and counted); else seconds until a request would be allowed."""

    async def window_tokens(self, name: str, now: float) -> tuple[int, int]:
        """Tokens counted in this minute and in the one before it (see :func:`weighted`)."""

    async def add_tokens(self, name: str, tokens: int, now: float) -> None: ...

    async def period_used(self, name: str, period: str, ttl_s: int,
                          load: Loader) -> tuple[int, int]:
        """(tokens, cost in nano-units) used in ``period``; ``load`` reads the ledger the
        first time."""

    async def add_period(self, name: str, period: str, tokens: int, cost_nano: int) -> None: ...

    async def acquire_slot(self, name: str, limit: int, call_id: str, lease_s: float,
                           now: float) -> bool:
        """Whether ``call_id`` got one of ``limit`` slots (held until released, or in Redis
        for at most ``lease_s``)."""

    async def release_slot(self, name: str, call_id: str) -> None: ...

    async def close(self) -> None: ...


def weighted(current: int, previous: int, now: float) -> float:
    """Tokens in the sliding last minute: this minute's, and the previous minute's share that
    still overlaps it."""
    elapsed = (now % 60) / 60
    return current + previous * (1 - elapsed)


def seconds_until_below(current: int, previous: int, limit: int, now: float) -> float:
    """How long until :func:`weighted` falls below ``limit`` with no new tokens: later in this
    minute as the previous one slides out, or in the next one as this one does."""
    into = now % 60
    if current < limit:  # C + P·(1 − t/60) < L  ⇔  t > 60·(1 − (L − C)/P)
        return max(0.0, 60 * (1 - (limit - current) / previous) - into) if previous else 0.0
    if current <= 0:  # a limit of 0 lets nothing in: say a minute
        return 60.0
    # Next minute: C·(1 − t/60) < L  ⇔  t > 60·(1 − L/C).
    return 60 - into + 60 * (1 - limit / current)


def retry_after_s(current: int, previous: int, limit: int, now: float) -> int:
    """The whole seconds to name in ``Retry-After``: the first one strictly after the
    window falls below ``limit`` (a wait of 5.999… from rounding is the 6 s at which the
    window is still exactly full)."""
    return math.floor(seconds_until_below(current, previous, limit, now) + 1e-6) + 1


class MemoryCounters:
    """For a single gateway process (``serve`` refuses several without Redis)."""

    def __init__(self) -> None:
        self._log: dict[str, deque[float]] = {}
        self._tokens: dict[tuple[str, int], int] = {}
        self._periods: dict[tuple[str, str], list[int]] = {}
        self._loading: dict[tuple[str, str], asyncio.Lock] = {}
        # Keys with calls in flight: call id → lease end.
        self._slots: dict[str, dict[str, float]] = {}


    async def take_request(self, name: str, per_minute: int, now: float) -> float | None:
        log = self._log.setdefault(name, deque())
        while log and log[0] <= now - 60:
            log.popleft()
        if len(log) >= per_minute:
            return log[0] + 60 - now
        log.append(now)
        return None

    async def window_tokens(self, name: str, now: float) -> tuple[int, int]:
        minute = int(now // 60)
        return self._tokens.get((name, minute), 0), self._tokens.get((name, minute - 1), 0)

    async def add_tokens(self, name: str, tokens: int, now: float) -> None:
        minute = int(now // 60)
        self._tokens[(name, minute)] = self._tokens.get((name, minute), 0) + tokens
        if len(self._tokens) > 10_000:  # forget minutes that no longer count
            for key in [k for k in self._tokens if k[1] < minute - 1]:
                del self._tokens[key]

    async def period_used(self, name: str, period: str, ttl_s: int,
                          load: Loader) -> tuple[int, int]:
        key = (name, period)
        if key not in self._periods:
            lock = self._loading.setdefault(key, asyncio.Lock())
            async with lock:
                if key not in self._periods:
                    tokens, cost = await load()
                    # One period a key: yesterday's daily counter is never asked for again
                    # (kept, a day a key, it would grow for ever).
                    for stale in [k for k in self._periods if k[0] == name]:
                        del self._periods[stale]
                    self._periods[key] = [tokens, cost]
            if self._loading.get(key) is lock:
                del self._loading[key]
        tokens, cost = self._periods[key]
        return tokens, cost

    async def add_period(self, name: str, period: str, tokens: int, cost_nano: int) -> None:
        entry = self._periods.get((name, period))
        if entry is not None:
            entry[0] += tokens
            entry[1] += cost_nano

    async def acquire_slot(self, name: str, limit: int, call_id: str, lease_s: float,
                           now: float) -> bool:
        # Leased as in Redis: a slot a failure in the gateway never gave back ends too.
        slots = self._slots.setdefault(name, {})
        for expired in [held for held, end in slots.items() if end <= now]:
            del slots[expired]
        if len(slots) >= limit:
            return False
        slots[call_id] = now + lease_s
        return True

    async def release_slot(self, name: str, call_id: str) -> None:
        slots = self._slots.get(name)
        if slots is not None:
            slots.pop(call_id, None)
            if not slots:
                del self._slots[name]

    async def close(self) -> None:
        return None


class RedisCounters:
    """Shared by every gateway process; each operation is one atomic script."""

    def __init__(self, url: str) -> None:
        import redis.asyncio as redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        self._errors = (RedisError, OSError, TimeoutError)
        self._redis = redis.Redis.from_url(
            url, decode_responses=True, socket_connect_timeout=REDIS_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S, retry=Retry(NoBackoff(), 1))
        self._sliding_log = self._redis.register_script(_SLIDING_LOG)
        self._add_tokens = self._redis.register_script(_ADD_TOKENS)
        self._period_init = self._redis.register_script(_PERIOD_INIT)
        self._period_add = self._redis.register_script(_PERIOD_ADD)
        self._acquire_slot = self._redis.register_script(_ACQUIRE_SLOT)

    @contextlib.contextmanager
    def _unavailable_on_error(self) -> Iterator[None]:
        try:
            yield
        except self._errors as exc:
            first_line = (str(exc).strip().splitlines() or [""])[0][:200]
            raise CountersUnavailable(f"Redis: {exc.__class__.__name__}: {first_line}") \
                from exc

    async def ping(self) -> None:
        with self._unavailable_on_error():
            await self._redis.ping()

    async def take_request(self, name: str, per_minute: int, now: float) -> float | None:
        with self._unavailable_on_error():
            allowed, wait = await self._sliding_log(
                keys=[f"{REDIS_PREFIX}rpm:{name}"],
                args=[repr(now), per_minute, uuid.uuid4().hex])
        return None if int(allowed) == 1 else float(wait)

    async def window_tokens(self, name: str, now: float) -> tuple[int, int]:
        minute = int(now // 60)
        with self._unavailable_on_error():
            current, previous = await self._redis.mget(
                f"{REDIS_PREFIX}tpm:{name}:{minute}", f"{REDIS_PREFIX}tpm:{name}:{minute - 1}")
        return int(current or 0), int(previous or 0)

    async def add_tokens(self, name: str, tokens: int, now: float) -> None:
        with self._unavailable_on_error():
            await self._add_tokens(keys=[f"{REDIS_PREFIX}tpm:{name}:{int(now // 60)}"],
                                   args=[tokens])

    async def period_used(self, name: str, period: str, ttl_s: int,
                          load: Loader) -> tuple[int, int]:
        tokens_key = f"{REDIS_PREFIX}quota:{name}:{period}:tokens"
        cost_key = f"{REDIS_PREFIX}quota:{name}:{period}:cost"
        with self._unavailable_on_error():
            tokens, cost = await self._redis.mget(tokens_key, cost_key)
        if tokens is None or cost is None:
            loaded_tokens, loaded_cost = await load()
            with self._unavailable_on_error():
                tokens, cost = await self._period_init(
                    keys=[tokens_key, cost_key], args=[loaded_tokens, loaded_cost, ttl_s])
        return int(tokens), int(cost)

    async def add_period(self, name: str, period: str, tokens: int, cost_nano: int) -> None:
        with self._unavailable_on_error():
            await self._period_add(keys=[f"{REDIS_PREFIX}quota:{name}:{period}:tokens",
                                         f"{REDIS_PREFIX}quota:{name}:{period}:cost"],
                                   args=[tokens, cost_nano])

    async def acquire_slot(self, name: str, limit: int, call_id: str, lease_s: float,
                           now: float) -> bool:
        with self._unavailable_on_error():
            acquired = await self._acquire_slot(
                keys=[f"{REDIS_PREFIX}slots:{name}"],
                args=[repr(now), limit, call_id, repr(now + lease_s), repr(lease_s)])
        return int(acquired) == 1

    async def release_slot(self, name: str, call_id: str) -> None:
        with self._unavailable_on_error():
            await self._redis.zrem(f"{REDIS_PREFIX}slots:{name}", call_id)

    async def close(self) -> None:
        await self._redis.aclose()
