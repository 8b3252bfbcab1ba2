"""The gateway benchmark: tallygate against direct-to-upstream and LiteLLM proxy, one run.

    .venv/bin/python bench/gateway.py [--quick] [--skip-litellm] [--wait-quiet SECONDS]
    .venv/bin/python bench/gateway.py --endpoints-only   # the Responses and Anthropic streams

Everything on 127.0.0.1, one worker each, the same fake upstream (``tallygate
fake-upstream``, no artificial latency) behind both gateways, the same load tool. It measures
PRODUCT.md §9's gateway bars: overhead at fixed rates, throughput, streaming, 1 000
concurrent streams, freshness of the ledger and the idle footprint; prints a table with each
bar and writes ``bench/results/gateway.json`` and its section of ``docs/benchmarks.md``
(a ``--quick`` run only prints). The streams of the Responses and Anthropic Messages APIs are
measured the same way (``bench/gateway_endpoints.py``); a gateway that answers 404 for one
(a build without it) is left out of that scenario, and the reason printed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console

from gateway_endpoints import Peer, endpoint_streams, endpoint_tables, scenarios
from gateway_load import (
    HeyRun,
    StreamResult,
    concurrent_streams,
    freshness,
    hey,
    percentile,
    streams,
)
from gateway_report import Bar, print_table, render_console, write_docs
from gateway_stack import (
    ANTHROPIC_MODEL,
    LITELLM_VERSION,
    MODEL,
    Server,
    cpu_seconds,
    ensure_litellm,
    find_litellm,
    peak_rss_mb,
    prepare_tallygate,
    rss_mb,
    start_fake_upstream,
    start_litellm,
    start_tallygate,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "gateway.json"
DOCS = ROOT / "docs" / "benchmarks.md"
RATES = ((100, 5, 20), (200, 10, 20), (500, 25, 20))  # requests/s = workers × per worker
THROUGHPUT_CONCURRENCY = (16, 64)
STREAM_CHUNKS = 16
STREAM_CHUNK_DELAY_MS = 5
SETTLE_S = 2.0  # idle time before the "after start" memory reading

console = Console()


@dataclass(frozen=True, slots=True)
class Plan:
    quick: bool
    warmup_s: float
    duration_s: float
    streams: int
    concurrent_streams: int
    freshness_calls: int
    cold_starts: int

    @classmethod
    def of(cls, quick: bool) -> Plan:
        if quick:
            return cls(True, 1, 3, 40, 1000, 50, 1)
        return cls(False, 2, 10, 200, 1000, 200, 3)


@dataclass(frozen=True, slots=True)
class Target:
    name: str
    url: str  # the chat completions endpoint
    headers: dict[str, str]
    server: Server

    @property
    def pid(self) -> int:
        return self.server.pid


def chat_body(index: int, **extra: Any) -> bytes:
    """A chat request; ``index`` varies the prompt, so the fake upstream maps it to another
    trace row (another token count)."""
    prompt = (f"Request {index}: summarise yesterday's usage of API key #{index} per model, "
              f"and flag anything that looks like a spike in the last {index % 7 + 1} days.")
    return orjson.dumps({"model": MODEL, "max_tokens": 256, "messages": [
        {"role": "system", "content": "You are a careful analyst of LLM API usage."},
        {"role": "user", "content": prompt}], **extra})


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="short runs for a smoke test; prints only, writes nothing")
    parser.add_argument("--skip-litellm", action="store_true",
                        help="leave out the LiteLLM peer (its bars are then not judged)")
    parser.add_argument("--wait-quiet", type=float, default=0, metavar="SECONDS",
                        help="first wait up to this long for the 1-minute load average to "
                             "fall below 1.0 (others may share the machine)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the run's temporary directory (server logs, ledger)")
    parser.add_argument("--render-only", action="store_true",
                        help="measure nothing: rewrite the docs section from "
                             "bench/results/gateway.json (after editing the notes)")
    parser.add_argument("--endpoints-only", action="store_true",
                        help="run only the Responses and Anthropic stream scenarios, briefly, "
                             "with LiteLLM only if it is installed already; prints only")
    args = parser.parse_args(argv)
    if args.endpoints_only:
        return endpoints_only(skip_litellm=args.skip_litellm, keep=args.keep)
    if args.render_only:
        stored: dict[str, Any] = json.loads(RESULTS.read_text())
        bars = judge(stored["results"], with_litellm=stored["versions"]["litellm"] is not None)
        render_console(console, stored, bars)
        write_docs(DOCS, stored, bars)
        return 0 if all(bar.passed for bar in bars) else 1
    plan = Plan.of(args.quick)
    command = "python bench/gateway.py" + "".join(
        f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    _raise_open_files_limit()
    if args.wait_quiet:
        _wait_quiet(args.wait_quiet)
    load_before = _uptime()
    console.print(f"[bold]gateway benchmark[/bold]  load before: {load_before}")
    litellm_version = None if args.skip_litellm else ensure_litellm(
        lambda text: console.print(text, markup=False))
    if litellm_version:
        console.print(f"LiteLLM proxy {litellm_version} (pinned: litellm[proxy]=="
                      f"{LITELLM_VERSION})", markup=False)
    workdir = Path(tempfile.mkdtemp(prefix="tallygate-gateway-bench-"))
    servers: list[Server] = []
    started = time.perf_counter()
    cpu_before = _machine_cpu()
    try:
        results = run(plan, workdir, servers, with_litellm=not args.skip_litellm)
    finally:
        for server in reversed(servers):
            server.stop()
    others = _others_cores(cpu_before, _machine_cpu(), time.perf_counter() - started)
    if not args.keep:  # a failed run keeps it, for its logs
        shutil.rmtree(workdir, ignore_errors=True)
    load_after = _uptime()
    bars = judge(results, with_litellm=not args.skip_litellm)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": command,
        "quick": plan.quick,
        "elapsed_s": round(time.perf_counter() - started, 1),
        "machine": machine(),
        "load": {"before": load_before, "after": load_after,
                 "others_cores": round(others, 2)},
        "versions": versions(litellm_version),
        "tool": {"requests": f"hey {_hey_version()}", "streams": "aiohttp client "
                 "(bench/gateway_load.py)"},
        "plan": {"warmup_s": plan.warmup_s, "duration_s": plan.duration_s,
                 "streams": plan.streams, "stream_chunks": STREAM_CHUNKS,
                 "stream_chunk_delay_ms": STREAM_CHUNK_DELAY_MS,
                 "concurrent_streams": plan.concurrent_streams,
                 "freshness_calls": plan.freshness_calls, "cold_starts": plan.cold_starts},
        "results": results,
        "bars": [bar.as_dict() for bar in bars],
    }
    render_console(console, report, bars)
    if plan.quick:
        console.print("--quick: nothing written")
    else:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        write_docs(DOCS, report, bars)
        console.print(f"wrote {RESULTS.relative_to(ROOT)} and {DOCS.relative_to(ROOT)}")
    return 0 if all(bar.passed for bar in bars) else 1


def run(plan: Plan, workdir: Path, servers: list[Server], *, with_litellm: bool,
        ) -> dict[str, Any]:
    results: dict[str, Any] = {}
    say = console.print
    upstream = start_fake_upstream(workdir)
    servers.append(upstream)
    setup = prepare_tallygate(workdir, upstream)
    tallygate = start_tallygate(workdir, setup)
    servers.append(tallygate)
    idle: dict[str, Any] = {"tallygate": {"cold_start_s": [tallygate.started_s]}}
    time.sleep(SETTLE_S)
    idle["tallygate"]["rss_mb"] = [rss_mb(tallygate.pid)]
    targets = [Target("direct", f"{upstream.v1}/chat/completions", {}, upstream),
               Target("tallygate", f"{tallygate.v1}/chat/completions",
                      {"authorization": f"Bearer {setup.api_key}"}, tallygate)]
    if with_litellm:
        litellm = start_litellm(workdir, upstream)
        servers.append(litellm)
        time.sleep(SETTLE_S)
        idle["litellm"] = {"cold_start_s": [litellm.started_s],
                           "rss_mb": [rss_mb(litellm.pid)]}
        targets.append(Target("litellm", f"{litellm.v1}/chat/completions",
                              {"authorization": "Bearer sk-bench-dummy"}, litellm))
    say(f"started: {', '.join(f'{s.name} (pid {s.pid})' for s in servers)}; logs in {workdir}")
    check_answers(targets)

    say("overhead at fixed rates …")
    results["overhead"] = overhead(plan, workdir, targets)
    say("throughput …")
    results["throughput"] = throughput(plan, workdir, targets)
    say("streaming …")
    results["streaming"] = streaming(plan, targets)
    say("Responses and Anthropic streams …")
    results["endpoint_streams"] = endpoint_streams(
        peers(upstream, tallygate, setup.api_key, targets), scenarios(MODEL, ANTHROPIC_MODEL),
        streams=plan.streams, say=say,
        absent={} if with_litellm else {"litellm": "left out (--skip-litellm)"})
    say("memory against the number of chunks …")
    results["stream_memory"] = stream_memory(targets[1])
    say(f"{plan.concurrent_streams} concurrent streams …")
    results["concurrent_streams"] = many_streams(plan, targets[1:])
    say("freshness …")
    fresh = asyncio.run(freshness(tallygate.base_url, setup.api_key, setup.admin_token,
                                  chat_body(0), calls=plan.freshness_calls))
    results["freshness"] = {
        "calls": len(fresh.delays_s),
        "p50_ms": percentile(fresh.delays_s, 50) * 1000,
        "p99_ms": percentile(fresh.delays_s, 99) * 1000,
        "max_ms": max(fresh.delays_s) * 1000,
        "summary_query_p50_ms": percentile(fresh.query_s, 50) * 1000,
    }
    for target in targets[1:]:
        idle[target.name]["rss_after_run_mb"] = rss_mb(target.pid)
    say("cold starts …")
    for i in range(plan.cold_starts - 1):
        extra = start_tallygate(workdir, setup, log_name=f"tallygate-cold-{i}.log")
        try:
            time.sleep(SETTLE_S)
            idle["tallygate"]["cold_start_s"].append(extra.started_s)
            idle["tallygate"]["rss_mb"].append(rss_mb(extra.pid))
            # The admin API and pages load on their first use: what that adds, idle again.
            admin_first_use(extra.base_url, setup.admin_token)
            time.sleep(SETTLE_S)
            idle["tallygate"].setdefault("rss_after_admin_mb", []).append(rss_mb(extra.pid))
        finally:
            extra.stop()
    for figures in idle.values():
        figures["cold_start_median_s"] = statistics.median(figures["cold_start_s"])
        figures["rss_median_mb"] = statistics.median(figures["rss_mb"])
        if "rss_after_admin_mb" in figures:
            figures["rss_after_admin_median_mb"] = statistics.median(
                figures["rss_after_admin_mb"])
    results["idle"] = idle
    return results


def peers(upstream: Server, tallygate: Server, api_key: str,
          targets: list[Target]) -> list[Peer]:
    found = [Peer("direct", upstream.base_url, None),
             Peer("tallygate", tallygate.base_url, api_key)]
    found += [Peer("litellm", t.server.base_url, "sk-bench-dummy") for t in targets
              if t.name == "litellm"]
    return found


def endpoints_only(*, skip_litellm: bool, keep: bool) -> int:
    """The two stream scenarios alone, 40 streams each: a check that they run, not a
    measurement to publish (nothing is written)."""
    say = console.print
    litellm_version = None if skip_litellm else find_litellm()
    absent = {"litellm": "left out (--skip-litellm)"} if skip_litellm else {}
    if not skip_litellm and litellm_version is None:
        absent["litellm"] = ("not installed here (a full run installs it into "
                             "/tmp/tallygate-gateway-litellm)")
        say(f"LiteLLM {absent['litellm']}: the scenarios run without it")
    workdir = Path(tempfile.mkdtemp(prefix="tallygate-gateway-bench-"))
    servers: list[Server] = []
    try:
        upstream = start_fake_upstream(workdir)
        servers.append(upstream)
        setup = prepare_tallygate(workdir, upstream)
        tallygate = start_tallygate(workdir, setup)
        servers.append(tallygate)
        targets = []
        if litellm_version:
            litellm = start_litellm(workdir, upstream)
            servers.append(litellm)
            targets.append(Target("litellm", f"{litellm.v1}/chat/completions", {}, litellm))
        results = endpoint_streams(peers(upstream, tallygate, setup.api_key, targets),
                                   scenarios(MODEL, ANTHROPIC_MODEL), streams=40, say=say,
                                   absent=absent)
    finally:
        for server in reversed(servers):
            server.stop()
        if not keep:
            shutil.rmtree(workdir, ignore_errors=True)
    for title, header, rows in endpoint_tables(results):
        print_table(console, title, header, rows)
    return 0


def admin_first_use(base_url: str, admin_token: str) -> None:
    """One summary from the admin API, as the usage page's first refresh asks for it."""
    request = urllib.request.Request(f"{base_url}/api/v1/usage/summary?period=30d",
                                     headers={"authorization": f"Bearer {admin_token}"})
    with urllib.request.urlopen(request, timeout=30) as answer:
        answer.read()


def check_answers(targets: list[Target]) -> None:
    """Each target must answer a real call before anything is measured."""

    async def one(target: Target) -> None:
        import aiohttp

        async with aiohttp.ClientSession() as session, session.post(
                target.url, data=chat_body(0),
                headers={"content-type": "application/json", **target.headers}) as response:
            data = await response.read()
            if response.status != 200 or b'"choices"' not in data:
                raise RuntimeError(f"{target.name} answered {response.status}: {data[:300]!r}")

    for target in targets:
        asyncio.run(one(target))


def overhead(plan: Plan, workdir: Path, targets: list[Target]) -> list[dict[str, Any]]:
    """Each rate twice: as the brief's ``hey -c N -q R/N`` (N workers whose tickers start
    together, so the calls come in bursts of N every N/R seconds) and as ``hey -c 1 -q R``
    (one worker: evenly spaced calls, while each takes less than 1/R)."""
    rows = []
    for index, (rate, workers, per_worker) in enumerate(RATES):
        body = workdir / f"body-rate-{rate}.json"
        body.write_bytes(chat_body(100 + index))
        for arrivals, c, q in (("bursts", workers, per_worker), ("even", 1, rate)):
            row: dict[str, Any] = {"rate": rate, "arrivals": arrivals, "hey": f"-c {c} -q {q}"}
            for target in targets:
                hey(target.url, body, target.headers, concurrency=c, rate_per_worker=q,
                    duration_s=plan.warmup_s)
                cpu_before = cpu_seconds(target.pid)
                measured = hey(target.url, body, target.headers, concurrency=c,
                               rate_per_worker=q, duration_s=plan.duration_s)
                row[target.name] = _hey_figures(measured,
                                                cpu_seconds(target.pid) - cpu_before)
                console.print(f"  {rate}/s {arrivals:6} {target.name:9} p50 "
                              f"{measured.p50_ms:6.2f} ms  p99 {measured.p99_ms:6.2f} ms  "
                              f"{measured.rps:7.1f}/s  ok {measured.success_pct:.1f} %")
            for name in ("tallygate", "litellm"):
                if name in row:
                    row[name]["overhead_p50_ms"] = row[name]["p50_ms"] - row["direct"]["p50_ms"]
                    row[name]["overhead_p99_ms"] = row[name]["p99_ms"] - row["direct"]["p99_ms"]
            rows.append(row)
    return rows


