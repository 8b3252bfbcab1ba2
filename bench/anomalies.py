"""Anomaly detection, measured: false alarms on normal demo traffic, and recall of injected
incidents.

    python bench/anomalies.py [--seeds 5] [--multipliers 3,5,10] [--thresholds 4,5,6]

For each seed it seeds the demo ledger (``seed_demo``: 60 days of traffic and the demo's one
spike) in a temporary SQLite file and runs :func:`find_anomalies` over the days that have a
full baseline behind them. Every anomaly the demo's spike does not explain is a false alarm.
Then, on a copy per size, it injects one incident of each kind (``demo.incidents``: a burst of
calls, a burst of tokens, a whole day, a burst of errors, a first use of a model, each at a
random key, model and time, sized relative to the key's mean volume) and counts the ones
found. It prints the tables, writes ``bench/results/anomalies.json`` and its section of
``docs/anomalies.md``.
"""

from __future__ import annotations

import argparse
import random
import shutil
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any

import report
from tallygate.demo.generate import plan_spike
from tallygate.demo.incidents import KINDS, Incident, evaluate, inject, plan_incidents
from tallygate.demo.seed import seed_demo
from tallygate.keys.service import KeyService
from tallygate.ledger.anomalies import AnomalyParams, find_anomalies
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import UsageQuery
from tallygate.ledger.timerange import resolve_range
from tallygate.store.database import Database
from tallygate.store.usage import CallFilter

DAYS = 60
WARMUP_DAYS = 15  # the first days have no full 14-day hourly baseline behind them
US = 1_000_000
DOC = report.ROOT / "docs" / "anomalies.md"


def _query(start_us: int, end_us: int) -> UsageQuery:
    def iso(ts_us: int) -> str:
        return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts_us // US))

    return UsageQuery(CallFilter(), resolve_range(None, iso(start_us), iso(end_us), "UTC"))


def _series_buckets(ledger: Ledger, start_us: int, end_us: int) -> tuple[int, int]:
    """Key and model series × hours and × days in the window: the chances to false-alarm."""
    from tallygate.store.anomalies import first_use

    pairs = first_use(ledger.db)
    series = len({k for k, _ in pairs}) + len({m for _, m in pairs})
    hours = (end_us - start_us) // (3600 * US)
    return series * hours, series * hours // 24


def run_seed(seed: int, workdir: Path, multipliers: list[float], thresholds: list[float],
             now_us: int) -> dict[str, Any]:
    path = workdir / f"seed-{seed}.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    seeded = seed_demo(Ledger(db), KeyService(db), now_us=now_us, days=DAYS, seed=seed)
    db.dispose()
    spike = plan_spike(now_us)
    demo_incident = Incident("calls", spike.key_name, spike.model, spike.start_us,
                             spike.end_us, spike.extra_calls, 10)
    start_us = (now_us - (DAYS - WARMUP_DAYS) * 86400 * US) // (3600 * US) * 3600 * US
    query = _query(start_us, now_us)
    result: dict[str, Any] = {"seed": seed, "records": seeded.records, "normal": {},
                              "injected": {}}
    ledger = Ledger(Database(f"sqlite:///{path}"))
    hours, days = _series_buckets(ledger, start_us, now_us)
    result["series_hours"], result["series_days"] = hours, days
    for threshold in thresholds:
        params = AnomalyParams(threshold=threshold)
        found = find_anomalies(ledger, query, params, now_us=now_us)
        outcome = evaluate(found, [demo_incident], seeded.key_ids)
        result["normal"][threshold] = {
            "demo_spike_found": not outcome.missed,
            "false_alarms": Counter(f"{a.kind}/{a.granularity or '-'}"
                                    for a in outcome.false_alarms),
            "examples": [a.as_dict(query.range.tz, {}) for a in outcome.false_alarms[:5]],
        }
    ledger.db.dispose()
    rng = random.Random(seed)
    for multiplier in multipliers:
        copy = workdir / f"seed-{seed}-x{multiplier}.db"
        shutil.copy(path, copy)
        ledger = Ledger(Database(f"sqlite:///{copy}"))
        incidents = plan_incidents(rng, now_us=now_us, first_us=start_us,
                                   kinds=KINDS, multiplier=multiplier,
                                   avoid_us=(spike.start_us,))
        inject(ledger, incidents, seeded.key_ids, seed)
        per_threshold = {}
        for threshold in thresholds:
            found = find_anomalies(ledger, query, AnomalyParams(threshold=threshold),
                                   now_us=now_us)
            outcome = evaluate(found, [demo_incident, *incidents], seeded.key_ids)
            per_threshold[threshold] = {
                "found": [i.kind for i in outcome.found if i is not demo_incident],
                "missed": [replace(i, model=i.model).__repr__() for i in outcome.missed],
                "missed_kinds": [i.kind for i in outcome.missed],
                "false_alarms": len(outcome.false_alarms),
            }
        result["injected"][multiplier] = per_threshold
        ledger.db.dispose()
        copy.unlink()
    path.unlink()
    return result


