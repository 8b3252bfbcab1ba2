"""Building the gateway from settings."""

from __future__ import annotations

import ctypes

from tallygate.config import Settings
from tallygate.gateway.counters import Counters, MemoryCounters, RedisCounters
from tallygate.gateway.keycache import KeyCache
from tallygate.gateway.limits import Limits
from tallygate.gateway.proxy import Gateway
from tallygate.gateway.streaming import Drain
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
        key_cache=KeyCache(ledger.db, settings.key_cache_seconds,
                           unknown_per_s=settings.unknown_key_lookups_per_second),
        limits=Limits(counters, ledger, redis_failure=settings.redis_failure,
                      in_flight=recorder, concurrency_lease_s=settings.concurrency_lease_s),
        client=make_client(settings.upstream_connect_timeout_s, settings.upstream_timeout_s,
                           max_connections=settings.upstream_max_connections,
                           pool_wait_s=settings.upstream_pool_wait_s),
        upstreams=resolve_upstreams(settings.routes),
        strict=settings.durability == "strict",
        drain=Drain(settings.drain_timeout_s, settings.drain_max_bytes),
        client_idle_s=settings.client_idle_timeout_s,
        sse_max_event_bytes=settings.sse_max_event_bytes,
    )


def return_freed_memory() -> None:
    """Give the memory start-up freed (import-time scratch, schema building) back to the
    system: glibc keeps it mapped otherwise, and the idle process looks that much larger."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass
