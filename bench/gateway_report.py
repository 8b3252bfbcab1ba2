"""The gateway benchmark's tables: one set of rows, rendered to the terminal (Rich) and to its
section of ``docs/benchmarks.md`` (Markdown, between its own markers only)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from gateway_endpoints import endpoint_tables

START = "<!-- bench:gateway:start -->"
END = "<!-- bench:gateway:end -->"
PEERS = (("direct", "direct"), ("tallygate", "tallygate"), ("litellm", "LiteLLM"))

# Why a bar is missed, from profiling the gateway under load (py-spy, valgrind's callgrind for
# instruction counts); shown in the docs for each missed bar. Keyed by the start of the bar's
# name. Written by hand: the benchmark cannot know why, only by how much.
WHY_MISSED: dict[str, str] = {
    "overhead p50, in bursts": (
        "With `-c N -q R/N`, hey's N workers tick together: the calls arrive in bursts of N "
        "(5, 10, 25) every N/R seconds, and one worker process serves a burst one call after "
        "another. The overhead is then mostly queueing: about N/2 × (the gateway's CPU per "
        "call − the upstream's) from the CPU column. Evenly spaced, the same rates meet "
        "the bar (the *evenly spaced* rows). Where a relayed call's CPU goes (py-spy, "
        "samples of the thread holding the GIL at 4 000 calls/s, 2026-11-28): no single "
        "place: aiohttp's client about a quarter (building the request, writing it, parsing "
        "the answer), uvicorn's protocol and its socket writes about a quarter, the "
        "recorder's SQLite batch 7 %, tallygate's own code (key look-up, limits, the record, "
        "the price) about 10 %, the rest the event loop. To meet ≤ 1 ms in bursts of 25 it "
        "would need under 0.08 ms of CPU per call more than the upstream, about half of "
        "what it takes now (0.25 − 0.05 ms in the 500/s bursts row)."),
    "overhead p99, in bursts": (
        "The same bursts: the last call of a burst of N waits for the N − 1 before it. "
        "Inside the gateway, a full garbage collection used to stop it for 120–190 ms "
        "(fixed: `gc.freeze()` after start-up), and the recorder's flush every 50 ms holds "
        "the GIL for a few ms of SQLAlchemy work while calls wait; other developers' work "
        "on the same 2 cores adds its own delays (see the load)."),
    "overhead p50, evenly spaced": (
        "Evenly spaced calls: the gateway's CPU per call (the CPU column) plus two more "
        "loopback hops than the direct call, each a process wake-up that waits for a core "
        "while other work holds both."),
    "overhead p99, evenly spaced": (
        "The recorder's flush holding the GIL, and other work on the 2 cores (see the "
        "load)."),
    "stream: first token": (
        "The same per-call work as a non-streamed call before the first byte can go out "
        "(authentication, limits, the upstream request through aiohttp, the response "
        "head), and the same two extra hops."),
    "stream: each chunk": (
        "Each event's relay: a read from the upstream socket, the usage scan of the event, a "
        "write to the client and two more process wake-ups. The 4 streams' chunks leave the "
        "upstream on the same timer tick, so the one gateway process relays them one after "
        "another."),
    "stream: RSS growth 10": (
        "A one-off high-water mark, not accumulation: 20 concurrent streams that the "
        "upstream sends as fast as it can are read in blocks of up to 64 KB (aiohttp's read "
        "buffer, flow-controlled at 128 KB) and written through uvicorn's 64 KB write "
        "buffer; the allocator keeps the pages those blocks used. The rounds after it do not "
        "grow."),
    "stream: RSS growth over": (
        "The allocator's high-water mark can still rise a little when a later round's "
        "buffers land on other pages; it does not track the chunks streamed (earlier runs of "
        "this benchmark, 2026-11-27 23:26 and 2026-11-28 00:16 UTC: +0.91 and −0.02 MB). "
        "Checked on 2026-11-28 with ten 10 000-chunk rounds instead of three: RSS 89.8, "
        "92.2, 93.3, then 93.2–94.4 MB for the remaining seven, a plateau; `tracemalloc` "
        "snapshots after each round show no Python allocation that grows from round to "
        "round (the traced total stays at 45–48 MB), and `malloc_trim` hands back 3.5 MB: "
        "freed pages the allocator keeps, not live objects."),
    "freshness": (
        "The ledger's side, not the gateway's: a call is written within the recorder's "
        "50 ms flush, and the probe then needs a summary answer that includes it; each "
        "summary query took the time in the *summary query* row (SQL over the rollups, on "
        "cores shared with other work), so a call is seen up to two queries after its "
        "write. The run of 2026-11-28 00:16 UTC, with 0.30 cores of other work, measured "
        "p99 153 ms with 14 ms queries."),
    "idle RSS": (
        "Imports, before any gateway code runs: a relaying process loads SQLAlchemy, "
        "aiohttp (with its two TLS contexts), pydantic and pydantic-settings, uvicorn with "
        "uvloop, Typer with Rich, prometheus_client and tallygate's own ledger and gateway: "
        "`import tallygate.cli.main` peaks at 73 MB. FastAPI, the API's models and the "
        "templates load with the admin application, on its first use."),
    "cold start": (
        "The imports: `python -X importtime -c 'import tallygate.cli.main'` (SQLAlchemy "
        "0.13–0.20 s, aiohttp 0.16 s, pydantic-settings 0.15 s on this machine); FastAPI "
        "and the admin application are no longer among them."),
}


# Measured while preparing this benchmark (A/B against the previous gateway code, same
# machine, interleaved runs; instruction counts from valgrind's callgrind, which the load of
# the machine does not change).
CHANGES = (
    "Against the run of 2026-11-28 17:51 UTC; two runs on today's code, 05:09 UTC (before "
    "the last three changes below) and this one, 06:00 UTC.\n"
    "- The upstream client reads at most 16 KB of a response ahead of the relay (aiohttp's "
    "default is 64 KB, and up to 4 096 small events queued per stream): *RSS growth 10 → "
    "10 000 chunks* 6.53 → 0.81 and 1.32 MB, *two more rounds* 2.89 → −0.04 and −0.03 MB; "
    "1 000 concurrent streams 125 → 116 and 115 MB. An 800 KB plain answer costs 0.1 ms "
    "more (1.04 → 1.16 ms, measured once by hand).\n"
    "- The key cache: calls that arrive together share one database read, and a key in use "
    "is read again in the background during the second half of its 2 s, so no call waits "
    "for it. Before, every key expired at once every 2 s and each call of the next burst "
    "read it on its own thread (py-spy at 500/s in bursts of 25: `find_by_hash` 2.5 % of "
    "the process's samples). Overhead in bursts, p50 / p99: 100/s +1.2 / +3.5 → +0.9 / +1.6 "
    "and +1.1 / +1.6 ms, 200/s +1.7 / +4.2 → +1.5 / +3.0 and +1.3 / +2.2 ms, 500/s "
    "+5.8 / +9.0 → +3.0 / +6.5 and +3.7 / +6.6 ms. Not all of that is the cache: the "
    "machine was faster too (LiteLLM's throughput 216 → 258 and 271/s, tallygate's "
    "4 966 → 5 975 and 5 762/s), and the 100/s p50 lands either side of its bar from one "
    "run to the next.\n"
    "- The client's request body is forwarded as sent again (the 17:51 run re-encoded every "
    "body); only a renamed model, amended `stream_options` or a possibly repeated member "
    "is encoded again.\n"
    "- Since 05:09: key reads on two threads of their own; the stream watcher joins a long "
    "event once instead of once per piece (a 4 MB event: 129 ms in 32 KB pieces → 17 ms in "
    "any); a member that differs from `model`/`stream` only by case is refused.\n"
    "- Earlier runs: the admin application (FastAPI) loads on its first use (cold start "
    "1.26 → 0.64 s, idle RSS 92 → 78 MB); endpoints on raw ASGI (1.38–1.46 → 1.29 million "
    "instructions per relayed call under callgrind); `gc.freeze()` after start-up (full "
    "collections had stopped the process for 120–190 ms); a linear event splitter for "
    "streams; no cookie jar and no `Accept-Encoding` on the upstream client.")


@dataclass(frozen=True, slots=True)
class Bar:
    what: str
    value: float
    unit: str
    limit: float
    at_most: bool = True
    text: str | None = None  # the bar as written, when not just "≤ limit"

    @property
    def passed(self) -> bool:
        if isinstance(self.value, float) and math.isnan(self.value):
            return False
        return self.value <= self.limit if self.at_most else self.value >= self.limit

    @property
    def bar(self) -> str:
        return self.text or f"{'≤' if self.at_most else '≥'} {_num(self.limit)} {self.unit}"

    @property
    def shown(self) -> str:
        return f"{_num(self.value)} {self.unit}".strip()

    @property
    def miss(self) -> str | None:
        """How far from the bar, for a missed one."""
        if self.passed:
            return None
        gap = abs(self.value - self.limit)
        share = f" ({gap / self.limit:.0%} of the bar)" if self.limit else ""
        return f"by {_num(gap)} {self.unit}{share}".replace("  ", " ")

    def as_dict(self) -> dict[str, Any]:
        return {"what": self.what, "bar": self.bar, "value": self.value, "unit": self.unit,
                "pass": self.passed, "miss": self.miss}


def _num(value: float) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "n/a"
    if isinstance(value, int) or float(value).is_integer() and abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:,.2f}" if abs(value) < 100 else f"{value:,.1f}"


def _ms(value: float | None) -> str:
    return "–" if value is None else _num(value)


def _pair(p50: float, p99: float, sign: str) -> str:
    if math.isnan(p50):
        return "n/a (the events lost the upstream's stamp)"
    return f"{sign}{_ms(p50)} / {sign}{_ms(p99)} ms"


def tables(report: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) for every table of the report."""
    results = report["results"]
    peers = [(key, label) for key, label in PEERS if key in results["overhead"][0]]
    gateways = [(k, label) for k, label in peers if k != "direct"]
    out = []

    header = ["rate", "arrivals", "hey"] + [f"{label} p50 / p99" for _, label in peers] + [
        f"{label} overhead p50 / p99" for _, label in gateways] + [
        "CPU per call: " + " / ".join(label for _, label in peers)]
    rows = []
    for row in results["overhead"]:
        cells = [f"{row['rate']}/s", row.get("arrivals", "bursts"), row["hey"]]
        cells += [f"{_ms(row[k]['p50_ms'])} / {_ms(row[k]['p99_ms'])}" for k, _ in peers]
        cells += [f"+{_ms(row[k]['overhead_p50_ms'])} / +{_ms(row[k]['overhead_p99_ms'])}"
                  for k, _ in gateways]
        cells.append(_cpu_cells(row, peers))
        rows.append(cells)
    out.append(("Overhead, non-streamed, at fixed rates (ms; CPU: of the server process "
                 "alone, the upstream's for direct)", header, rows))

    header = ["concurrency"] + [f"{label} req/s (ok %)" for _, label in peers] + [
        "CPU per call (ms): " + " / ".join(label for _, label in peers)]
    if ("litellm", "LiteLLM") in peers:
        header.append("tallygate ÷ LiteLLM")
    rows = []
    for row in results["throughput"]:
        cells = [str(row["concurrency"])]
        cells += [f"{row[k]['rps']:,.0f} ({row[k]['success_pct']:.2f} %)" for k, _ in peers]
        cells.append(_cpu_cells(row, peers))
        if "litellm" in row:
            cells.append(f"{row['tallygate']['rps'] / max(row['litellm']['rps'], 1e-9):.1f}×")
        rows.append(cells)
    out.append(("Throughput, one worker each", header, rows))

    stream = results["streaming"]
    header = ["", "first token p50", "added", "event transit p50 / p99",
              "each chunk added p50 / p99", "events later than direct (p50)", "last event p50",
              "complete"]
    rows = []
    for key, label in peers:
        s = stream[key]
        rows.append([label, f"{_ms(s['ttft_p50_ms'])} ms",
                     "" if key == "direct" else f"+{_ms(s['ttft_added_p50_ms'])} ms",
                     _pair(s["transit_p50_ms"], s["transit_p99_ms"], ""),
                     "" if key == "direct" else
                     _pair(s["chunk_added_p50_ms"], s["chunk_added_p99_ms"], "+"),
                     "" if key == "direct" else f"+{_ms(s['lateness_added_p50_ms'])} ms",
                     f"{_ms(s['last_event_p50_ms'])} ms", f"{s['complete']}/{s['streams']}"])
    plan = report["plan"]
    out.append((f"Streaming: {plan['stream_chunks']} chunks {plan['stream_chunk_delay_ms']} ms "
                f"apart, {plan['streams']} streams, 4 at a time", header, rows))

    out.extend(endpoint_tables(results.get("endpoint_streams", {})))

    many, idle, memory = results["concurrent_streams"], results["idle"], results["stream_memory"]
    header = ["", f"{many['count']} streams completed", "peak open", "RSS after them",
              "idle RSS after start", "cold start", "RSS at the end of the run"]
    rows = []
    for key, label in gateways:
        m, i = many[key], idle[key]
        rows.append([label, f"{m['complete']}/{many['count']}", str(m["peak_open"]),
                     f"{m['rss_after_mb']:.0f} MB", f"{i['rss_median_mb']:.0f} MB",
                     f"{i['cold_start_median_s']:.2f} s", f"{i['rss_after_run_mb']:.0f} MB"])
    out.append(("Memory and start", header, rows))

    fresh = results["freshness"]
    rounds = [[f"RSS after 20 concurrent streams of {r['chunks']:,} chunks (round {i + 1})",
               f"{r['rss_after_mb']:.1f} MB (peak so far {r['peak_rss_mb']:.1f} MB, "
               f"{r['complete']}/{memory['concurrent']} complete)"]
              for i, r in enumerate(memory["rounds"])]
    out.append(("tallygate only", ["measure", "figure"], [
        *rounds,
        [f"freshness over {fresh['calls']} calls: p50 / p99 / max",
         f"{fresh['p50_ms']:.0f} / {fresh['p99_ms']:.0f} / {fresh['max_ms']:.0f} ms"],
        ["summary query p50 (admin API)", f"{fresh['summary_query_p50_ms']:.1f} ms"],
        *([["idle RSS after start, then one admin API call (the admin application loads "
            "on first use)", f"{idle['tallygate']['rss_after_admin_median_mb']:.1f} MB"]]
          if "rss_after_admin_median_mb" in idle["tallygate"] else []),
    ]))
    return out


