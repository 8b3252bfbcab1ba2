"""Hostile clients for the abuse suite and ``bench/abuse.py``, and a well-behaved key's probe.

Each flood runs in its own process (``python -m tests.abuse.floods KIND URL ...``) so that its
CPU never shares a GIL with the probe whose latency is measured: what the probe sees is the
gateway's doing. The floods speak raw HTTP/1.1 over asyncio streams (cheap per connection);
each prints one JSON line with what it saw (status counts, seconds) when it ends.

Kinds:

- ``unknown``: ``--count`` calls with made-up keys (each new), ``--connections`` at once,
  keep-alive.
- ``revoked``: the same with one key (``--key``) that exists but is disabled.
- ``slowloris``: ``--connections`` connections that each send a request head, then its body
  one byte every ``--pause`` seconds (``--phase body``), or the head itself one byte at a
  time (``--phase head``); each ends when the server answers or closes, or after
  ``--seconds``. With ``--key`` they trickle as that (valid) key's calls.
- ``slow-reader``: ``--connections`` streamed calls with a valid ``--key`` on sockets with a
  small receive buffer that never read; held ``--seconds``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

CHAT = "cltech/deepseek-r1-32b"  # tests.reliability.support.CHAT: the route start_gateway sets


def chat_bytes(*, stream: bool = False, fake: dict[str, Any] | None = None,
               model: str = CHAT) -> bytes:
    body: dict[str, Any] = {"model": model, "max_tokens": 40,
                            "messages": [{"role": "user", "content": "hello"}]}
    if stream:
        body["stream"] = True
    if fake:
        body["fake"] = fake
    return orjson.dumps(body)


def request_head(key: str, length: int) -> bytes:
    return (b"POST /v1/chat/completions HTTP/1.1\r\nhost: 127.0.0.1\r\n"
            b"authorization: Bearer " + key.encode() + b"\r\n"
            b"content-type: application/json\r\n"
            b"content-length: " + str(length).encode() + b"\r\n\r\n")


def _port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """One HTTP/1.1 response with a content-length (every refusal has one)."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return status, await reader.readexactly(length)


async def keyed_flood(url: str, keys: list[str], connections: int, model: str = CHAT,
                      rate: float = 0) -> dict[str, Any]:
    """Every key in ``keys`` once, over ``connections`` keep-alive connections; at most
    ``rate`` calls a second in all when set, else as fast as the server answers."""
    body = chat_bytes(model=model)
    gap_s = connections / rate if rate else 0.0
    statuses: Counter[str] = Counter()
    queue = list(reversed(keys))
    started = time.perf_counter()

    async def connection() -> None:
        reader = writer = None
        due = time.perf_counter()
        while queue:
            if gap_s:
                due += gap_s
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
            key = queue.pop()
            try:
                if writer is None:
                    reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
                assert reader is not None
                writer.write(request_head(key, len(body)) + body)
                status, _ = await _read_response(reader)
                statuses[str(status)] += 1
            except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
                statuses[exc.__class__.__name__] += 1
                if writer is not None:
                    writer.close()
                reader = writer = None
        if writer is not None:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    return {"calls": len(keys), "statuses": dict(statuses),
            "seconds": time.perf_counter() - started}


