"""The reprice benchmark: how long does a year's `pricing recompute` hold the write lock?

    python bench/reprice.py [--records 300000] [--days 365] [--keep DB] [--before-src DIR]

It fills a fresh SQLite ledger with ``--records`` synthetic call records over ``--days`` days
(or reuses ``--keep``'s file), all stored at cost 0, then sets a price for every model from
the epoch, so that repricing the whole range changes every record: the worst case, a price
correction for a year. Each run works on a fresh copy of that file, in a fresh process that
times every write transaction the reprice commits (from BEGIN IMMEDIATE to COMMIT) while a
second thread stores one call record every 20 ms, as a gateway would, and times each store
(waiting for the lock included). ``--before-src`` runs the same against another checkout's
``src`` as well (e.g. the code before repricing was batched). It prints the result, writes
``bench/results/reprice.json`` and its section of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import report

US = 1_000_000
DAY_S = 86400
MODELS = ("chat-a", "chat-b", "coder", "embed", "rerank")
KEYS = tuple(f"bench-key-{n:02d}" for n in range(12))
SRC = Path(__file__).resolve().parent.parent / "src"


def fill(path: Path, count: int, days: int) -> None:
    from tallygate.domain.records import CallRecord
    from tallygate.ledger.service import Ledger
    from tallygate.store.database import Database

    db = Database(f"sqlite:///{path}")
    db.upgrade()
    ledger = Ledger(db)
    rng = random.Random(13)
    end_s = int(time.time()) // 60 * 60
    start_s = end_s - days * DAY_S
    step = (end_s - start_s) / count
    batch: list[Any] = []
    for n in range(count):
        ts_us = int((start_s + n * step) * US) + rng.randrange(max(1, int(step * US)))
        batch.append(CallRecord(
            id=f"bench-{n:09d}", ts_us=ts_us, model=MODELS[n % len(MODELS)],
            call_type="model", api_key_id=KEYS[rng.randrange(len(KEYS))],
            model_category="chat", status_code=200, input_tokens=rng.randrange(50, 4000),
            output_tokens=rng.randrange(1, 800), total_tokens=0, cost_nano=0))
        if len(batch) == 20_000:
            ledger.store(batch)
            batch = []
    if batch:
        ledger.store(batch)
    db.dispose()
    # Everything into the main file, so that copying the file copies the ledger.
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


CHILD = r"""
import json, sys, threading, time
from contextlib import contextmanager
from decimal import Decimal
from tallygate.domain.pricing import Price
from tallygate.domain.records import CallRecord
from tallygate.ledger.reprice import reprice
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database

path, days, models = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
db = Database(f"sqlite:///{path}")
ledger = Ledger(db)
for model in models:
    ledger.set_price(Price(model, 0, Decimal("0.5"), Decimal("1.5")))
main = threading.get_ident()
transactions = []
original = Database.write

@contextmanager
def timed(self):
    with original(self) as conn:
        started = time.perf_counter()
        yield conn
    if threading.get_ident() == main:
        transactions.append(time.perf_counter() - started)

Database.write = timed
stop = threading.Event()
waits = []

def writer():
    n = 0
    while not stop.is_set():
        started = time.perf_counter()
        ledger.store([CallRecord(id=f"live-{n}", ts_us=int(time.time() * 1e6), model="live",
                                 call_type="model", input_tokens=1, total_tokens=1)])
        waits.append(time.perf_counter() - started)
        n += 1
        time.sleep(0.02)

thread = threading.Thread(target=writer)
thread.start()
end_us = (int(time.time()) // 60 + 1) * 60 * 1_000_000
started = time.perf_counter()
result = reprice(ledger, end_us - (days + 1) * 86400 * 1_000_000, end_us)
seconds = time.perf_counter() - started
stop.set()
thread.join()
waits.sort()
print(json.dumps({"seconds": seconds, "changed": result.changed,
                  "transactions": len(transactions),
                  "longest_transaction_s": max(transactions, default=0.0),
                  "writes": len(waits), "writer_p99_s": waits[int(len(waits) * 0.99)],
                  "writer_max_s": waits[-1]}))
"""


def run(label: str, src: Path, pristine: Path, days: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as work:
        copy = Path(work) / "ledger.db"
        shutil.copyfile(pristine, copy)
        env = {**os.environ, "PYTHONPATH": str(src)}
        done = subprocess.run([sys.executable, "-c", CHILD, str(copy), str(days),
                               ",".join(MODELS)], env=env, check=True, capture_output=True,
                              text=True)
    result: dict[str, Any] = {"code": label, **json.loads(done.stdout.strip().splitlines()[-1])}
    print(f"{label}: {result}", flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--keep", type=Path, help="reuse (or create) this ledger file")
    parser.add_argument("--before-src", type=Path, help="another checkout's src to compare")
    args = parser.parse_args()
    workdir = None
    if args.keep is not None:
        pristine = args.keep
    else:
        workdir = tempfile.TemporaryDirectory()
        pristine = Path(workdir.name) / "pristine.db"
    if not pristine.exists():
        print(f"filling {pristine} with {args.records:,} records over {args.days} days",
              flush=True)
        fill(pristine, args.records, args.days)
    runs = []
    if args.before_src is not None:
        runs.append(run("before", args.before_src, pristine, args.days))
    runs.append(run("this code", SRC, pristine, args.days))
    database_mb = round(pristine.stat().st_size / 2**20)
    if workdir is not None:
        workdir.cleanup()
    machine = report.machine()
    report.write_json("reprice", {"machine": machine, "when": report.now_utc(),
                                  "command": report.command_line(), "records": args.records,
                                  "days": args.days, "database_mb": database_mb,
                                  "runs": runs})
    table = report.markdown_table(
        ["code", "records repriced", "total", "write transactions", "longest transaction",
         "a live write waited: p99", "max"],
        [[r["code"], f"{r['changed']:,}", f"{r['seconds']:.1f} s", f"{r['transactions']:,}",
          f"**{r['longest_transaction_s'] * 1000:,.0f} ms**",
          f"{r['writer_p99_s'] * 1000:,.0f} ms", f"{r['writer_max_s'] * 1000:,.0f} ms"]
         for r in runs], align="lrrrrrr")
    report.write_doc_section("reprice", f"""## Reprice: a year's price correction under traffic

`{report.command_line()}`, {report.now_utc()}, on {machine['cpu']} ({machine['cores']} cores,
{machine['ram_gib']} GiB, {machine['os']}, Python {machine['python']}, SQLite
{machine['sqlite']}). A {database_mb:,} MB SQLite ledger of {args.records:,} call records over
{args.days} days, all stored at cost 0; a price for every model from the epoch, then
`pricing recompute` over the whole range, so every record changes (the worst case). Each row
runs on a fresh copy of the file in a fresh process; a second thread stores one call record
every 20 ms meanwhile, as a gateway would. "Longest transaction" is the longest the reprice
held SQLite's write lock (BEGIN IMMEDIATE to COMMIT); "a live write waited" is how long those
stores took, waiting for the lock included. "Before" is the code before issue 13 (one
transaction for the whole range, minute rows walked for every call; `--before-src` pointed at
`git archive b1d3d3c src`).

{table}
""")


if __name__ == "__main__":
    main()
