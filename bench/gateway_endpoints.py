"""Streams of the other APIs the gateway relays: OpenAI's Responses API and Anthropic's
Messages API, each timed event by event against the same stream straight from the upstream.

Their events are named (``event: ...`` lines) and end with their own last event
(``response.completed``, ``message_stop``) instead of ``data: [DONE]``. The first token is the
first event that carries text (``response.output_text.delta``, ``content_block_delta``);
the fake upstream stamps every event with the moment it left (``sent_at``), so each event's
trip to the client is measured on the one clock of the machine.
"""

from __future__ import annotations

import asyncio
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import orjson

from gateway_load import percentile

CHUNKS = 16
CHUNK_DELAY_MS = 5


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str  # "responses", "anthropic"
    title: str
    path: str  # under the server's base URL
    model: str
    last_event: str
    first_token_event: str
    body: Callable[[str, int], bytes]  # (model, index) → request body
    # How each kind of server is authenticated with a key (the key is filled in later).
    auth_header: str = "authorization"


def _prompt(index: int) -> str:
    return (f"Request {index}: summarise yesterday's usage of API key #{index} per model, and "
            f"flag anything that looks like a spike in the last {index % 7 + 1} days.")


def _fake() -> dict[str, Any]:
    return {"chunks": CHUNKS, "chunk_delay_ms": CHUNK_DELAY_MS, "stamp": True}


def responses_body(model: str, index: int) -> bytes:
    return orjson.dumps({"model": model, "stream": True, "max_output_tokens": 256,
                         "instructions": "You are a careful analyst of LLM API usage.",
                         "input": _prompt(index), "fake": _fake()})


def anthropic_body(model: str, index: int) -> bytes:
    return orjson.dumps({"model": model, "stream": True, "max_tokens": 256, "system": [
        {"type": "text", "text": "You are a careful analyst of LLM API usage.",
         "cache_control": {"type": "ephemeral"}}],
        "messages": [{"role": "user", "content": _prompt(index)}], "fake": _fake()})


def scenarios(openai_model: str, anthropic_model: str) -> tuple[Scenario, ...]:
    return (
        Scenario("responses", "Responses API stream (POST /v1/responses)", "/v1/responses",
                 openai_model, "response.completed", "response.output_text.delta",
                 responses_body),
        Scenario("anthropic", "Anthropic Messages stream (POST /v1/messages)", "/v1/messages",
                 anthropic_model, "message_stop", "content_block_delta", anthropic_body,
                 auth_header="x-api-key"),
    )


@dataclass(frozen=True, slots=True)
class Peer:
    """One server a scenario is run against."""

    name: str  # "direct", "tallygate", "litellm"
    base_url: str  # http://127.0.0.1:PORT
    key: str | None  # sent in the scenario's auth header; None: none


@dataclass(slots=True)
class EventStream:
    status: int = 0
    arrivals: list[float] = field(default_factory=list)  # s from the request, every event
    first_token: float | None = None  # s from the request to the first text event
    transits: list[float] = field(default_factory=list)  # upstream → client, per event
    done: bool = False  # saw the scenario's last event
    error: str | None = None

    @property
    def complete(self) -> bool:
        return self.status == 200 and self.done and self.error is None


async def stream_events(session: aiohttp.ClientSession, url: str, headers: dict[str, str],
                        body: bytes, scenario: Scenario) -> EventStream:
    result = EventStream()
    started = time.perf_counter()
    try:
        async with session.post(url, data=body, headers=headers) as response:
            result.status = response.status
            tail = b""
            async for piece in response.content.iter_any():
                arrived = time.time()
                now = time.perf_counter() - started
                events = (tail + piece).replace(b"\r\n", b"\n").split(b"\n\n")
                tail = events.pop()
                for event in events:
                    data = next((line[5:] for line in event.split(b"\n")
                                 if line.startswith(b"data:")), None)
                    if data is None or data.strip() == b"[DONE]":
                        continue  # a peer may end a stream OpenAI's way as well
                    parsed = orjson.loads(data)
                    kind = parsed.get("type") if isinstance(parsed, dict) else None
                    if kind == "ping":
                        continue
                    result.arrivals.append(now)
                    if kind == scenario.first_token_event and result.first_token is None:
                        result.first_token = now
                    if kind == scenario.last_event:
                        result.done = True
                    if isinstance(parsed, dict) and "sent_at" in parsed:
                        result.transits.append(arrived - parsed["sent_at"])
    except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError) as exc:
        result.error = f"{exc.__class__.__name__}: {exc}"
    return result


def _headers(scenario: Scenario, peer: Peer) -> dict[str, str]:
    headers = {"content-type": "application/json"}
    if scenario.name == "anthropic":
        headers["anthropic-version"] = "2023-06-01"
    if peer.key is not None:
        headers[scenario.auth_header] = (peer.key if scenario.auth_header == "x-api-key"
                                         else f"Bearer {peer.key}")
    return headers


