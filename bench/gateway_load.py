"""The load of the gateway benchmark: ``hey`` for request/response traffic, a small aiohttp
client that timestamps every event of a stream, and a freshness probe of the ledger.

``hey`` (the Debian package) is the load tool PRODUCT.md's anchors were measured with; it
prints percentiles to 0.1 ms. Streams need per-event timestamps, which ``hey`` cannot give.
"""

from __future__ import annotations

import asyncio
import math
import re
import shutil
import subprocess
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
import orjson

HEY = shutil.which("hey") or "/usr/bin/hey"


@dataclass(frozen=True, slots=True)
class HeyRun:
    requests: int
    rps: float
    p50_ms: float
    p99_ms: float
    statuses: dict[int, int]
    errors: int

    @property
    def ok(self) -> int:
        return sum(n for status, n in self.statuses.items() if 200 <= status < 300)

    @property
    def success_pct(self) -> float:
        total = self.requests + self.errors
        return 100.0 * self.ok / total if total else 0.0


def hey(url: str, body_file: Path, headers: dict[str, str], *, concurrency: int,
        duration_s: float, rate_per_worker: float | None = None,
        timeout_s: int = 20) -> HeyRun:
    """One ``hey -z`` run; ``rate_per_worker`` × ``concurrency`` is the offered rate."""
    argv = [HEY, "-z", f"{duration_s:g}s", "-c", str(concurrency), "-t", str(timeout_s),
            "-m", "POST", "-T", "application/json", "-D", str(body_file)]
    if rate_per_worker is not None:
        argv += ["-q", f"{rate_per_worker:g}"]
    for name, value in headers.items():
        argv += ["-H", f"{name}: {value}"]
    result = subprocess.run([*argv, url], capture_output=True, text=True,
                            timeout=duration_s + timeout_s + 60, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"hey failed ({result.returncode}): {result.stderr[-2000:]}")
    return parse_hey(result.stdout)


def parse_hey(text: str) -> HeyRun:
    rps = _number(r"Requests/sec:\s+([\d.]+)", text)
    percentile = {int(p): float(s) * 1000 for p, s in
                  re.findall(r"^\s+(\d+)%+ in ([\d.]+) secs", text, re.M)}
    statuses = {int(code): int(n) for code, n in
                re.findall(r"^\s+\[(\d{3})\]\s+(\d+) responses", text, re.M)}
    errors = 0
    if "Error distribution:" in text:
        errors = sum(int(n) for n in re.findall(
            r"^\s+\[(\d+)\]\s", text.split("Error distribution:", 1)[1], re.M))
    return HeyRun(sum(statuses.values()), rps, percentile.get(50, float("nan")),
                  percentile.get(99, float("nan")), statuses, errors)


def _number(pattern: str, text: str) -> float:
    found = re.search(pattern, text)
    return float(found.group(1)) if found else 0.0


# -- streams -----------------------------------------------------------------------------------


@dataclass(slots=True)
class StreamResult:
    status: int = 0
    arrivals: list[float] = field(default_factory=list)  # s from the request, per data event
    # s from leaving the upstream to reaching the client, per event the upstream stamped
    transits: list[float] = field(default_factory=list)
    done: bool = False  # saw ``data: [DONE]``
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == 200 and self.done and self.error is None


async def stream_once(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                      body: bytes, on_open: asyncio.Event | None = None) -> StreamResult:
    """One streamed call, every ``data:`` event timestamped as it arrives."""
    result = StreamResult()
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            result.status = response.status
            tail = b""
            async for piece in response.content.iter_any():
                arrived = time.time()
                now = time.perf_counter() - started
                data = tail + piece
                events = data.split(b"\n\n")
                tail = events.pop()
                for event in events:
                    if event.startswith(b"data:"):
                        result.arrivals.append(now)
                        if event[5:].strip() == b"[DONE]":
                            result.done = True
                        elif b'"sent_at"' in event:
                            result.transits.append(arrived - orjson.loads(event[5:])["sent_at"])
    except (aiohttp.ClientError, TimeoutError) as exc:
        result.error = f"{exc.__class__.__name__}: {exc}"
    return result


