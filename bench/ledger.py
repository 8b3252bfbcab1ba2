"""The ledger benchmark: bulk ingest, and the dashboard's 30-day summary + trend at scale.

    python bench/ledger.py [--sizes 1000000,10000000] [--backends sqlite,postgres] [--quick]

For each backend and size it fills a fresh database with a trace-shaped stream of calls over
60 days (:mod:`ledger_traffic`), timing every committed ``Ledger.store`` batch; then it times
``usage_summary`` + ``usage_trend`` (30 days, requests per model per day) and the log-table
peer (:mod:`ledger_peer`) on the same database, and checks that both give the same numbers.
It prints Rich tables, writes ``bench/results/ledger.json`` and its section of
``docs/benchmarks.md``, and drops its databases unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from sqlalchemy import create_engine, func, select, text

import ledger_report
import report
from ledger_peer import peer_dashboard, same_numbers
from ledger_rows import busiest_key, data_shape, table_rows
from ledger_traffic import (
    DAY_US,
    INTERNAL_KEYS,
    KEYS,
    MODELS,
    TrafficStream,
)
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import UsageQuery, usage_summary, usage_trend
from tallygate.ledger.timerange import resolve_range
from tallygate.store.database import Database, engine_url
from tallygate.store.schema import TIERS, calls
from tallygate.store.usage import CallFilter

DEFAULT_POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
# Wide enough for the tables when the output goes to a file or a pipe.
console = Console(width=None if sys.stdout.isatty() else 160)


@dataclass(frozen=True, slots=True)
class Scenario:
    id: str
    label: str
    tz: str
    one_key: bool = False


SCENARIOS = (
    Scenario("all-shanghai", "all keys, Asia/Shanghai", "Asia/Shanghai"),
    Scenario("key-shanghai", "busiest key, Asia/Shanghai", "Asia/Shanghai", one_key=True),
    Scenario("all-new-york", "all keys, America/New_York", "America/New_York"),
)


def size_label(n: int) -> str:
    for unit, suffix in ((1_000_000, "M"), (1_000, "k")):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return str(n)


def parse_size(text_value: str) -> int:
    value = text_value.strip().lower().replace("_", "")
    scale = {"k": 1_000, "m": 1_000_000}.get(value[-1:], 1)
    return int(float(value.rstrip("km")) * scale)


# -- backends ---------------------------------------------------------------------------------


class Backend:
    name = ""

    def url(self, label: str) -> str:
        raise NotImplementedError

    def fresh(self, label: str) -> Database:
        self.drop(label)
        self.create(label)
        db = Database(self.url(label))
        db.upgrade()
        return db

    def create(self, label: str) -> None:
        """Make the empty database (a SQLite file makes itself)."""

    def exists(self, label: str) -> bool:
        raise NotImplementedError

    def drop(self, label: str) -> None:
        raise NotImplementedError

    def after_load(self, db: Database) -> float:
        """Bring the database to its steady state after a bulk load; returns the seconds."""
        return 0.0

    def version(self) -> str | None:
        return None

    def server_cpu_seconds(self, db: Database) -> float | None:
        """CPU used so far by the server processes serving ``db`` (None: no server)."""
        return None

    def describe(self) -> str:
        raise NotImplementedError


class SqliteBackend(Backend):
    name = "sqlite"

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir

    def _path(self, label: str) -> Path:
        return self.workdir / f"ledger-{label}.db"

    def url(self, label: str) -> str:
        return f"sqlite:///{self._path(label)}"

    def exists(self, label: str) -> bool:
        return self._path(label).exists()

    def drop(self, label: str) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self._path(label)}{suffix}").unlink(missing_ok=True)

    def describe(self) -> str:
        return (f"a file on {filesystem(self.workdir)}, WAL, synchronous=NORMAL "
                "(tallygate's settings)")


class PostgresBackend(Backend):
    name = "postgres"

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.admin = create_engine(engine_url(admin_url), isolation_level="AUTOCOMMIT")

    def _name(self, label: str) -> str:
        return f"tallygate_bench_{label.lower()}"

    def url(self, label: str) -> str:
        return f"{self.admin_url.rsplit('/', 1)[0]}/{self._name(label)}"

    def exists(self, label: str) -> bool:
        with self.admin.connect() as conn:
            return conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"),
                                {"n": self._name(label)}).first() is not None

    def drop(self, label: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{self._name(label)}" WITH (FORCE)'))

    def create(self, label: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{self._name(label)}"'))

    def after_load(self, db: Database) -> float:
        # What autovacuum does in steady state: statistics for the planner and a visibility
        # map for index-only scans. Timed apart, never counted as ingest.
        started = time.perf_counter()
        engine = create_engine(db.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text("VACUUM (ANALYZE) " + ", ".join(
                ["calls", *(tier.name for tier in TIERS)])))
        engine.dispose()
        return time.perf_counter() - started

    def server_cpu_seconds(self, db: Database) -> float | None:
        with self.admin.connect() as conn:
            pids = conn.execute(text("SELECT pid FROM pg_stat_activity WHERE datname = :n"),
                                {"n": db.engine.url.database}).scalars().all()
        return sum(report.process_cpu_seconds(pid) for pid in pids)

    def version(self) -> str | None:
        with self.admin.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar_one()).split()[0]

    def settings(self) -> dict[str, str]:
        names = ("shared_buffers", "work_mem", "max_parallel_workers_per_gather",
                 "synchronous_commit", "max_wal_size")
        with self.admin.connect() as conn:
            return {n: str(conn.execute(text(f"SHOW {n}")).scalar_one()) for n in names}

    def describe(self) -> str:
        settings = ", ".join(f"{k}={v}" for k, v in self.settings().items())
        return f"PostgreSQL {self.version()} on 127.0.0.1, stock settings ({settings})"


def filesystem(path: Path) -> str:
    best, kind = "", "unknown"
    resolved = str(path.resolve())
    for line in Path("/proc/mounts").read_text().splitlines():
        _, mount, fstype, *_ = line.split()
        if resolved.startswith(mount) and len(mount) > len(best):
            best, kind = mount, fstype
    return f"{kind} ({resolved})"


# -- measuring --------------------------------------------------------------------------------


def progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), console=console, transient=True)


def ingest(backend: Backend, db: Database, stream: TrafficStream, batch_size: int,
           what: str) -> dict[str, Any]:
    """Store the whole stream in batches; only ``Ledger.store`` (commit included) is timed."""
    ledger = Ledger(db)
    minute_window_us = int(time.time() * 1e6) - ledger.minute_retention_days * DAY_US
    seconds = {"before": 0.0, "window": 0.0}
    counts = {"before": 0, "window": 0}
    batch_ms: list[float] = []
    client_cpu = 0.0
    monitor = report.LoadMonitor()
    with progress() as bar:
        task = bar.add_task(what, total=stream.size)
        for batch in stream.batches(batch_size):
            cpu_started = time.process_time()
            started = time.perf_counter()
            ledger.store(batch)
            elapsed = time.perf_counter() - started
            client_cpu += time.process_time() - cpu_started
            part = "window" if batch[-1].ts_us >= minute_window_us else "before"
            seconds[part] += elapsed
            counts[part] += len(batch)
            batch_ms.append(elapsed * 1000)
            bar.advance(task, len(batch))
    total = sum(seconds.values())
    server_cpu = backend.server_cpu_seconds(db)
    return {
        "batch_size": batch_size,
        "records": stream.size,
        "seconds": round(total, 2),
        "rate": round(stream.size / total),
        "rate_older_than_7_days": round(counts["before"] / seconds["before"])
        if seconds["before"] else None,
        "rate_last_7_days": round(counts["window"] / seconds["window"])
        if seconds["window"] else None,
        "batch_ms_p50": round(report.percentile(batch_ms, 50), 1),
        "batch_ms_p95": round(report.percentile(batch_ms, 95), 1),
        # CPU time per record, of this process inside store() and of the database server's
        # backend: less sensitive than wall time to other work on a shared machine.
        "cpu_us_per_record": {
            "client": round(client_cpu / stream.size * 1e6, 2),
            "server": None if server_cpu is None else round(server_cpu / stream.size * 1e6, 2),
        },
        "load": monitor.finish(),
    }


def timed_repetitions(run: Callable[[], dict[str, float]], warmup: int, reps: int,
                      what: str) -> dict[str, Any]:
    """Run ``warmup`` untimed times, then ``reps`` timed ones; ``run`` returns its parts'
    seconds by name and the total is their sum."""
    samples: dict[str, list[float]] = {}
    monitor = report.LoadMonitor()
    with progress() as bar:
        task = bar.add_task(what, total=warmup + reps)
        for index in range(warmup + reps):
            parts = run()
            bar.advance(task)
            if index < warmup:
                continue
            for name, value in {**parts, "total": sum(parts.values())}.items():
                samples.setdefault(name, []).append(value * 1000)
    result: dict[str, Any] = {"reps": reps, "warmup": warmup}
    for name, values in samples.items():
        result[name] = {"p50_ms": round(report.percentile(values, 50), 2),
                        "p95_ms": round(report.percentile(values, 95), 2),
                        "samples_ms": [round(v, 2) for v in values]}
    result["load"] = monitor.finish()
    return result


def measure_queries(db: Database, scenario: Scenario, key: str, now: datetime,
                    options: argparse.Namespace) -> dict[str, Any]:
    ledger = Ledger(db)
    call_filter = CallFilter(api_key_ids=(key,)) if scenario.one_key else CallFilter()
    answers: dict[str, Any] = {}

    def tallygate() -> dict[str, float]:
        started = time.perf_counter()
        query = UsageQuery(call_filter, resolve_range("30d", None, None, scenario.tz, now=now))
        answers["summary"] = usage_summary(ledger, query)
        middle = time.perf_counter()
        answers["trend"] = usage_trend(ledger, query, metric="requests", granularity="day")
        return {"summary": middle - started, "trend": time.perf_counter() - middle}

    def peer() -> dict[str, float]:
        started = time.perf_counter()
        time_range = resolve_range("30d", None, None, scenario.tz, now=now)
        answers["peer"] = peer_dashboard(db, time_range, key if scenario.one_key else None)
        return {"peer": time.perf_counter() - started}

    result: dict[str, Any] = {"tallygate": timed_repetitions(
        tallygate, options.warmup, options.reps, f"  tallygate, {scenario.label}")}
    if options.peer_reps:
        result["peer"] = timed_repetitions(peer, 1, options.peer_reps,
                                           f"  log-table peer, {scenario.label}")
        result["same_numbers"] = same_numbers(answers["peer"], answers["summary"],
                                              answers["trend"])
    result["model_calls_in_range"] = answers["summary"]["cards"]["model_calls"]
    return result


# -- the run ----------------------------------------------------------------------------------


@contextmanager
def database(backend: Backend, label: str, options: argparse.Namespace,
             fresh: bool = True) -> Iterator[Database]:
    db = backend.fresh(label) if fresh else Database(backend.url(label))
    try:
        yield db
    finally:
        db.dispose()
        if not options.keep:
            backend.drop(label)


def run_size(backend: Backend, size: int, options: argparse.Namespace,
             results: dict[str, Any]) -> None:
    label = size_label(size)
    reuse = options.reuse and backend.exists(label)
    with database(backend, label, options, fresh=not reuse) as db:
        run: dict[str, Any] = {"backend": backend.name, "size": size}
        if reuse:
            with db.read() as conn:
                last_ts = conn.execute(select(func.max(calls.c.ts))).scalar_one()
            end_us = int(last_ts) + 1
            console.print(f"[dim]{backend.name} {label}: reusing the kept database[/dim]")
        else:
            end_us = int(time.time()) * 1_000_000
            stream = TrafficStream(size, end_us=end_us, days=options.days, seed=options.seed,
                                   trace_dir=options.trace_dir)
            run["ingest"] = ingest(backend, db, stream, options.batch_size,
                                   f"{backend.name}: storing {label} calls")
            run["after_load_seconds"] = round(backend.after_load(db), 1)
            line = (f"{backend.name} {label}: {run['ingest']['rate']:,} records/s "
                    f"(batch {options.batch_size:,})")
            console.print(line)
        run["data_end"] = datetime.fromtimestamp(end_us / 1e6, UTC).isoformat()
        run["rows"] = table_rows(db, datetime.fromtimestamp(end_us / 1e6, UTC))
        if "data_shape" not in results:
            results["data_shape"] = data_shape(db)
        now = datetime.fromtimestamp(end_us / 1e6, UTC)
        key = busiest_key(db)
        run["busiest_key"] = key
        run["queries"] = {}
        for scenario in SCENARIOS:
            measured = measure_queries(db, scenario, key, now, options)
            run["queries"][scenario.id] = measured
            peer = measured.get("peer", {}).get("peer", {}).get("p50_ms")
            console.print(f"  {scenario.label}: tallygate p50 "
                          f"{measured['tallygate']['total']['p50_ms']:.1f} ms"
                          + ("" if peer is None else f", peer p50 {peer:,.0f} ms"))
        results["runs"].append(run)
        report.write_json("ledger" + options.results_suffix, results)


def run_small_batches(backend: Backend, size: int, options: argparse.Namespace,
                      results: dict[str, Any]) -> None:
    label = f"{size_label(size)}_b{options.small_batch}"
    with database(backend, label, options) as db:
        stream = TrafficStream(size, end_us=int(time.time()) * 1_000_000, days=options.days,
                               seed=options.seed, trace_dir=options.trace_dir)
        measured = ingest(backend, db, stream, options.small_batch,
                          f"{backend.name}: storing {size_label(size)} calls, "
                          f"batch {options.small_batch:,}")
    results["small_batch"].append({"backend": backend.name, "size": size, "ingest": measured})
    console.print(f"{backend.name} {size_label(size)}: {measured['rate']:,} records/s "
                  f"(batch {options.small_batch:,})")
    report.write_json("ledger" + options.results_suffix, results)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python bench/ledger.py", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--sizes", default=None,
                        help="calls stored, comma-separated (1000000 or 1M); default "
                             "1000000,10000000, with --quick 20000,100000")
    parser.add_argument("--backends", default="sqlite,postgres")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run in about a minute: small sizes and few repetitions; "
                             "writes bench/results/ledger-quick.json and leaves the docs alone")
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--small-batch", type=int, default=2_000,
                        help="also measure ingest at this batch size (the recorder's "
                             "default), on the smallest size; 0 to skip")
    parser.add_argument("--reps", type=int, default=20, help="timed repetitions per query")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs before them")
    parser.add_argument("--peer-reps", type=int, default=3,
                        help="timed repetitions of the peer (after one warm-up); 0 to skip")
    parser.add_argument("--days", type=int, default=60, help="span of the stored calls")
    parser.add_argument("--seed", type=int, default=20231116)
    parser.add_argument("--trace-dir", type=Path, default=None,
                        help="folder with the trace's code.csv and conv.csv (default: the "
                             "copy shipped in tallygate.demo)")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where the SQLite files go (default: a new temporary folder)")
    parser.add_argument("--postgres-url", default=os.environ.get(
        "TALLYGATE_BENCH_POSTGRES_URL", DEFAULT_POSTGRES_URL),
        help="an existing database on the server; the benchmark creates its own beside it")
    parser.add_argument("--keep", action="store_true", help="keep the databases")
    parser.add_argument("--reuse", action="store_true",
                        help="query the databases an earlier --keep run left (give its "
                             "--workdir) instead of loading them again: no ingest figures")
    parser.add_argument("--report-only", action="store_true",
                        help="measure nothing: print the tables of bench/results/ledger.json "
                             "and rewrite the doc section from it (after a change to the "
                             "report's wording)")
    parser.add_argument("--no-docs", action="store_true",
                        help="leave docs/benchmarks.md (and bench/results/ledger.json) alone; "
                             "the results go to bench/results/ledger-nodocs.json")
    options = parser.parse_args(argv)
    if options.sizes is None:
        options.sizes = "20000,100000" if options.quick else "1000000,10000000"
    if options.reuse:
        options.keep = True
    if options.quick:
        options.reps, options.warmup = min(options.reps, 5), min(options.warmup, 1)
        options.peer_reps = min(options.peer_reps, 2)
        options.no_docs = True
    options.size_list = sorted(parse_size(s) for s in options.sizes.split(",") if s.strip())
    options.backend_list = [b.strip() for b in options.backends.split(",") if b.strip()]
    unknown = set(options.backend_list) - {"sqlite", "postgres"}
    if unknown:
        parser.error(f"unknown backend(s): {', '.join(sorted(unknown))}")
    # bench/results/ledger.json always goes with the section of docs/benchmarks.md.
    options.results_suffix = ("-quick" if options.quick
                              else "-nodocs" if options.no_docs else "")
    return options


def publish(results: dict[str, Any], options: argparse.Namespace) -> None:
    """Print the tables and, unless told not to, write the doc section."""
    ledger_report.print_tables(console, results)
    if not options.no_docs:
        doc = report.write_doc_section("ledger", ledger_report.markdown(results))
        console.print(f"section written: {doc.relative_to(report.ROOT)}")


def main(argv: list[str] | None = None) -> int:
    options = parse_args(argv)
    if options.report_only:
        stored: dict[str, Any] = json.loads((report.RESULTS_DIR / "ledger.json").read_text())
        stored["bars"] = ledger_report.bars(stored)
        publish(stored, options)
        return 0
    made_workdir = options.workdir is None
    workdir = options.workdir or Path(tempfile.mkdtemp(prefix="tallygate-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    backends: list[Backend] = []
    for name in options.backend_list:
        backends.append(SqliteBackend(workdir) if name == "sqlite"
                        else PostgresBackend(options.postgres_url))
    postgres = next((b for b in backends if isinstance(b, PostgresBackend)), None)
    results: dict[str, Any] = {
        "benchmark": "ledger",
        "date": report.now_utc(),
        "command": report.command_line(),
        "machine": report.machine(postgres.version() if postgres else None),
        "backends": {b.name: b.describe() for b in backends},
        "settings": {
            "sizes": options.size_list, "days": options.days, "batch_size": options.batch_size,
            "small_batch": options.small_batch, "reps": options.reps,
            "warmup": options.warmup, "peer_reps": options.peer_reps, "seed": options.seed,
            "keys": KEYS, "internal_keys": INTERNAL_KEYS,
            "models": [{"name": m.name, "category": m.category, "kind": m.kind,
                        "trace": m.source} for m in MODELS],
        },
        "runs": [],
        "small_batch": [],
        "load_start": os.getloadavg(),
    }
    console.print(f"[bold]tallygate ledger benchmark[/bold] — {results['machine']['cpu']}, "
                  f"{results['machine']['cores']} cores, load {os.getloadavg()[0]:.2f}")
    started = time.perf_counter()
    try:
        for backend in backends:
            for size in options.size_list:
                run_size(backend, size, options, results)
            if options.small_batch and not options.reuse:
                run_small_batches(backend, options.size_list[0], options, results)
    finally:
        if made_workdir and not options.keep:
            shutil.rmtree(workdir, ignore_errors=True)
    results["load_end"] = os.getloadavg()
    results["minutes"] = round((time.perf_counter() - started) / 60, 1)
    results["bars"] = ledger_report.bars(results)
    path = report.write_json("ledger" + options.results_suffix, results)
    publish(results, options)
    console.print(f"raw numbers: {path.relative_to(report.ROOT)}")
    if options.keep:
        console.print(f"databases kept (SQLite files in {workdir})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