async def _run(scenario: Scenario, peer: Peer, *, count: int, concurrency: int,
               first_index: int) -> list[EventStream]:
    limit = asyncio.Semaphore(concurrency)
    timeout = aiohttp.ClientTimeout(total=300)
    url = peer.base_url + scenario.path
    headers = _headers(scenario, peer)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0),
                                     timeout=timeout) as session:

        async def one(index: int) -> EventStream:
            async with limit:
                return await stream_events(session, url, headers,
                                           scenario.body(scenario.model, index), scenario)

        return list(await asyncio.gather(*(one(first_index + i) for i in range(count))))


def probe(scenario: Scenario, peer: Peer) -> str | None:
    """Why this peer cannot run the scenario (it answers 404 or fails), or None."""
    result = asyncio.run(_run(scenario, peer, count=1, concurrency=1, first_index=0))[0]
    if result.status == 404:
        return f"{peer.name} answers 404 for {scenario.path}: the endpoint is not in this build"
    if not result.complete:
        return (f"{peer.name} did not complete a {scenario.path} stream (status "
                f"{result.status}, {result.error or 'no ' + scenario.last_event})")
    return None


def endpoint_streams(peers: list[Peer], scenario_list: tuple[Scenario, ...], *, streams: int,
                     say: Callable[[str], None],
                     absent: dict[str, str] | None = None) -> dict[str, Any]:
    """Each scenario against each peer that can run it; what a gateway adds is its figure
    minus direct's. A gateway that cannot is left out, and the reason kept (``absent``: the
    peers not started at all, and why)."""
    out: dict[str, Any] = {}
    for scenario in scenario_list:
        row: dict[str, Any] = {"title": scenario.title, "skipped": dict(absent or {})}
        say(f"  {scenario.title}")
        for peer in peers:
            why = probe(scenario, peer)
            if why is not None:
                row["skipped"][peer.name] = why
                say(f"    {peer.name:9} skipped: {why}")
                if peer.name == "direct":
                    break
                continue
            asyncio.run(_run(scenario, peer, count=4, concurrency=2, first_index=1))
            results = asyncio.run(_run(scenario, peer, count=streams, concurrency=4,
                                       first_index=1000))
            row[peer.name] = _figures(results)
            figures = row[peer.name]
            say(f"    {peer.name:9} first token p50 {figures['ttft_p50_ms']:.2f} ms, event "
                f"transit p50 {figures['transit_p50_ms']:.2f} ms, "
                f"{figures['complete']}/{figures['streams']} complete")
        direct = row.get("direct")
        for name in ("tallygate", "litellm"):
            mine = row.get(name)
            if mine is None or direct is None:
                continue
            mine["ttft_added_p50_ms"] = mine["ttft_p50_ms"] - direct["ttft_p50_ms"]
            mine["event_added_p50_ms"] = mine["transit_p50_ms"] - direct["transit_p50_ms"]
            mine["event_added_p99_ms"] = mine["transit_p99_ms"] - direct["transit_p99_ms"]
        out[scenario.name] = row
    return out


def _figures(results: list[EventStream]) -> dict[str, Any]:
    complete = [r for r in results if r.complete]
    ttft = [r.first_token for r in complete if r.first_token is not None]
    transits = [t for r in complete for t in r.transits]
    return {"streams": len(results), "complete": len(complete),
            "events_per_stream": statistics.median(len(r.arrivals) for r in complete)
            if complete else 0,
            "ttft_p50_ms": percentile(ttft, 50) * 1000,
            "ttft_p99_ms": percentile(ttft, 99) * 1000,
            "transit_p50_ms": percentile(transits, 50) * 1000,
            "transit_p99_ms": percentile(transits, 99) * 1000,
            "first_error": next((r.error or f"status {r.status}" for r in results
                                 if not r.complete), None)}


def endpoint_tables(results: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """One table a scenario: (title, header, rows), for the terminal and the docs."""
    tables = []
    labels = {"direct": "direct", "tallygate": "tallygate", "litellm": "LiteLLM"}
    for row in results.values():
        header = ["", "first token p50", "added", "event transit p50 / p99",
                  "each event added p50 / p99", "events", "complete"]
        rows = []
        for key, label in labels.items():
            figures = row.get(key)
            if figures is None:
                reason = row["skipped"].get(key, "not in this run")
                rows.append([label, "—", "", "", "", "", f"skipped: {reason}"])
                continue
            gateway = key != "direct"
            # A peer that re-encodes events drops the upstream's ``sent_at``: no transit.
            timed = not math.isnan(figures["transit_p50_ms"])
            rows.append([
                label, f"{figures['ttft_p50_ms']:.2f} ms",
                f"+{figures['ttft_added_p50_ms']:.2f} ms" if gateway else "",
                f"{figures['transit_p50_ms']:.2f} / {figures['transit_p99_ms']:.2f} ms"
                if timed else "— (events re-encoded, no upstream time)",
                f"+{figures['event_added_p50_ms']:.2f} / +{figures['event_added_p99_ms']:.2f} ms"
                if gateway and timed else "", f"{figures['events_per_stream']:g}",
                f"{figures['complete']}/{figures['streams']}"])
        tables.append((f"{row['title']}: {CHUNKS} text chunks {CHUNK_DELAY_MS} ms apart, "
                       "4 streams at a time", header, rows))
    return tables