def throughput(plan: Plan, workdir: Path, targets: list[Target]) -> list[dict[str, Any]]:
    rows = []
    body = workdir / "body-throughput.json"
    body.write_bytes(chat_body(200))
    for concurrency in THROUGHPUT_CONCURRENCY:
        row: dict[str, Any] = {"concurrency": concurrency}
        for target in targets:
            hey(target.url, body, target.headers, concurrency=concurrency,
                duration_s=plan.warmup_s)
            cpu_before = cpu_seconds(target.pid)
            measured = hey(target.url, body, target.headers, concurrency=concurrency,
                           duration_s=plan.duration_s)
            row[target.name] = _hey_figures(measured, cpu_seconds(target.pid) - cpu_before)
            console.print(f"  c={concurrency} {target.name:9} {measured.rps:8.1f}/s  "
                          f"ok {measured.success_pct:.2f} %  p50 {measured.p50_ms:.1f} ms")
        rows.append(row)
    return rows


def _hey_figures(run: HeyRun, cpu_s: float) -> dict[str, Any]:
    return {"requests": run.requests, "rps": run.rps, "p50_ms": run.p50_ms,
            "p99_ms": run.p99_ms, "success_pct": run.success_pct,
            "statuses": {str(k): v for k, v in run.statuses.items()}, "errors": run.errors,
            "cpu_ms_per_request": 1000 * cpu_s / run.requests if run.requests else None}