def _cpu_cells(row: dict[str, Any], peers: list[tuple[str, str]]) -> str:
    return " / ".join(_ms(row[k].get("cpu_ms_per_request")) for k, _ in peers)


def bars_table(bars: list[Any]) -> tuple[list[str], list[list[str]]]:
    rows = [[b.what, b.bar, b.shown, "PASS" if b.passed else f"MISS {b.miss}"] for b in bars]
    return ["bar", "target", "measured", "result"], rows


def print_table(console: Console, title: str, header: list[str], rows: list[list[str]]) -> None:
    table = Table(title=title, title_justify="left")
    for name in header:
        table.add_column(name)
    for row in rows:
        table.add_row(*row)
    console.print(table)


def render_console(console: Console, report: dict[str, Any], bars: list[Any]) -> None:
    for title, header, rows in tables(report):
        print_table(console, title, header, rows)
    header, rows = bars_table(bars)
    table = Table(title="PRODUCT.md §9 bars (tallygate)", title_justify="left")
    for name in header:
        table.add_column(name)
    for row in rows:
        style = "green" if row[3] == "PASS" else "red"
        table.add_row(*row[:3], f"[{style}]{row[3]}[/{style}]")
    console.print(table)


def markdown_table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |"
              for row in rows]
    return "\n".join(lines)


