"""Soak: a steady rate through the gateway for minutes on end, and SIGKILL under load.

    python bench/soak.py                      # 10 minutes at 50 calls/s, then 10 kill rounds
    python bench/soak.py --minutes 1          # a quick run
    python bench/soak.py --kill-rounds 0      # the soak only

The soak sends calls at a fixed rate (open loop: a call's latency counts from the moment it
was due, so a stall cannot hide by slowing the sender), streamed and plain mixed, each body
shaped by a row of the Azure LLM inference trace (its input tokens as text, its output tokens
as ``max_tokens``). Every minute it records the latency percentiles of the calls due in that
minute and the gateway's resident memory, open files and CPU; the drift is the last minute
against the first full one after warm-up. At the end every answered call is looked up in the
ledger by its ``x-request-id``.

The kill rounds run the gateway in the default (batched) and in strict durability, send calls
at a higher rate, SIGKILL it at a random moment, and count the answered calls missing from the
ledger and how long before the kill each was answered. Results go to
``bench/results/soak.json`` and the ``soak`` section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sqlite3
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from gateway_stack import (
    MODEL,
    Server,
    cpu_seconds,
    prepare_tallygate,
    rss_mb,
    start_fake_upstream,
    start_tallygate,
)
from report import (
    LoadMonitor,
    command_line,
    machine,
    markdown_table,
    now_utc,
    percentile,
    write_doc_section,
    write_json,
)
from tallygate.demo.trace import load_trace

MAX_IN_FLIGHT = 512
WARM_UP_MINUTES = 1


@dataclass(frozen=True, slots=True)
class Call:
    due: float  # loop time the call was due
    ended: float
    status: int | None  # None: no answer (connection failed)
    complete: bool  # the whole answer arrived
    stream: bool
    request_id: str | None

    @property
    def latency_ms(self) -> float:
        return (self.ended - self.due) * 1000

    @property
    def ok(self) -> bool:
        return self.status == 200 and self.complete


@dataclass(slots=True)
class Minute:
    minute: int
    calls: int = 0
    ok: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    stream_p50_ms: float = 0.0
    plain_p50_ms: float = 0.0
    rss_mb: float = 0.0
    open_files: int = 0
    gateway_cores: float = 0.0
    other_cores: float = 0.0  # busy with work that is not this benchmark's


@dataclass(slots=True)
class Bodies:
    """Request bodies shaped by the trace: one per (input, output) row, cycled."""

    pairs: list[tuple[int, int]]
    stream_share: float
    rng: random.Random = field(default_factory=lambda: random.Random(6))

    def next(self, number: int) -> tuple[dict[str, Any], bool]:
        input_tokens, output_tokens = self.pairs[number % len(self.pairs)]
        stream = self.rng.random() < self.stream_share
        words = max(1, min(input_tokens, 16_000))
        body: dict[str, Any] = {
            "model": MODEL, "max_tokens": max(1, output_tokens),
            "messages": [{"role": "user", "content": f"soak {number} " + "tok " * words}]}
        if stream:
            chunks = max(2, min(output_tokens // 16, 32))
            body |= {"stream": True, "fake": {"latency_ms": 20, "chunks": chunks,
                                               "chunk_delay_ms": 5}}
        else:
            body["fake"] = {"latency_ms": 20}
        return body, stream


async def one_call(session: aiohttp.ClientSession, url: str, key: str, body: dict[str, Any],
                   stream: bool, due: float, gate: asyncio.Semaphore) -> Call:
    loop = asyncio.get_running_loop()
    async with gate:
        try:
            async with session.post(f"{url}/v1/chat/completions", json=body,
                                    headers={"Authorization": f"Bearer {key}"}) as response:
                content = await response.read()
                complete = not stream or response.status != 200 or content.rstrip().endswith(
                    b"data: [DONE]")
                return Call(due, loop.time(), response.status, complete, stream,
                            response.headers.get("x-request-id"))
        except (TimeoutError, aiohttp.ClientError, OSError):
            return Call(due, loop.time(), None, False, stream, None)


async def steady_load(url: str, key: str, bodies: Bodies, rate: float, seconds: float,
                      on_minute: Any = None) -> list[Call]:
    """Calls due every 1/rate seconds for ``seconds``; ``on_minute(n)`` after each minute."""
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(MAX_IN_FLIGHT)
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=MAX_IN_FLIGHT)
    async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
        start = loop.time()
        tasks: list[asyncio.Task[Call]] = []
        minute = 0
        for number in range(int(seconds * rate)):
            due = start + number / rate
            delay = due - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            if on_minute is not None and due - start >= (minute + 1) * 60:
                minute += 1
                on_minute(minute)
            body, stream = bodies.next(number)
            tasks.append(asyncio.create_task(one_call(session, url, key, body, stream, due,
                                                      gate)))
        calls = await asyncio.gather(*tasks)
        if on_minute is not None:
            on_minute(minute + 1)
        return [c for c in calls if c is not None]


def open_files(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return 0


def ledger_request_ids(database: Path) -> list[str]:
    with sqlite3.connect(database) as conn:
        rows = conn.execute("SELECT metadata FROM calls WHERE metadata IS NOT NULL").fetchall()
    return [json.loads(m)["request_id"] for (m,) in rows if "request_id" in m]


# -- the soak ------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Sample:
    """The gateway's memory and files, and CPU seconds so far: the machine's (all cores), the
    gateway's, and the soak's own (this load generator and the fake upstream)."""

    at: float
    rss_mb: float
    open_files: int
    gateway_cpu: float
    soak_cpu: float
    machine_cpu: float

    @classmethod
    def take(cls, gateway: Server, upstream: Server) -> Sample:
        times = os.times()
        return cls(time.monotonic(), rss_mb(gateway.pid), open_files(gateway.pid),
                   cpu_seconds(gateway.pid),
                   times.user + times.system + cpu_seconds(upstream.pid), machine_busy())


def machine_busy() -> float:
    """CPU seconds all cores have been busy since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / os.sysconf("SC_CLK_TCK")


