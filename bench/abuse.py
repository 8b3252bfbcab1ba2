"""The abuse benchmark: a valid key's added latency and the gateway's memory, quiet and under
each flood, in one run (PRODUCT.md §15 against §9's overhead bars).

    .venv/bin/python bench/abuse.py [--duration SECONDS] [--quick]

One fake upstream and one tallygate process (one worker, SQLite ledger) on 127.0.0.1, set up
as bench/gateway.py sets them up. For each scenario — quiet, then a flood of unknown keys, of
a revoked key, slowloris connections, slow stream readers — the flood starts, then ``hey``
sends the valid key's calls at an even 100/s (``-c 1 -q 100``), first straight to the upstream
and then through the gateway; the added latency is the gateway's minus the direct one at the
same percentile, as bench/gateway.py measures it. The floods are ``tests/abuse/floods.py``
(the abuse suite's own), each in its own process, restarted until the scenario ends. The
server's RSS is read before and after each scenario. Prints a table, writes
``bench/results/abuse.json`` and its section of ``docs/benchmarks.md`` (``--quick``: prints
only).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console

from gateway import chat_body, machine, versions
from gateway_load import hey
from gateway_report import Bar, bars_table, markdown_table, print_table, replace_section
from gateway_stack import (
    MODEL,
    Server,
    TallygateSetup,
    peak_rss_mb,
    prepare_tallygate,
    rss_mb,
    start_fake_upstream,
    start_tallygate,
)

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "abuse.json"
DOCS = ROOT / "docs" / "benchmarks.md"
START = "<!-- bench:abuse:start -->"
END = "<!-- bench:abuse:end -->"
RATE = 100  # the valid key's calls per second, evenly spaced
SLOW_READER_STREAM = {"chunks": 2000, "output_tokens": 2_000_000}  # ~8 MB, never read

console = Console(width=200)


@dataclass
class Flood:
    """A flood client (``python -m tests.abuse.floods KIND ...``) run again and again until
    stopped; what its runs saw is summed."""

    kind: str
    url: str
    options: dict[str, Any]
    restart: bool = True  # False: one long run, stopped with the scenario
    seen: Counter[str] = field(default_factory=Counter)
    runs: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _process: subprocess.Popen[str] | None = None

    def start(self) -> Flood:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._process is not None and self._process.poll() is None and not self.restart:
            self._process.terminate()
        if self._thread is not None:
            self._thread.join(timeout=120)

    def _run(self) -> None:
        argv = [sys.executable, "-m", "tests.abuse.floods", self.kind, self.url]
        for name, value in self.options.items():
            argv += [f"--{name}", str(value)]
        while not self._stop.is_set():
            self._process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE,
                                             stderr=subprocess.DEVNULL, text=True)
            out, _ = self._process.communicate()
            self.runs += 1
            if out.strip():
                result = json.loads(out.strip().splitlines()[-1])
                self.seen.update(result.get("statuses") or result.get("outcomes") or {})
            if not self.restart:
                return


def new_key(setup: TallygateSetup, name: str, *, disabled: bool = False) -> str:
    from tallygate.keys.schemas import KeyCreate
    from tallygate.keys.service import KeyService
    from tallygate.store.database import Database

    db = Database(setup.env["TALLYGATE_DATABASE_URL"])
    try:
        keys = KeyService(db)
        created = keys.create(KeyCreate(name=name), "bench")
        if disabled:
            keys.set_status(created.id, "disabled", "bench")
    finally:
        db.dispose()
    return created.key


def scenarios(url: str, setup: TallygateSetup, hold_s: float) -> dict[str, Flood | None]:
    revoked = new_key(setup, "revoked", disabled=True)
    keyed = {"connections": 50, "model": MODEL}
    return {
        "quiet": None,
        "unknown keys, 1 000/s": Flood("unknown", url, {**keyed, "count": 1000, "rate": 1000}),
        "unknown keys, flat out": Flood("unknown", url, {**keyed, "count": 2000}),
        "revoked key, 1 000/s": Flood("revoked", url, {**keyed, "count": 1000, "rate": 1000,
                                                       "key": revoked}),
        "revoked key, flat out": Flood("revoked", url, {**keyed, "count": 2000,
                                                        "key": revoked}),
        # Request heads a byte a second: no key to check yet, the server holds them open.
        "slowloris": Flood("slowloris", url, {"connections": 500, "phase": "head",
                                              "pause": 1, "seconds": hold_s}, restart=False),
        "slow readers": Flood("slow-reader", url, {
            "connections": 50, "key": new_key(setup, "slow reader"), "seconds": hold_s,
            "fake": json.dumps(SLOW_READER_STREAM)}, restart=False),
    }


def measure(name: str, flood: Flood | None, direct: str, gateway: Server, key: str,
            body: Path, warmup_s: float, duration_s: float) -> dict[str, Any]:
    row: dict[str, Any] = {"scenario": name, "rss_before_mb": rss_mb(gateway.pid)}
    if flood is not None:
        flood.start()
        time.sleep(1.0)  # under way before anything is measured
    started = time.perf_counter()
    try:
        for target, url, headers in (
                ("direct", direct, {}),
                ("tallygate", f"{gateway.v1}/chat/completions",
                 {"authorization": f"Bearer {key}"})):
            hey(url, body, headers, concurrency=1, rate_per_worker=RATE, duration_s=warmup_s)
            run = hey(url, body, headers, concurrency=1, rate_per_worker=RATE,
                      duration_s=duration_s)
            row[target] = {"p50_ms": run.p50_ms, "p99_ms": run.p99_ms, "rps": run.rps,
                           "success_pct": run.success_pct,
                           "statuses": {str(k): v for k, v in run.statuses.items()}}
        row["rss_during_mb"] = rss_mb(gateway.pid)
    finally:
        if flood is not None:
            flood.stop()
    elapsed = time.perf_counter() - started
    time.sleep(1.0)
    row["rss_after_mb"] = rss_mb(gateway.pid)
    row["peak_rss_mb"] = peak_rss_mb(gateway.pid)
    row["added_p50_ms"] = row["tallygate"]["p50_ms"] - row["direct"]["p50_ms"]
    row["added_p99_ms"] = row["tallygate"]["p99_ms"] - row["direct"]["p99_ms"]
    if flood is not None:
        if not flood.restart:  # one run, ended by the scenario: its connections were held
            flood.seen[f"{flood.options['connections']} held"] = 1
        row["flood"] = {"kind": flood.kind, "runs": flood.runs, "seen": dict(flood.seen),
                        "calls_per_s": round(sum(flood.seen.values()) / elapsed, 1)
                        if flood.restart else None,
                        "options": {k: v for k, v in flood.options.items() if k != "key"}}
    console.print(f"  {name:13} added p50 {row['added_p50_ms']:+.2f} ms  p99 "
                  f"{row['added_p99_ms']:+.2f} ms  ok {row['tallygate']['success_pct']:.1f} %  "
                  f"RSS {row['rss_before_mb']:.0f} → {row['rss_after_mb']:.0f} MB  "
                  f"{dict(flood.seen) if flood else ''}")
    return row


def judge(rows: list[dict[str, Any]]) -> list[Bar]:
    bars = []
    for row in rows:
        bars.append(Bar(f"{row['scenario']}: added p50 at {RATE}/s", row["added_p50_ms"],
                        "ms", 1.0))
        bars.append(Bar(f"{row['scenario']}: added p99 at {RATE}/s", row["added_p99_ms"],
                        "ms", 5.0))
        bars.append(Bar(f"{row['scenario']}: valid key's calls answered 200",
                        row["tallygate"]["success_pct"], "%", 100.0, at_most=False))
    return bars


def table(rows: list[dict[str, Any]]) -> tuple[list[str], list[list[str]]]:
    header = ["scenario", "flood (what it got)", "direct p50 / p99 ms",
              "tallygate p50 / p99 ms", "added p50 / p99 ms", "valid key ok",
              "RSS before → during → after (peak) MB"]
    out = []
    for row in rows:
        flood = row.get("flood")
        seen = "–" if flood is None else ", ".join(
            f"{k}×{v:,}" if v > 1 else k for k, v in sorted(flood["seen"].items())) + (
            f" ({flood['calls_per_s']:,.0f}/s)" if flood["calls_per_s"] else "")
        out.append([row["scenario"], seen,
                    f"{row['direct']['p50_ms']:.2f} / {row['direct']['p99_ms']:.2f}",
                    f"{row['tallygate']['p50_ms']:.2f} / {row['tallygate']['p99_ms']:.2f}",
                    f"{row['added_p50_ms']:+.2f} / {row['added_p99_ms']:+.2f}",
                    f"{row['tallygate']['success_pct']:.1f} %",
                    f"{row['rss_before_mb']:.0f} → {row['rss_during_mb']:.0f} → "
                    f"{row['rss_after_mb']:.0f} ({row['peak_rss_mb']:.0f})"])
    return header, out


def section(report: dict[str, Any], bars: list[Bar]) -> str:
    header, rows = table(report["results"])
    m = report["machine"]
    return "\n".join([
        "## Under abuse: a valid key during floods (issue 16)", "",
        "Written by `bench/abuse.py`; do not edit by hand (the reading of it follows the "
        "section).", "",
        f"- **Date**: {report['date']} ({report['elapsed_s']} s)",
        f"- **Command**: `{report['command']}`",
        f"- **Machine**: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, {m['os']}, "
        f"Python {m['python']}",
        f"- **Load average** (1, 5, 15 min) before: {report['load']['before']}; after: "
        f"{report['load']['after']} — the machine is shared with other work.",
        f"- **Runs**: per scenario and target, `hey -c 1 -q {RATE}` (the valid key's calls "
        f"evenly spaced at {RATE}/s) for {report['plan']['duration_s']} s after "
        f"{report['plan']['warmup_s']} s of warm-up, while the flood runs (in its own "
        "processes, tests/abuse/floods.py). Added = tallygate minus direct at the same "
        "percentile, same scenario.", "",
        markdown_table(header, rows), "",
        markdown_table(*bars_table(bars)),
    ])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--duration", type=float, default=6.0,
                        help="seconds measured per scenario and target")
    parser.add_argument("--quick", action="store_true",
                        help="2 s per scenario; prints only, writes nothing")
    args = parser.parse_args(argv)
    duration_s, warmup_s = (2.0, 0.5) if args.quick else (args.duration, 1.0)
    command = "python bench/abuse.py" + "".join(
        f" {shlex.quote(a)}" for a in (argv if argv is not None else sys.argv[1:]))
    load_before = [round(x, 2) for x in os.getloadavg()]
    console.print(f"[bold]abuse benchmark[/bold]  load average before: {load_before}")
    workdir = Path(tempfile.mkdtemp(prefix="tallygate-abuse-bench-"))
    servers: list[Server] = []
    started = time.perf_counter()
    try:
        upstream = start_fake_upstream(workdir)
        servers.append(upstream)
        setup = prepare_tallygate(workdir, upstream)
        gateway = start_tallygate(workdir, setup)
        servers.append(gateway)
        body = workdir / "body.json"
        body.write_bytes(chat_body(7))
        hold_s = 2 * (warmup_s + duration_s) + 10
        rows = [measure(name, flood, f"{upstream.v1}/chat/completions", gateway,
                        setup.api_key, body, warmup_s, duration_s)
                for name, flood in scenarios(gateway.base_url, setup, hold_s).items()]
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    bars = judge(rows)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"), "command": command,
        "elapsed_s": round(time.perf_counter() - started, 1), "machine": machine(),
        "load": {"before": load_before, "after": [round(x, 2) for x in os.getloadavg()]},
        "versions": versions(None),
        "plan": {"rate": RATE, "duration_s": duration_s, "warmup_s": warmup_s},
        "results": rows, "bars": [bar.as_dict() for bar in bars]}
    print_table(console, "A valid key under each flood", *table(rows))
    print_table(console, "PRODUCT.md §15 against §9's overhead bars", *bars_table(bars))
    console.print(f"load average after: {report['load']['after']}")
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(report, indent=2) + "\n")
        replace_section(DOCS, START, END, section(report, bars))
        console.print(f"wrote {RESULTS.relative_to(ROOT)} and {DOCS.relative_to(ROOT)}")
    return 0 if all(bar.passed for bar in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
