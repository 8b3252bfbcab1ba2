"""The export benchmark: stream millions of call records to CSV and watch the memory.

    python bench/export.py [--records 5000000] [--format csv] [--via library|api] [--keep DB]

It fills a fresh SQLite ledger with ``--records`` synthetic call records over 30 days (or
reuses ``--keep``'s file when it already holds them), then, in a fresh process that has only
opened the ledger, streams every record through the export path the API uses
(``ledger.export.calls_stream`` over ``store.export.stream_calls``; with ``--via api`` through
``GET /api/v1/usage/export`` itself) and discards the bytes, sampling the process's resident
memory every 50 ms. The bar (issue 5): RSS growth under 100 MB. It prints the result, writes
``bench/results/export.json`` and its section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import report
from tallygate.domain.records import CallRecord
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database

US = 1_000_000
DAY_US = 86400 * US
BATCH = 20_000
BAR_MB = 100
MODELS = (("cltech/deepseek-r1-32b", "chat", "/v1/chat/completions"),
          ("deepseek-r1-distill-llama-70b", "chat", "/v1/chat/completions"),
          ("qwen2.5-coder-7b", "completion", "/v1/completions"),
          ("bge-m3", "embedding", "/v1/embeddings"),
          ("cltech/rerank-service", "rerank", "/v1/rerank"))
KEYS = tuple(f"bench-key-{n:02d}" for n in range(12))


def rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def synthetic_calls(count: int, end_us: int, seed: int = 5) -> Any:
    """``count`` varied records over the 30 days before ``end_us``, in time order."""
    rng = random.Random(seed)
    start_us = end_us - 30 * DAY_US
    step = (end_us - start_us) / count
    batch: list[CallRecord] = []
    for n in range(count):
        ts = start_us + int(n * step) + rng.randrange(max(1, int(step)))
        model, category, endpoint = MODELS[rng.randrange(len(MODELS))]
        status = 200 if rng.random() > 0.02 else rng.choice((429, 500, 502))
        inputs = rng.randrange(50, 8000) if status == 200 else 0
        outputs = rng.randrange(0, 1500) if status == 200 else 0
        batch.append(CallRecord(
            id=f"{ts:016x}-{n:08x}", ts_us=ts, model=model,
            call_type="internal" if n % 9 == 0 else "model", api_key_id=KEYS[n % len(KEYS)],
            model_category=category, endpoint=endpoint, status_code=status,
            input_tokens=inputs, output_tokens=outputs, cached_input_tokens=inputs // 4,
            reasoning_tokens=outputs // 3, total_tokens=inputs + outputs,
            cost_nano=inputs * 500 + outputs * 2000, latency_ms=rng.randrange(20, 9000),
            ttft_ms=rng.randrange(10, 900) if n % 3 == 0 else None, estimated=n % 97 == 0,
            metadata={"team": "search", "job": f"j{n % 50}"} if n % 10 == 0 else None))
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def fill(path: Path, count: int, end_us: int) -> dict[str, Any]:
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    ledger = Ledger(db)
    started = time.perf_counter()
    stored = 0
    for batch in synthetic_calls(count, end_us):
        stored += ledger.store(batch).accepted
        if stored % 1_000_000 < BATCH:
            print(f"  stored {stored:,}", flush=True)
    db.dispose()
    return {"records": stored, "fill_seconds": round(time.perf_counter() - started, 1)}


def measure(path: Path, fmt: str, via: str) -> dict[str, Any]:
    """In this (fresh) process: stream the export, discard it, sample RSS."""
    from tallygate.ledger import export
    from tallygate.store.export import stream_calls
    from tallygate.store.usage import CallFilter

    db = Database(f"sqlite:///{path}")
    gc.collect()
    samples: list[int] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            samples.append(rss_bytes())
            time.sleep(0.05)

    client = None
    if via == "api":
        from fastapi.testclient import TestClient

        from tallygate.app import create_app
        from tallygate.config import load_settings

        settings = load_settings(database_url=db.url, admin_token="bench-admin-token")
        client = TestClient(create_app(settings))
        client.__enter__()
    baseline = rss_bytes()
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    written = rows = 0
    if client is None:
        chunks = export.calls_stream(fmt, stream_calls(db, CallFilter(), 0, 2**62))
        for chunk in chunks:
            written += len(chunk)
            rows += chunk.count(b"\n")
    else:
        with client.stream("GET", "/api/v1/usage/export",
                           params={"format": fmt, "what": "calls", "start": "2020-01-01",
                                   "end": "2029-01-01"},
                           headers={"Authorization": "Bearer bench-admin-token"}) as response:
            assert response.status_code == 200, response.read()
            for chunk in response.iter_bytes():
                written += len(chunk)
                rows += chunk.count(b"\n")
    seconds = time.perf_counter() - started
    done.set()
    sampler.join()
    if client is not None:
        client.__exit__(None, None, None)
    peak = max(samples + [rss_bytes()])
    return {"format": fmt, "via": via, "rows": rows - 1, "bytes": written,
            "seconds": round(seconds, 1), "rows_per_second": round((rows - 1) / seconds),
            "rss_before_mb": round(baseline / 2**20, 1), "rss_peak_mb": round(peak / 2**20, 1),
            "rss_growth_mb": round((peak - baseline) / 2**20, 1),
            "rss_last_mb": round(samples[-1] / 2**20, 1) if samples else None,
            "rss_curve_mb": [round(s / 2**20) for s in samples[:: max(1, len(samples) // 20)]]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=5_000_000)
    parser.add_argument("--format", default="csv")
    parser.add_argument("--via", default="library,api",
                        help="library, api, or both (comma-separated)")
    parser.add_argument("--keep", type=Path, help="Ledger file to reuse (filled if empty)")
    parser.add_argument("--measure-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure_only:
        print(json.dumps(measure(args.measure_only, args.format, args.via)))
        return
    workdir = None
    path = args.keep
    if path is None:
        workdir = tempfile.TemporaryDirectory(prefix="tallygate-export-")
        path = Path(workdir.name) / "ledger.db"
    filled: dict[str, Any] = {"records": args.records, "fill_seconds": None}
    if not path.exists() or path.stat().st_size == 0:
        print(f"filling {path} with {args.records:,} call records …", flush=True)
        filled = fill(path, args.records, time.time_ns() // 1000)
    results = []
    for via in args.via.split(","):
        print(f"exporting as {args.format} via {via} …", flush=True)
        out = subprocess.run([sys.executable, __file__, "--measure-only", str(path),
                              "--format", args.format, "--via", via],
                             check=True, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": str(Path(__file__).parent)})
        result = json.loads(out.stdout.strip().splitlines()[-1])
        result["passed"] = result["rss_growth_mb"] < BAR_MB
        print(json.dumps({k: v for k, v in result.items() if k != "rss_curve_mb"}))
        print(f"RSS growth {result['rss_growth_mb']} MB: "
              f"{'under' if result['passed'] else 'OVER'} the {BAR_MB} MB bar", flush=True)
        results.append(result)
    database_mb = round(path.stat().st_size / 2**20)
    if workdir is not None:
        workdir.cleanup()
    machine = report.machine()
    report.write_json("export", {"machine": machine, "when": report.now_utc(),
                                 "command": report.command_line(), **filled,
                                 "database_mb": database_mb, "bar_mb": BAR_MB,
                                 "runs": results})
    table = report.markdown_table(
        ["records", "format", "through", "exported in", "rows/s", "RSS before", "RSS peak",
         "RSS growth", "bar"],
        [[f"{r['rows']:,}", r["format"], _THROUGH[r["via"]], f"{r['seconds']} s",
          f"{r['rows_per_second']:,}", f"{r['rss_before_mb']} MB", f"{r['rss_peak_mb']} MB",
          f"**{r['rss_growth_mb']} MB**",
          f"< {BAR_MB} MB: {'met' if r['passed'] else 'NOT met'}"] for r in results],
        align="lllrrrrrl")
    curves = "; ".join(f"{_THROUGH[r['via']]}: {', '.join(map(str, r['rss_curve_mb']))}"
                       for r in results)
    report.write_doc_section("export", f"""## Export: 5 M call records in flat memory

`{report.command_line()}`, {report.now_utc()}, on {machine['cpu']} ({machine['cores']} cores,
{machine['ram_gib']} GiB, {machine['os']}, Python {machine['python']}, SQLite
{machine['sqlite']}). For each row a fresh process opens the ledger (a {database_mb:,} MB
SQLite file of synthetic call records over 30 days) and streams every record as
{results[0]['format'].upper()} through the export path (`ledger.export.calls_stream` over
`store.export.stream_calls`: 5 000 rows a page by keyset, a short read transaction each, an
8 MiB SQLite page cache for the scan), discarding the output; "API" goes through
`GET /api/v1/usage/export` itself (the app in-process, the HTTP client reading the stream).
Resident memory is sampled every 50 ms; "growth" is the peak minus the resident memory just
before the export started (imports done, ledger open). The bar is on memory; the times depend
on what else the machine was doing (here: other developers' test runs).

{table}

RSS over the export, in MB, sampled evenly from start to end: {curves}.
""")


_THROUGH = {"library": "library", "api": "API"}


if __name__ == "__main__":
    main()