async def streams(url: str, headers: dict[str, str], body: bytes, *, count: int,
                  concurrency: int, timeout_s: float = 300) -> list[StreamResult]:
    """``count`` streams, ``concurrency`` at a time."""
    limit = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=0)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> StreamResult:
            async with limit:
                return await stream_once(session, url, headers, body)

        return list(await asyncio.gather(*(one() for _ in range(count))))


@dataclass(frozen=True, slots=True)
class ManyStreams:
    count: int
    complete: int
    peak_open: int  # streams that had started and not yet ended, at most, at once
    wall_s: float
    first_error: str | None


async def concurrent_streams(url: str, headers: dict[str, str], body: bytes, *, count: int,
                             timeout_s: float = 180) -> ManyStreams:
    """``count`` streams opened at once, each read to its end."""
    open_now = 0
    peak = 0
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    timeout = aiohttp.ClientTimeout(total=timeout_s)
    started = time.perf_counter()

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one() -> StreamResult:
            nonlocal open_now, peak
            result = StreamResult()
            try:
                async with session.post(url, data=body, headers=headers) as response:
                    result.status = response.status
                    open_now += 1
                    peak = max(peak, open_now)
                    try:
                        async for line in response.content:
                            if line.startswith(b"data:") and line[5:].strip() == b"[DONE]":
                                result.done = True
                    finally:
                        open_now -= 1
            except (aiohttp.ClientError, TimeoutError) as exc:
                result.error = f"{exc.__class__.__name__}: {exc}"
            return result

        results = await asyncio.gather(*(one() for _ in range(count)))
    errors = [r.error or f"status {r.status}, done={r.done}" for r in results
              if not r.complete]
    return ManyStreams(count, sum(r.complete for r in results), peak,
                       time.perf_counter() - started, errors[0] if errors else None)


# -- freshness ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Freshness:
    delays_s: list[float]  # per call: from its response's end until the summary counts it
    query_s: list[float]  # how long each summary query took


async def freshness(base_url: str, api_key: str, admin_token: str, body: bytes, *,
                    calls: int, poll_interval_s: float = 0.005,
                    give_up_s: float = 10.0) -> Freshness:
    """Calls one at a time; after each, the summary is polled until it counts the call.

    A call counts as seen at the end of the first summary answer that includes it (an upper
    bound of the true delay, by one query's time)."""
    summary = f"{base_url}/api/v1/usage/summary?period=1d"
    admin = {"authorization": f"Bearer {admin_token}"}
    gateway_headers = {"authorization": f"Bearer {api_key}",
                       "content-type": "application/json"}
    delays: list[float] = []
    queries: list[float] = []
    async with aiohttp.ClientSession() as session:

        async def counted() -> int:
            started = time.perf_counter()
            async with session.get(summary, headers=admin) as response:
                data = orjson.loads(await response.read())
            queries.append(time.perf_counter() - started)
            if response.status != 200:
                raise RuntimeError(f"summary answered {response.status}: {data}")
            return int(data["cards"]["model_calls"] or 0)

        expected = await counted()
        for _ in range(calls):
            async with session.post(f"{base_url}/v1/chat/completions", data=body,
                                    headers=gateway_headers) as response:
                await response.read()
                if response.status != 200:
                    raise RuntimeError(f"the gateway answered {response.status}")
            ended = time.perf_counter()
            expected += 1
            while await counted() < expected:
                if time.perf_counter() - ended > give_up_s:
                    raise RuntimeError(f"a call was not counted within {give_up_s} s")
                await asyncio.sleep(poll_interval_s)
            delays.append(time.perf_counter() - ended)
    return Freshness(delays, queries)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of unsorted values; NaN for none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def status_summary(statuses: dict[int, int]) -> str:
    return ", ".join(f"{code}×{n}" for code, n in sorted(Counter(statuses).items()))