def summarise(results: list[dict[str, Any]], multipliers: list[float],
              thresholds: list[float]) -> tuple[str, dict[str, Any]]:
    hours = sum(r["series_hours"] for r in results)
    days = sum(r["series_days"] for r in results)
    rows = []
    summary: dict[str, Any] = {"series_hours": hours, "series_days": days, "thresholds": {}}
    for threshold in thresholds:
        alarms: Counter[str] = Counter()
        for r in results:
            alarms.update(r["normal"][threshold]["false_alarms"])
        hourly = sum(v for k, v in alarms.items() if not k.endswith("/day"))
        daily = alarms.get("spike/day", 0)
        demo_found = sum(r["normal"][threshold]["demo_spike_found"] for r in results)
        recall = {}
        for m in multipliers:
            found = Counter(k for r in results for k in r["injected"][m][threshold]["found"])
            total = len(results) * len(KINDS)
            recall[m] = (sum(found.values()), total)
        summary["thresholds"][threshold] = {"false_alarms": dict(alarms),
                                            "demo_spike_found": demo_found,
                                            "recall": {str(m): v for m, v in recall.items()}}
        rows.append([
            f"{threshold:g}" + (" (default)" if threshold == AnomalyParams().threshold else ""),
            f"{demo_found}/{len(results)}",
            f"{hourly} in {hours:,} ({hourly / hours:.2e})",
            f"{daily} in {days:,} ({daily / days:.2e})",
            *(f"{recall[m][0]}/{recall[m][1]}" for m in multipliers),
        ])
    table = report.markdown_table(
        ["threshold", "demo spike found", "false alarms per series-hour",
         "false alarms per series-day", *(f"incidents found at {m:g}×" for m in multipliers)],
        rows)
    missed = Counter(k for r in results for m in multipliers
                     for k in r["injected"][m][AnomalyParams().threshold]["missed_kinds"])
    return table, {**summary, "missed_at_default": dict(missed)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--multipliers", default="3,5,10")
    parser.add_argument("--thresholds", default="4,5,6")
    args = parser.parse_args()
    multipliers = [float(m) for m in args.multipliers.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    now_us = time.time_ns() // 1000 // (3600 * US) * 3600 * US
    started = time.monotonic()
    results = []
    with tempfile.TemporaryDirectory(prefix="tallygate-anomalies-") as workdir:
        for n in range(args.seeds):
            seed = 20231116 + n
            print(f"seed {seed} …", flush=True)
            results.append(run_seed(seed, Path(workdir), multipliers, thresholds, now_us))
    table, summary = summarise(results, multipliers, thresholds)
    for r in results:
        for threshold, normal in r["normal"].items():
            for example in normal["examples"]:
                print(f"  seed {r['seed']} threshold {threshold}: {example['message']} "
                      f"at {example['start']} (score {example['score']})")
    print(table)
    payload = {"machine": report.machine(), "when": report.now_utc(),
               "command": report.command_line(), "seconds": round(time.monotonic() - started),
               "seeds": [r["seed"] for r in results], "summary": summary,
               "runs": [{k: v for k, v in r.items() if k != "normal"} | {
                   "normal": {str(t): {"demo_spike_found": n["demo_spike_found"],
                                       "false_alarms": dict(n["false_alarms"])}
                              for t, n in r["normal"].items()}} for r in results]}
    report.write_json("anomalies", payload)
    kinds = ", ".join(KINDS)
    markdown = f"""Measured {report.now_utc()} by `{report.command_line()}` ({len(results)} seeds
of `seed_demo`, {DAYS} days each, the last {DAYS - WARMUP_DAYS} days evaluated; each series
is one key or one model; {round(time.monotonic() - started)} s on {report.machine()['cpu']}).
"Incidents found" counts, over all seeds, the injected incidents ({kinds}: one of each per
seed and size) that detection reported; a size of 10× is the demo's own spike.

{table}

Incidents missed at the default threshold, by kind: {summary['missed_at_default'] or 'none'}.
"""
    report.write_doc_section("anomalies", markdown, doc=DOC)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