def _stream_body(index: int, chunks: int, delay_ms: float, **fake: Any) -> bytes:
    return chat_body(index, stream=True,
                     fake={"chunks": chunks, "chunk_delay_ms": delay_ms, **fake})


def streaming(plan: Plan, targets: list[Target]) -> dict[str, Any]:
    """Time to the first event, and each event's trip from the upstream to the client (the
    fake upstream stamps the moment it sends each event; one machine, one clock), per target;
    what a gateway adds is its figure minus the direct one. How late each event arrives,
    counted from the request, is kept too: it adds the first-token delay to every event and
    the upstream's own timer drift when the gateway takes CPU from it."""
    body = _stream_body(300, STREAM_CHUNKS, STREAM_CHUNK_DELAY_MS, stamp=True)
    out: dict[str, Any] = {}
    arrivals: dict[str, list[float]] = {}
    for target in targets:
        asyncio.run(streams(target.url, target.headers, body, count=4, concurrency=2))
        results = asyncio.run(streams(target.url, target.headers, body, count=plan.streams,
                                      concurrency=4))
        complete = [r for r in results if r.complete]
        ttft = [r.arrivals[0] for r in complete]
        transits = [t for r in complete for t in r.transits]
        arrivals[target.name] = _median_arrivals(complete)
        out[target.name] = {"streams": len(results), "complete": len(complete),
                            "events_per_stream": statistics.median(
                                len(r.arrivals) for r in complete) if complete else 0,
                            "ttft_p50_ms": percentile(ttft, 50) * 1000,
                            "ttft_p99_ms": percentile(ttft, 99) * 1000,
                            "transit_p50_ms": percentile(transits, 50) * 1000,
                            "transit_p99_ms": percentile(transits, 99) * 1000,
                            "last_event_p50_ms": percentile(
                                [r.arrivals[-1] for r in complete], 50) * 1000}
        console.print(f"  {target.name:9} ttft p50 {out[target.name]['ttft_p50_ms']:.2f} ms, "
                      f"transit p50 {out[target.name]['transit_p50_ms']:.2f} ms, "
                      f"{len(complete)}/{len(results)} complete")
    for name in ("tallygate", "litellm"):
        if name not in out:
            continue
        mine, direct = out[name], out["direct"]
        mine["ttft_added_p50_ms"] = mine["ttft_p50_ms"] - direct["ttft_p50_ms"]
        mine["chunk_added_p50_ms"] = mine["transit_p50_ms"] - direct["transit_p50_ms"]
        mine["chunk_added_p99_ms"] = mine["transit_p99_ms"] - direct["transit_p99_ms"]
        paired = list(zip(arrivals[name], arrivals["direct"], strict=False))
        late = [(mine_s - direct_s) * 1000 for mine_s, direct_s in paired]
        # Every event after the first: how much later than direct it reaches the client.
        mine["lateness_added_p50_ms"] = statistics.median(late[1:]) if len(late) > 1 \
            else float("nan")
    return out


