"""What every benchmark reports alongside its numbers: the machine, how busy it was, and
where the results go (a JSON file under ``bench/results`` and a marked section of
``docs/benchmarks.md`` that only that benchmark rewrites)."""

from __future__ import annotations

import json
import math
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS_DIR = ROOT / "bench" / "results"
BENCHMARKS_DOC = ROOT / "docs" / "benchmarks.md"
DOC_HEADER = """# Benchmarks

Every table on this page is written by a benchmark in `bench/`, from one run on the machine it
names; each benchmark owns the section between its `<!-- bench:NAME:start -->` and
`<!-- bench:NAME:end -->` markers and rewrites only that. Re-run a benchmark to refresh its
section.
"""


def percentile(samples: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0–100), linear between the closest ranks."""
    ordered = sorted(samples)
    if not ordered:
        return math.nan
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""


def machine(postgres_version: str | None = None) -> dict[str, Any]:
    """CPU, cores, memory, OS and the versions the results depend on."""
    cpuinfo = _read("/proc/cpuinfo")
    cpu = next((line.split(":", 1)[1].strip() for line in cpuinfo.splitlines()
                if line.startswith("model name")), platform.processor() or "unknown")
    mem_kb = next((int(line.split()[1]) for line in _read("/proc/meminfo").splitlines()
                   if line.startswith("MemTotal:")), 0)
    os_name = next((line.split("=", 1)[1].strip('"') for line in
                    _read("/etc/os-release").splitlines() if line.startswith("PRETTY_NAME=")),
                   platform.system())
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": round(mem_kb / 1024 / 1024, 1),
        "os": f"{os_name}, Linux {platform.release()}",
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "postgresql": postgres_version,
    }


@dataclass(frozen=True, slots=True)
class _CpuSnapshot:
    at: float
    busy: float  # seconds of all CPUs busy since boot (steal included)
    steal: float
    own: float  # this process
    postgres: float  # every process named postgres (the server's backends)


def _clock_ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK"))


def _postgres_cpu() -> float:
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        name = stat[stat.index("(") + 1:stat.rindex(")")]
        if name.startswith("postgres"):
            fields = stat[stat.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
    return total / _clock_ticks()


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU of a process since it started (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _clock_ticks()


def _snapshot() -> _CpuSnapshot:
    line = _read("/proc/stat").splitlines()[0].split()
    values = [int(v) for v in line[1:]]
    idle = values[3] + values[4]  # idle + iowait
    busy = sum(values[:8]) - idle
    times = os.times()
    return _CpuSnapshot(time.monotonic(), busy / _clock_ticks(), values[7] / _clock_ticks(),
                        times.user + times.system, _postgres_cpu())


class LoadMonitor:
    """How many cores were busy during a phase, and with what: this benchmark, the
    PostgreSQL server, or anything else (other people's work on a shared machine)."""

    def __init__(self) -> None:
        self._start = _snapshot()
        self.load_before = os.getloadavg()

    def finish(self) -> dict[str, float]:
        end = _snapshot()
        wall = max(end.at - self._start.at, 1e-9)
        busy = (end.busy - self._start.busy) / wall
        own = (end.own - self._start.own) / wall
        postgres = (end.postgres - self._start.postgres) / wall
        return {
            "seconds": round(wall, 1),
            "cores_busy": round(busy, 2),
            "cores_benchmark": round(own, 2),
            "cores_postgres": round(postgres, 2),
            "cores_other": round(max(busy - own - postgres, 0.0), 2),
            "steal": round((end.steal - self._start.steal) / wall, 2),
            "loadavg_1m_before": round(self.load_before[0], 2),
            "loadavg_1m_after": round(os.getloadavg()[0], 2),
        }


def command_line() -> str:
    args = " ".join(sys.argv[1:])
    return f"python bench/{Path(sys.argv[0]).name}" + (f" {args}" if args else "")


def now_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def write_json(name: str, payload: dict[str, Any]) -> Path:
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{name}.json"
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(payload, indent=2, sort_keys=False) + "\n")
    temporary.replace(path)
    return path


def write_doc_section(name: str, markdown: str, doc: Path = BENCHMARKS_DOC) -> Path:
    """Replace this benchmark's section of the benchmarks page (appending it the first
    time), leaving every other section as it is."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    block = f"{start}\n{markdown.strip()}\n{end}"
    text = doc.read_text() if doc.exists() else DOC_HEADER
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    doc.parent.mkdir(parents=True, exist_ok=True)
    doc.write_text(text)
    return doc


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]],
                   align: str | None = None) -> str:
    """``align``: one letter per column, ``l`` or ``r`` (default: first left, rest right)."""
    align = align or "l" + "r" * (len(header) - 1)
    rule = ["---" if a == "l" else "---:" for a in align]
    lines = [header, rule, *rows]
    return "\n".join("| " + " | ".join(cells) + " |" for cells in lines)
