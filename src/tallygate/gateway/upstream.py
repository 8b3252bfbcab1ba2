"""The one pooled HTTP client to every upstream, and where each public model goes.

The pool is bounded (``upstream_max_connections``), and so is a call's wait for a connection
of it (``upstream_pool_wait_s``): aiohttp 3.14's ``ClientTimeout`` has no bound of its own
for that wait (its ``connect`` covers the wait and the connecting together), so the wait is
timed from aiohttp's ``on_connection_queued_start`` / ``_end`` trace signals, which the
connector sends from the waiting call's own task (aiohttp/connector.py,
``_wait_for_available_connection``).
"""

from __future__ import annotations

import asyncio
import logging
import os
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from tallygate.config import Route
from tallygate.domain.categories import category_for_endpoint

log = logging.getLogger("tallygate.gateway")
# What the client holds of one upstream response before it stops reading the socket (twice
# this, or a quarter as many chunks, by aiohttp's flow control). aiohttp's 64 KB lets a
# stream whose upstream outruns the relay queue 4 096 small events: 20 such streams took
# 10 MB more than short ones and kept it; at 16 KB they take 3 MB (docs/benchmarks.md).
READ_BUFFER_BYTES = 16 * 1024


@dataclass(frozen=True, slots=True)
class Upstream:
    """A route resolved for use: the credential read from the environment once, at start.
    The URL comes only from configuration, never from a client."""

    route: Route
    credential: str | None
    # Built once: parsing a URL and building a header mapping per call is measurable.
    request_headers: CIMultiDictProxy[str] = field(init=False, repr=False, compare=False)
    _urls: dict[str, URL] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        headers = CIMultiDict({"content-type": "application/json"})
        if self.credential:
            headers["authorization"] = f"Bearer {self.credential}"
        object.__setattr__(self, "request_headers", CIMultiDictProxy(headers))
        object.__setattr__(self, "_urls", {})

    @property
    def model(self) -> str:
        return self.route.model

    @property
    def upstream_model(self) -> str:
        return self.route.upstream_model or self.route.model

    def url(self, suffix: str) -> str:
        return self.route.base_url.rstrip("/") + suffix

    def endpoint_url(self, suffix: str) -> URL:
        url = self._urls.get(suffix)
        if url is None:
            url = self._urls[suffix] = URL(self.url(suffix))
        return url

    def category(self, endpoint: str) -> str:
        return self.route.category or category_for_endpoint(endpoint)

    def __repr__(self) -> str:  # never show the credential
        return f"Upstream(model={self.model!r}, base_url={self.route.base_url!r})"


def resolve_upstreams(routes: list[Route]) -> dict[str, Upstream]:
    upstreams = {}
    for route in routes:
        credential = None
        if route.api_key_env:
            credential = os.environ.get(route.api_key_env)
            if not credential:
                log.warning("route %s: environment variable %s is not set; calling the "
                            "upstream without a credential", route.model, route.api_key_env)
        upstreams[route.model] = Upstream(route, credential)
    return upstreams


class UpstreamBusy(Exception):
    """No pooled upstream connection came free within ``upstream_pool_wait_s``."""


class _PoolWait:
    """One request's wait for a pooled connection: an ``asyncio.timeout`` scope with no
    deadline but while the request is queued for a connection."""

    __slots__ = ("deadline", "scope")

    def __init__(self) -> None:
        self.scope = asyncio.timeout(None)
        self.deadline: float | None = None


async def post_upstream(client: aiohttp.ClientSession, url: Any, *, data: Any,
                        headers: Any) -> aiohttp.ClientResponse:
    """``client.post`` whose wait for a pooled connection is bounded (the client's
    ``pool_wait_s``): :class:`UpstreamBusy` after it. The response is the caller's to
    release (or to use as ``async with response``)."""
    waiting = _PoolWait()
    try:
        async with waiting.scope:
            return await client.post(url, data=data, headers=headers,
                                     trace_request_ctx=waiting)
    except TimeoutError:
        if waiting.scope.expired():
            raise UpstreamBusy from None
        raise  # the upstream's own timeout


def _pool_wait_trace(pool_wait_s: float) -> aiohttp.TraceConfig:
    async def queued(session: Any, context: Any, params: Any) -> None:
        waiting = context.trace_request_ctx
        if isinstance(waiting, _PoolWait):  # queued again after a lost race: same deadline
            if waiting.deadline is None:
                waiting.deadline = asyncio.get_running_loop().time() + pool_wait_s
            waiting.scope.reschedule(waiting.deadline)

    async def dequeued(session: Any, context: Any, params: Any) -> None:
        waiting = context.trace_request_ctx
        if isinstance(waiting, _PoolWait):
            waiting.scope.reschedule(None)

    trace = aiohttp.TraceConfig()
    trace.on_connection_queued_start.append(queued)
    trace.on_connection_queued_end.append(dequeued)
    return trace


def make_client(connect_timeout_s: float, read_timeout_s: float, *,
                max_connections: int = 2000,
                pool_wait_s: float = 5.0) -> aiohttp.ClientSession:
    """aiohttp rather than httpx: its client costs far less CPU per call, and the client is
    the hot path (about a quarter of what a relayed call costs, docs/benchmarks.md).

    No cookie jar: one client serves every API key, so a cookie an upstream set for one
    caller must never ride along on another's call. No ``Accept-Encoding``: bodies are
    passed through undecoded, so the upstream must not compress them (the client would get
    gzip bytes without the header saying so, and the usage could not be read). A small
    read buffer: a stream's memory must not depend on how far its upstream runs ahead.
    Calls made with :func:`post_upstream` wait at most ``pool_wait_s`` for one of the
    ``max_connections``."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max_connections, limit_per_host=0,
                                       keepalive_timeout=30, ttl_dns_cache=300),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout_s,
                                      sock_read=read_timeout_s),
        auto_decompress=False,
        skip_auto_headers=("User-Agent", "Accept-Encoding"),
        cookie_jar=aiohttp.DummyCookieJar(),
        read_bufsize=READ_BUFFER_BYTES,
        trace_configs=[_pool_wait_trace(pool_wait_s)],
    )