def _median_arrivals(results: list[StreamResult]) -> list[float]:
    """Per event index, the median time from the request to that event's arrival."""
    if not results:
        return []
    events = min(len(r.arrivals) for r in results)
    return [statistics.median(r.arrivals[i] for r in results) for i in range(events)]


def stream_memory(target: Target) -> dict[str, Any]:
    """The gateway's memory after 20 concurrent streams of 10 chunks, then of 10 000 chunks
    (the same 10 000 tokens of text; no delay, the client reads as fast as it can), then of
    10 000 chunks twice more: growth that came back each round would be accumulation."""
    out: dict[str, Any] = {"concurrent": 20, "rounds": []}
    for chunks in (10, 10_000, 10_000, 10_000):
        body = _stream_body(400, chunks, 0, output_tokens=10_000)
        results = asyncio.run(streams(target.url, target.headers, body, count=20,
                                      concurrency=20))
        time.sleep(0.5)
        out["rounds"].append({
            "chunks": chunks,
            "complete": sum(r.complete for r in results),
            "events_per_stream": statistics.median(len(r.arrivals) for r in results),
            "rss_after_mb": rss_mb(target.pid),
            "peak_rss_mb": peak_rss_mb(target.pid),
        })
    rounds = out["rounds"]
    out["growth_mb"] = rounds[1]["rss_after_mb"] - rounds[0]["rss_after_mb"]
    out["repeat_growth_mb"] = rounds[3]["rss_after_mb"] - rounds[1]["rss_after_mb"]
    out["complete"] = all(r["complete"] == out["concurrent"] for r in rounds)
    console.print("  RSS after rounds of " + ", ".join(
        f"{r['chunks']:,} chunks {r['rss_after_mb']:.1f} MB" for r in rounds))
    return out


