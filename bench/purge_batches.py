"""How long a purge holds SQLite's write lock: the first purge after turning retention on.

Builds a SQLite ledger of ``--calls`` records spread evenly over ``--days`` days, then purges
with a 30-day retention while a writer records one call every 10 ms, as a gateway would, and
reports how long the writer waited at worst (and at the 99th percentile). Run twice: with
the purge's batches (``PURGE_BATCH_ROWS``) and, for comparison, as one transaction.

    .venv/bin/python bench/purge_batches.py --calls 1000000
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
from pathlib import Path

from tallygate.domain.records import CallRecord
from tallygate.ledger.service import Ledger
from tallygate.store.calls import insert_calls
from tallygate.store.database import Database
from tallygate.store.retention import PURGE_BATCH_ROWS, purge_before

US = 1_000_000
DAY = 86_400


def build(path: Path, calls: int, days: int, now: float) -> None:
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    step = days * DAY / calls
    batch = 50_000
    for first in range(0, calls, batch):
        insert_calls(db, [CallRecord(
            id=f"c{n:09d}", ts_us=int((now - days * DAY + n * step) * US), model=f"m{n % 7}",
            model_category="chat", call_type="model", api_key_id=f"k{n % 50}",
            input_tokens=n % 900, output_tokens=n % 300, total_tokens=n % 900 + n % 300,
            cost_nano=n % 10_000, latency_ms=n % 2000)
            for n in range(first, min(calls, first + batch))],
            minute_cutoff_s=int(now) - DAY)
    db.dispose()


def measure(path: Path, now: float, batch_rows: int) -> dict[str, float]:
    db = Database(f"sqlite:///{path}")
    ledger = Ledger(db)
    waits: list[float] = []
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            started = time.perf_counter()
            ledger.store([CallRecord(id=f"live-{batch_rows}-{n}", ts_us=int(time.time() * US),
                                     model="m0", model_category="chat", call_type="model")])
            waits.append(time.perf_counter() - started)
            n += 1
            time.sleep(0.01)

    writer = threading.Thread(target=write)
    writer.start()
    time.sleep(0.5)
    started = time.perf_counter()
    deleted, _ = purge_before(db, raw_before_us=int((now - 30 * DAY) * US),
                              minute_before_s=int(now) - 7 * DAY, batch_rows=batch_rows)
    took = time.perf_counter() - started
    time.sleep(0.5)
    stop.set()
    writer.join()
    db.dispose()
    waits.sort()
    return {"deleted": deleted, "purge_s": took, "writes": len(waits),
            "max_wait_ms": waits[-1] * 1000,
            "p99_wait_ms": waits[int(len(waits) * 0.99)] * 1000,
            "median_wait_ms": statistics.median(waits) * 1000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=60)
    args = parser.parse_args()
    now = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        built = Path(tmp) / "built.db"
        started = time.perf_counter()
        build(built, args.calls, args.days, now)
        print(f"built {args.calls:,} calls over {args.days} days in "
              f"{time.perf_counter() - started:.0f} s")
        print("| purge | raw deleted | purge took | writes | writer's longest wait "
              "| p99 wait | median wait |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for label, rows in ((f"batches of {PURGE_BATCH_ROWS:,}", PURGE_BATCH_ROWS),
                            ("one transaction", 10**12)):
            copy = Path(tmp) / f"purge-{rows}.db"
            shutil.copy(built, copy)
            r = measure(copy, now, rows)
            print(f"| {label} | {r['deleted']:,} | {r['purge_s']:.1f} s | {r['writes']:,} "
                  f"| {r['max_wait_ms']:.0f} ms | {r['p99_wait_ms']:.0f} ms "
                  f"| {r['median_wait_ms']:.1f} ms |")


if __name__ == "__main__":
    main()