def run_soak(workdir: Path, minutes: float, rate: float, stream_share: float,
             say: Any) -> dict[str, Any]:
    upstream = start_fake_upstream(workdir)
    setup = prepare_tallygate(workdir, upstream)
    gateway = start_tallygate(workdir, setup, "soak-tallygate.log")
    trace = load_trace()["conv"].token_pairs
    bodies = Bodies(list(trace), stream_share)
    samples = {0: Sample.take(gateway, upstream)}

    def sample(minute: int) -> None:
        samples[minute] = Sample.take(gateway, upstream)
        say(f"  minute {minute}: gateway RSS {samples[minute].rss_mb:.1f} MB, "
            f"{samples[minute].open_files} open files")

    monitor = LoadMonitor()
    try:
        say(f"soak: {minutes:g} min at {rate:g} calls/s ({stream_share:.0%} streamed)")
        calls = asyncio.run(steady_load(gateway.base_url, setup.api_key, bodies, rate,
                                        minutes * 60, sample))
        load = monitor.finish()
        # Idle past every keep-alive (the gateway's upstream pool keeps one 30 s): what is
        # still held now is held for good.
        time.sleep(35)
        idle = Sample.take(gateway, upstream)
    finally:
        gateway.stop()
        upstream.stop()
    stored = ledger_request_ids(workdir / "tallygate.db")
    answered = [c for c in calls if c.ok]
    missing = {c.request_id for c in answered} - set(stored)
    first_due = min(c.due for c in calls)
    rows = per_minute(calls, first_due, samples)
    return {"minutes": minutes, "rate": rate, "stream_share": stream_share,
            "calls": len(calls), "answered": len(answered),
            "failed": len(calls) - len(answered), "missing_from_ledger": len(missing),
            "stored_twice": len(stored) - len(set(stored)), "per_minute": rows,
            "before": {"rss_mb": round(samples[0].rss_mb, 1),
                       "open_files": samples[0].open_files},
            "idle_after": {"rss_mb": round(idle.rss_mb, 1), "open_files": idle.open_files},
            "drift": drift(rows), "load": load}


def per_minute(calls: list[Call], first_due: float,
               samples: dict[int, Sample]) -> list[dict[str, Any]]:
    rows = []
    for minute in sorted(m for m in samples if m > 0):
        these = [c for c in calls if minute - 1 <= (c.due - first_due) / 60 < minute]
        if not these:
            continue
        now, before = samples[minute], samples[minute - 1]
        wall = max(now.at - before.at, 1e-9)
        gateway = (now.gateway_cpu - before.gateway_cpu) / wall
        soak = (now.soak_cpu - before.soak_cpu) / wall
        busy = (now.machine_cpu - before.machine_cpu) / wall

        def p50(selected: list[Call]) -> float:
            return round(percentile([c.latency_ms for c in selected if c.ok], 50), 1)

        rows.append(asdict(Minute(
            minute=minute, calls=len(these), ok=sum(c.ok for c in these), p50_ms=p50(these),
            p99_ms=round(percentile([c.latency_ms for c in these if c.ok], 99), 1),
            stream_p50_ms=p50([c for c in these if c.stream]),
            plain_p50_ms=p50([c for c in these if not c.stream]),
            rss_mb=round(now.rss_mb, 1), open_files=now.open_files,
            gateway_cores=round(gateway, 2),
            other_cores=round(max(busy - gateway - soak, 0.0), 2))))
    return rows