def many_streams(plan: Plan, targets: list[Target]) -> dict[str, Any]:
    """All streams open at once; the upstream spaces 16 chunks by 100 ms, so each lasts
    about 1.6 s and they overlap."""
    body = _stream_body(500, STREAM_CHUNKS, 100)
    out: dict[str, Any] = {"count": plan.concurrent_streams}
    for target in targets:
        before = rss_mb(target.pid)
        result = asyncio.run(concurrent_streams(target.url, target.headers, body,
                                                count=plan.concurrent_streams))
        time.sleep(0.5)
        out[target.name] = {"complete": result.complete, "peak_open": result.peak_open,
                            "wall_s": result.wall_s, "first_error": result.first_error,
                            "rss_before_mb": before, "rss_after_mb": rss_mb(target.pid),
                            "peak_rss_mb": peak_rss_mb(target.pid)}
        console.print(f"  {target.name:9} {result.complete}/{result.count} complete, "
                      f"peak open {result.peak_open}, {result.wall_s:.1f} s, RSS after "
                      f"{out[target.name]['rss_after_mb']:.0f} MB")
    return out


# -- bars --------------------------------------------------------------------------------------


def judge(results: dict[str, Any], *, with_litellm: bool) -> list[Bar]:
    bars: list[Bar] = []
    for row in results["overhead"]:
        tg = row["tallygate"]
        shape = {"bursts": "in bursts", "even": "evenly spaced"}[row.get("arrivals", "bursts")]
        bars.append(Bar(f"overhead p50 at {row['rate']}/s, {shape}", tg["overhead_p50_ms"],
                        "ms", 1.0))
        bars.append(Bar(f"overhead p99 at {row['rate']}/s, {shape}", tg["overhead_p99_ms"],
                        "ms", 5.0))
    c16 = results["throughput"][0]
    bars.append(Bar("throughput c=16: success", c16["tallygate"]["success_pct"], "%", 100.0,
                    at_most=False))
    if with_litellm:
        ratio = c16["tallygate"]["rps"] / max(c16["litellm"]["rps"], 1e-9)
        bars.append(Bar("throughput c=16: × LiteLLM's requests/s", ratio, "×", 5.0,
                        at_most=False))
    stream = results["streaming"]["tallygate"]
    bars.append(Bar("stream: first token added, p50", stream["ttft_added_p50_ms"], "ms", 1.0))
    bars.append(Bar("stream: each chunk added, p50", stream["chunk_added_p50_ms"], "ms", 1.0))
    for name, row in results.get("endpoint_streams", {}).items():
        mine = row.get("tallygate")
        if mine is None or "ttft_added_p50_ms" not in mine:
            continue
        label = {"responses": "Responses stream", "anthropic": "Anthropic stream"}[name]
        bars.append(Bar(f"{label}: first token added, p50", mine["ttft_added_p50_ms"], "ms",
                        1.0))
        bars.append(Bar(f"{label}: each event added, p50", mine["event_added_p50_ms"], "ms",
                        1.0))
    memory = results["stream_memory"]
    bars.append(Bar("stream: RSS growth 10 → 10 000 chunks", memory["growth_mb"], "MB", 5.0,
                    text="flat (≤ 5 MB)"))
    bars.append(Bar("stream: RSS growth over two more 10 000-chunk rounds",
                    memory["repeat_growth_mb"], "MB", 1.0, text="none (≤ 1 MB)"))
    many = results["concurrent_streams"]
    bars.append(Bar(f"{many['count']} concurrent streams: completed",
                    many["tallygate"]["complete"], "", many["count"], at_most=False,
                    text="all"))
    bars.append(Bar(f"{many['count']} concurrent streams: RSS after",
                    many["tallygate"]["rss_after_mb"], "MB", 200.0))
    bars.append(Bar("freshness p99", results["freshness"]["p99_ms"], "ms", 1000.0))
    idle = results["idle"]["tallygate"]
    bars.append(Bar("idle RSS after start", idle["rss_median_mb"], "MB", 80.0))
    bars.append(Bar("cold start to first /healthz", idle["cold_start_median_s"], "s", 1.0))
    return bars