def section(report: dict[str, Any], bars: list[Any]) -> str:
    m, v, load = report["machine"], report["versions"], report["load"]
    litellm = v.get("litellm")
    parts = [
        "## Gateway",
        "",
        "Written by `bench/gateway.py`; do not edit by hand. Every figure comes from one run "
        "on one machine, all processes on 127.0.0.1 with one worker each, behind the same "
        "fake upstream (`tallygate fake-upstream`, no artificial latency; Azure LLM "
        "inference trace token counts, CC-BY 4.0, Microsoft Azure).",
        "",
        f"- **Date**: {report['date']} ({report['elapsed_s']:.0f} s)",
        f"- **Command**: `{report['command']}`",
        f"- **Machine**: {m['cpu']}, {m['cores']} cores, {m['ram_gb']} GB RAM, {m['os']}, "
        f"Python {m['python']}",
        f"- **Load**: `uptime` before: `{load['before']}`; after: `{load['after']}`. Work "
        f"that was not this benchmark's (other developers' test runs on this shared machine) "
        f"used {load.get('others_cores', float('nan')):.2f} of the {m['cores']} cores on "
        "average during the run" + (
            ": the machine was otherwise idle." if load.get("others_cores", 1.0) < 0.1 else
            ", so the load tool, the upstream and both gateways competed with it for the "
            "cores; latencies are the most affected."),
        f"- **Versions**: tallygate {v['tallygate']} (aiohttp {v['aiohttp']}, uvicorn "
        f"{v['uvicorn']}, uvloop {v['uvloop']}, httptools {v['httptools']}, starlette "
        f"{v['starlette']}, fastapi {v['fastapi']}); "
        + (f"LiteLLM proxy {litellm} (`litellm[proxy]=={litellm}` in its own virtual "
           "environment, no database, `--num_workers 1`)" if litellm else
           "LiteLLM not measured (`--skip-litellm`)"),
        f"- **Load tools**: {report['tool']['requests']} for request/response traffic "
        "(`-q` rate per worker × `-c` workers, `-z` duration after a warm-up of the same "
        "shape; one body per run, a different prompt for each rate; hey reports latencies to "
        f"0.1 ms); {report['tool']['streams']} for streams, timestamping every event.",
        f"- **Runs**: {report['plan']['duration_s']:g} s measured after "
        f"{report['plan']['warmup_s']:g} s of warm-up, per target and rate. Overhead is the "
        "gateway's latency minus the direct one at the same percentile, same rate, same run.",
        "",
    ]
    for title, header, rows in tables(report):
        parts += [f"**{title}**", "", markdown_table(header, rows), ""]
    header, rows = bars_table(bars)
    parts += ["**Bars (PRODUCT.md §9)**", "", markdown_table(header, rows), ""]
    missed = [b for b in bars if not b.passed]
    if missed:
        parts += ["**Missed bars, and why**", ""]
        grouped: dict[str, list[Any]] = {}
        for bar in missed:
            prefix = _why_key(bar.what)
            grouped.setdefault(prefix, []).append(bar)
        for prefix, group in grouped.items():
            misses = "; ".join(f"{b.what} misses {b.miss}" for b in group)
            parts.append(f"- {misses}. {WHY_MISSED.get(prefix, 'Not yet explained.')}")
        parts.append("")
    parts += ["**What changed in the gateway for this run**", "", CHANGES, ""]
    return "\n".join(parts)


def _why_key(what: str) -> str:
    """The WHY_MISSED entry of a bar: overhead bars by percentile and arrival shape
    ("overhead p50 at 200/s, in bursts" → "overhead p50, in bursts"), others by prefix."""
    if what.startswith("overhead"):
        return f"{what.split(' at ')[0]}, {what.rsplit(', ', 1)[-1]}"
    return next((key for key in WHY_MISSED if what.startswith(key)), what)


def write_docs(path: Path, report: dict[str, Any], bars: list[Any]) -> None:
    replace_section(path, START, END, section(report, bars))


def replace_section(path: Path, start: str, end: str, body: str) -> None:
    """Replace only the text between a benchmark's markers (other sections belong to other
    benchmarks); create the file, or append the section, when missing."""
    block = f"{start}\n{body}\n{end}"
    if path.exists():
        text = path.read_text()
        pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + block + "\n"
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        text = ("# Benchmarks\n\nEach section is written by its benchmark under `bench/`.\n\n"
                + block + "\n")
    path.write_text(text)