def drift(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The last minute against the first full one after warm-up (the first, if that is all
    there is); and the RSS slope over the same minutes, by least squares."""
    steady = rows[WARM_UP_MINUTES:] or rows
    first, last = steady[0], steady[-1]
    xs = [r["minute"] for r in steady]
    ys = [r["rss_mb"] for r in steady]
    mean_x, mean_y = sum(xs) / len(xs), sum(ys) / len(ys)
    spread = sum((x - mean_x) ** 2 for x in xs)
    slope = (sum((x - mean_x) * (y - mean_y) for x, y in zip(xs, ys, strict=True)) / spread
             if spread else 0.0)
    return {"from_minute": first["minute"], "to_minute": last["minute"],
            "p50_ms": round(last["p50_ms"] - first["p50_ms"], 1),
            "p99_ms": round(last["p99_ms"] - first["p99_ms"], 1),
            "rss_mb": round(last["rss_mb"] - first["rss_mb"], 1),
            "rss_mb_per_minute": round(slope, 2),
            "open_files": last["open_files"] - first["open_files"]}


# -- SIGKILL rounds ------------------------------------------------------------------------

def run_kills(workdir: Path, rounds: int, rate: float, stream_share: float,
              say: Any) -> dict[str, Any]:
    upstream = start_fake_upstream(workdir)
    setup = prepare_tallygate(workdir, upstream)
    bodies = Bodies(list(load_trace()["conv"].token_pairs), stream_share)
    results: dict[str, list[dict[str, Any]]] = {"batched": [], "strict": []}
    rng = random.Random(7)
    try:
        for number in range(rounds):
            for mode in ("batched", "strict"):
                setup.env["TALLYGATE_DURABILITY"] = mode
                gateway = start_tallygate(workdir, setup, f"kill-{mode}-{number}.log")
                kill_after = rng.uniform(2.0, 3.0)
                outcome = asyncio.run(load_and_kill(gateway, setup.api_key, bodies, rate,
                                                    kill_after))
                stored = set(ledger_request_ids(workdir / "tallygate.db"))
                answered, killed_at = outcome
                lost = [killed_at - c.ended for c in answered if c.request_id not in stored]
                results[mode].append({
                    "answered": len(answered), "lost": len(lost),
                    "oldest_lost_ms": round(max(lost) * 1000, 1) if lost else None})
                say(f"  kill round {number + 1} ({mode}): {len(answered)} answered, "
                    f"{len(lost)} lost")
    finally:
        upstream.stop()
    summary = {}
    for mode, rows in results.items():
        ages = [r["oldest_lost_ms"] for r in rows if r["oldest_lost_ms"] is not None]
        summary[mode] = {"rounds": len(rows), "answered": sum(r["answered"] for r in rows),
                         "lost": sum(r["lost"] for r in rows),
                         "lost_max_per_round": max((r["lost"] for r in rows), default=0),
                         "oldest_lost_ms": max(ages, default=None)}
    return {"rate": rate, "per_round": results, "summary": summary}


async def load_and_kill(gateway: Server, key: str, bodies: Bodies, rate: float,
                        kill_after: float) -> tuple[list[Call], float]:
    loop = asyncio.get_running_loop()
    killed_at = 0.0

    async def kill() -> None:
        nonlocal killed_at
        await asyncio.sleep(kill_after)
        killed_at = loop.time()
        os.kill(gateway.pid, signal.SIGKILL)
        await asyncio.to_thread(gateway.process.wait)

    killer = asyncio.create_task(kill())
    calls = await steady_load(gateway.base_url, key, bodies, rate, kill_after + 0.5)
    await killer
    return [c for c in calls if c.ok and c.ended <= killed_at], killed_at


# -- report --------------------------------------------------------------------------------

def markdown(result: dict[str, Any]) -> str:
    soak = result.get("soak")
    lines = ["## Soak: hours in minutes, and SIGKILL under load", "",
             f"`{result['command']}` — {result['when']}, {result['machine']['cpu']}, "
             f"{result['machine']['cores']} cores, {result['machine']['ram_gib']} GiB, "
             f"Python {result['machine']['python']}, SQLite {result['machine']['sqlite']}.", ""]
    if soak:
        load = soak["load"]
        lines += [
            f"{soak['minutes']:g} minute{'s' if soak['minutes'] != 1 else ''} at "
            f"{soak['rate']:g} calls/s through one gateway "
            f"process (SQLite, batched durability), {soak['stream_share']:.0%} of them "
            "streamed, bodies shaped by the Azure LLM trace; the fake upstream answers after "
            "20 ms, streams in 2–32 chunks 5 ms apart. Latency is end to end, from the moment "
            "a call was due. The machine was shared with other work (other benchmarks): its "
            "cores are in the last column; the load average was "
            f"{load['loadavg_1m_before']:g} before and {load['loadavg_1m_after']:g} after.",
            "",
            markdown_table(
                ["minute", "calls", "answered", "p50 ms", "p99 ms", "plain p50", "stream p50",
                 "RSS MB", "open files", "gateway cores", "other work, cores"],
                [[str(r["minute"]), str(r["calls"]), str(r["ok"]), f"{r['p50_ms']:g}",
                  f"{r['p99_ms']:g}", f"{r['plain_p50_ms']:g}", f"{r['stream_p50_ms']:g}",
                  f"{r['rss_mb']:g}", str(r["open_files"]), f"{r['gateway_cores']:g}",
                  f"{r['other_cores']:g}"]
                 for r in soak["per_minute"]]), ""]
        d = soak["drift"]
        before, idle = soak["before"], soak["idle_after"]
        lines += [
            f"**Drift**, minute {d['to_minute']} against minute {d['from_minute']}: p50 "
            f"{d['p50_ms']:+g} ms, p99 {d['p99_ms']:+g} ms, RSS {d['rss_mb']:+g} MB "
            f"({d['rss_mb_per_minute']:+g} MB/min by least squares), open files "
            f"{d['open_files']:+d}. **Idle 35 s after the load** (past every keep-alive): RSS "
            f"{idle['rss_mb']:g} MB, {idle['open_files']} open files (before the load: "
            f"{before['rss_mb']:g} MB, {before['open_files']}). **Ledger**: "
            f"{soak['answered']:,} calls answered, {soak['missing_from_ledger']} missing from "
            f"the ledger, {soak['stored_twice']} stored twice; {soak['failed']} calls "
            "failed.", ""]
    kills = result.get("kills")
    if kills:
        rows = []
        for mode, s in kills["summary"].items():
            rows.append([mode, str(s["rounds"]), f"{s['answered']:,}", str(s["lost"]),
                         str(s["lost_max_per_round"]),
                         "—" if s["oldest_lost_ms"] is None else f"{s['oldest_lost_ms']:g}"])
        lines += [
            f"**SIGKILL under load**: {kills['rate']:g} calls/s, the gateway killed at a "
            "random moment 2–3 s in, each round on the same SQLite ledger "
            "(`flush_interval_ms = 50`). \"Lost\": answered in full, not in the ledger; "
            "\"oldest lost\": how long before the kill the oldest of them was answered.", "",
            markdown_table(["durability", "rounds", "answered", "lost", "most lost in a round",
                            "oldest lost, ms"], rows), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rate", type=float, default=50.0, help="soak calls per second")
    parser.add_argument("--stream-share", type=float, default=0.3)
    parser.add_argument("--kill-rounds", type=int, default=10)
    parser.add_argument("--kill-rate", type=float, default=200.0)
    parser.add_argument("--no-docs", action="store_true", help="do not touch the docs")
    args = parser.parse_args()

    def say(message: str) -> None:
        print(message, flush=True)

    result: dict[str, Any] = {"command": command_line(), "when": now_utc(),
                              "machine": machine()}
    with tempfile.TemporaryDirectory(prefix="tallygate-soak-") as temporary:
        workdir = Path(temporary)
        if args.minutes > 0:
            (workdir / "soak").mkdir()
            result["soak"] = run_soak(workdir / "soak", args.minutes, args.rate,
                                      args.stream_share, say)
        if args.kill_rounds > 0:
            (workdir / "kills").mkdir()
            say(f"SIGKILL: {args.kill_rounds} rounds per durability mode at "
                f"{args.kill_rate:g} calls/s")
            result["kills"] = run_kills(workdir / "kills", args.kill_rounds, args.kill_rate,
                                        args.stream_share, say)
    say(f"results: {write_json('soak', result)}")
    text = markdown(result)
    print(text)
    if not args.no_docs:
        say(f"docs: {write_doc_section('soak', text)}")


if __name__ == "__main__":
    main()