# -- the machine -------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text()
                      .splitlines() if line.startswith("MemTotal:")))
    os_name = platform.platform()
    release = Path("/etc/os-release")
    if release.exists():
        for line in release.read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_name = f"{line.split('=', 1)[1].strip(chr(34))}, {platform.release()}"
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gb": round(mem_kb / 1024 / 1024, 1),
            "os": os_name, "python": platform.python_version()}


def versions(litellm_version: str | None) -> dict[str, str | None]:
    found: dict[str, str | None] = {}
    for package in ("tallygate", "aiohttp", "uvicorn", "uvloop", "httptools", "starlette",
                    "fastapi"):
        try:
            found[package] = version(package)
        except Exception:  # a missing optional package is reported as absent
            found[package] = None
    found["litellm"] = litellm_version
    return found


def _hey_version() -> str:
    result = subprocess.run(["dpkg-query", "-W", "-f=${Version}", "hey"], capture_output=True,
                            text=True, check=False)
    return result.stdout.strip() or "(version unknown)"


def _uptime() -> str:
    result = subprocess.run(["uptime"], capture_output=True, text=True, check=False)
    return result.stdout.strip()


def _machine_cpu() -> tuple[float, float]:
    """(CPU seconds the whole machine was busy, CPU seconds of this process and the children
    it waited for: hey, the servers, the setup commands)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    busy = (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")
    own = os.times()
    return busy, own.user + own.system + own.children_user + own.children_system


def _others_cores(before: tuple[float, float], after: tuple[float, float],
                  wall_s: float) -> float:
    """Cores used on average by work that is not this benchmark's (other developers')."""
    return max(0.0, ((after[0] - before[0]) - (after[1] - before[1])) / wall_s)


def _wait_quiet(limit_s: float, threshold: float = 1.0) -> None:
    deadline = time.monotonic() + limit_s
    while os.getloadavg()[0] >= threshold and time.monotonic() < deadline:
        console.print(f"waiting for a quiet machine: load {os.getloadavg()[0]:.2f}")
        time.sleep(15)


def _raise_open_files_limit() -> None:
    """1 000 concurrent streams need two sockets each in a gateway; children inherit it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    sys.exit(main())