async def slowloris(url: str, connections: int, *, phase: str, pause_s: float,
                    hold_s: float, key: str = "") -> dict[str, Any]:
    """Connections that trickle their request (with ``key``, else a made-up one, which is
    refused as soon as the head is in); how each ended and after how long."""
    body = chat_bytes()
    head = request_head(key or "sk-slowloris-" + secrets.token_hex(8), len(body))
    outcomes: Counter[str] = Counter()
    lasted: list[float] = []

    async def one() -> None:
        started = time.perf_counter()
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", _port(url))
        except OSError as exc:
            outcomes[f"connect {exc.__class__.__name__}"] += 1
            return
        trickle = head + body if phase == "head" else body
        if phase == "body":
            writer.write(head)
        answer = asyncio.ensure_future(reader.read(65536))
        try:
            for byte in trickle:
                done, _ = await asyncio.wait({answer}, timeout=pause_s)
                if done or time.perf_counter() - started > hold_s:
                    break
                writer.write(bytes([byte]))
            data = await asyncio.wait_for(answer, max(0.0, hold_s - (
                time.perf_counter() - started)))
            outcomes[data.split(b" ", 2)[1].decode() if data.startswith(b"HTTP/")
                     else "closed"] += 1
        except TimeoutError:
            outcomes["still open"] += 1
        except OSError:
            outcomes["closed"] += 1
        finally:
            answer.cancel()
            lasted.append(time.perf_counter() - started)
            writer.close()

    await asyncio.gather(*(one() for _ in range(connections)))
    return {"connections": connections, "outcomes": dict(outcomes),
            "longest_s": max(lasted, default=0.0)}


def slow_readers(url: str, key: str, connections: int, hold_s: float,
                 fake: dict[str, Any]) -> dict[str, Any]:
    """Streamed calls whose clients never read (a 4 kB receive window); held ``hold_s``."""
    body = chat_bytes(stream=True, fake=fake)
    sockets = []
    for _ in range(connections):
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect
        sock.connect(("127.0.0.1", _port(url)))
        sock.sendall(request_head(key, len(body)) + body)
        sockets.append(sock)
    time.sleep(hold_s)
    for sock in sockets:
        sock.close()
    return {"connections": connections, "held_s": hold_s}


# -- the well-behaved key ----------------------------------------------------------------------


@dataclass
class Probe:
    """A valid key's calls, one at a time every ``interval_s``, each timed (seconds)."""

    url: str
    key: str
    interval_s: float = 0.01
    body: bytes = field(default_factory=chat_bytes)
    latencies: list[float] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Probe:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[float]:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=60)
        return self.latencies

    def run_for(self, seconds: float) -> list[float]:
        self.start()
        time.sleep(seconds)
        return self.stop()

    def _run(self) -> None:
        headers = {"authorization": f"Bearer {self.key}", "content-type": "application/json"}
        with httpx.Client(base_url=self.url, timeout=30) as client:
            while not self._stop.is_set():
                started = time.perf_counter()
                response = client.post("/v1/chat/completions", content=self.body,
                                       headers=headers)
                self.latencies.append(time.perf_counter() - started)
                self.statuses[response.status_code] += 1
                self._stop.wait(self.interval_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("kind", choices=["unknown", "revoked", "slowloris", "slow-reader"])
    parser.add_argument("url")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--key", default="")
    parser.add_argument("--phase", choices=["head", "body"], default="body")
    parser.add_argument("--pause", type=float, default=0.5)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--fake", default="{}", help="the stream's fake controls (JSON)")
    parser.add_argument("--model", default=CHAT, help="the model the calls ask for")
    parser.add_argument("--rate", type=float, default=0,
                        help="calls a second in all (unknown, revoked); 0: as fast as answered")
    args = parser.parse_args(argv)
    if args.kind == "unknown":
        keys = ["sk-made-up-" + secrets.token_hex(16) for _ in range(args.count)]
        result = asyncio.run(keyed_flood(args.url, keys, args.connections, args.model,
                                         args.rate))
    elif args.kind == "revoked":
        result = asyncio.run(keyed_flood(args.url, [args.key] * args.count, args.connections,
                                         args.model, args.rate))
    elif args.kind == "slowloris":
        result = asyncio.run(slowloris(args.url, args.connections, phase=args.phase,
                                       pause_s=args.pause, hold_s=args.seconds, key=args.key))
    else:
        result = slow_readers(args.url, args.key, args.connections, args.seconds,
                              json.loads(args.fake))
    result["pid"] = os.getpid()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
