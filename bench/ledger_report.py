"""The ledger benchmark's results as bars with PASS/MISS, Rich tables and Markdown."""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.table import Table

from report import markdown_table

SQLITE_INGEST_BAR = 100_000
POSTGRES_INGEST_BAR = 50_000
INGEST_BARS = {"sqlite": SQLITE_INGEST_BAR, "postgres": POSTGRES_INGEST_BAR}
QUERY_P50_BAR_MS = 50.0
QUERY_GROWTH_BAR = 1.5
BACKEND_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}
SCENARIO_LABELS = {
    "all-shanghai": "all keys, Asia/Shanghai",
    "key-shanghai": "busiest key, Asia/Shanghai",
    "all-new-york": "all keys, America/New_York",
}
BUSY_CORES = 0.3  # other work above this share of a core makes a phase "busy"


def label(n: int) -> str:
    for unit, suffix in ((1_000_000, " M"), (1_000, " k")):
        if n >= unit and n % unit == 0:
            return f"{n // unit}{suffix}"
    return f"{n:,}"


def _runs(n: int) -> str:
    return f"{n} run" if n == 1 else f"{n} runs"


def _ratio(value: float) -> str:
    return f"× {value:,.0f}" if value >= 10 else f"× {value:.1f}"


def _num(value: float | int | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}".replace(",", " ")


def bars(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Every bar of PRODUCT.md §9 this run can judge, with the measured value."""
    found: list[dict[str, Any]] = []
    for run in results["runs"]:
        if "ingest" not in run:
            continue
        bar = INGEST_BARS[run["backend"]]
        rate = run["ingest"]["rate"]
        found.append({
            "what": f"bulk ingest, {BACKEND_NAMES[run['backend']]}, to {label(run['size'])} "
                    f"stored, batch {_num(run['ingest']['batch_size'])}",
            "value": f"{_num(rate)} records/s", "bar": f"≥ {_num(bar)}/s",
            "pass": rate >= bar, "ratio": round(rate / bar, 2),
        })
    by_backend: dict[str, list[dict[str, Any]]] = {}
    for run in results["runs"]:
        by_backend.setdefault(run["backend"], []).append(run)
    for backend, runs in by_backend.items():
        runs = sorted(runs, key=lambda r: r["size"])
        small, large = runs[0], runs[-1]
        for scenario in large["queries"]:
            p50 = large["queries"][scenario]["tallygate"]["total"]["p50_ms"]
            found.append({
                "what": f"summary + trend, 30 days, {BACKEND_NAMES[backend]}, "
                        f"{SCENARIO_LABELS[scenario]}, {label(large['size'])} stored",
                "value": f"p50 {p50:.1f} ms", "bar": f"≤ {QUERY_P50_BAR_MS:.0f} ms",
                "pass": p50 <= QUERY_P50_BAR_MS, "ratio": round(p50 / QUERY_P50_BAR_MS, 2),
            })
            if small is large:
                continue
            base = small["queries"][scenario]["tallygate"]["total"]["p50_ms"]
            growth = p50 / base
            found.append({
                "what": f"summary + trend growth {label(small['size'])} → "
                        f"{label(large['size'])}, {BACKEND_NAMES[backend]}, "
                        f"{SCENARIO_LABELS[scenario]}",
                "value": f"× {growth:.2f} ({base:.1f} → {p50:.1f} ms)",
                "bar": f"≤ × {QUERY_GROWTH_BAR}", "pass": growth <= QUERY_GROWTH_BAR,
                "ratio": round(growth / QUERY_GROWTH_BAR, 2),
            })
    return found


def _ingest_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    entries = [(r["backend"], r["size"], r["ingest"], True) for r in results["runs"]
               if "ingest" in r]
    entries += [(r["backend"], r["size"], r["ingest"], False) for r in results["small_batch"]]
    for backend, size, ingest, judged in entries:
        bar = INGEST_BARS[backend]
        verdict = ("PASS" if ingest["rate"] >= bar else "MISS") if judged else (
            "above" if ingest["rate"] >= bar else "below") + " (bar set at batch 10 000)"
        rows.append([
            BACKEND_NAMES[backend], label(size), _num(ingest["batch_size"]),
            _num(ingest["rate"]), _num(ingest["rate_older_than_7_days"]),
            _num(ingest["rate_last_7_days"]),
            f"{_num(ingest['batch_ms_p50'], 1)} / {_num(ingest['batch_ms_p95'], 1)}",
            _cpu(ingest), f"{ingest['load']['cores_other']:.2f}",
            f"{verdict} (≥ {_num(bar)})" if judged else verdict,
        ])
    return rows


INGEST_HEADER = ["backend", "stored", "batch", "records/s", "…older than 7 days",
                 "…last 7 days", "batch ms p50 / p95", "CPU µs/record", "other work, cores",
                 "bar"]


def _cpu(ingest: dict[str, Any]) -> str:
    """CPU per record, of the client (+ the database server): the wall-clock rate on an
    idle machine is near 1 / that sum."""
    cpu = ingest.get("cpu_us_per_record")
    if not cpu:
        return "–"
    if cpu["server"] is None:
        return f"{cpu['client']:.1f}"
    return f"{cpu['client']:.1f} + {cpu['server']:.1f}"
QUERY_HEADER = ["backend", "stored", "query", "tallygate p50 / p95 ms", "summary / trend p50",
                "peer p50 / p95 ms", "peer ÷ tallygate", "same numbers", "other work, cores"]


def _query_rows(results: dict[str, Any]) -> list[list[str]]:
    rows = []
    order = list(results["backends"])
    for run in sorted(results["runs"], key=lambda r: (order.index(r["backend"]), r["size"])):
        for scenario, measured in run["queries"].items():
            mine = measured["tallygate"]
            peer = measured.get("peer", {}).get("peer")
            rows.append([
                BACKEND_NAMES[run["backend"]], label(run["size"]), SCENARIO_LABELS[scenario],
                f"{mine['total']['p50_ms']:.1f} / {mine['total']['p95_ms']:.1f}",
                f"{mine['summary']['p50_ms']:.1f} / {mine['trend']['p50_ms']:.1f}",
                "–" if peer is None else f"{_num(peer['p50_ms'])} / {_num(peer['p95_ms'])}",
                "–" if peer is None else _ratio(peer["p50_ms"] / mine["total"]["p50_ms"]),
                {True: "yes", False: "NO"}.get(measured.get("same_numbers"), "–"),
                f"{mine['load']['cores_other']:.2f}",
            ])
    return rows


def print_tables(console: Console, results: dict[str, Any]) -> None:
    for title, header, rows in (
        ("Bulk ingest: records/s, raw + every rollup tier, committed", INGEST_HEADER,
         _ingest_rows(results)),
        ("Summary + trend, 30 days (usage_summary + usage_trend requests/day) vs the "
         "log-table peer", QUERY_HEADER, _query_rows(results)),
    ):
        if not rows:
            continue
        table = Table(title=title, title_justify="left")
        for index, name in enumerate(header):
            table.add_column(name, justify="left" if index < 3 else "right")
        for row in rows:
            table.add_row(*row)
        console.print(table)
    table = Table(title="Bars (PRODUCT.md §9)", title_justify="left")
    for name in ("what", "measured", "bar", ""):
        table.add_column(name)
    for bar in results["bars"]:
        table.add_row(bar["what"], bar["value"], bar["bar"],
                      "[green]PASS[/green]" if bar["pass"] else "[red]MISS[/red]")
    console.print(table)


def _phases(results: dict[str, Any]) -> list[dict[str, Any]]:
    loads = []
    for run in results["runs"] + results["small_batch"]:
        if "ingest" in run:
            loads.append(run["ingest"]["load"])
        for measured in run.get("queries", {}).values():
            loads.append(measured["tallygate"]["load"])
            if "peer" in measured:
                loads.append(measured["peer"]["load"])
    return loads


def busy_note(results: dict[str, Any]) -> str:
    loads = _phases(results)
    if not loads:
        return ""
    weights = sum(p["seconds"] for p in loads)
    mean_other = sum(p["cores_other"] * p["seconds"] for p in loads) / weights
    worst = max(p["cores_other"] for p in loads)
    busy = [p for p in loads if p["cores_other"] > BUSY_CORES]
    text = (f"Other work on the machine (not this benchmark, not PostgreSQL) used {mean_other:.2f} "
            f"of the {results['machine']['cores']} cores on average during the measurements, "
            f"{worst:.2f} at most in one phase")
    if busy:
        share = sum(p["seconds"] for p in busy) / weights
        return (text + f": the machine was **busy** (other developers' test runs) for "
                f"{share:.0%} of the measured time, so these figures are lower than an idle "
                "machine would give.")
    return text + ": the machine was otherwise idle."


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    shape = results.get("data_shape", {})
    settings = results["settings"]
    lines = [
        "## Ledger: bulk ingest and the 30-day dashboard query",
        "",
        f"Run on {results['date']} with `{results['command']}` "
        f"({results['minutes']} minutes in all).",
        "",
        f"- **Machine**: {m['cpu']}, {m['cores']} cores, {m['ram_gib']} GiB RAM; {m['os']}; "
        f"Python {m['python']}, SQLite {m['sqlite']}"
        + (f", PostgreSQL {m['postgresql']}" if m.get("postgresql") else "") + ".",
        f"- **Load**: {busy_note(results)}",
    ]
    for backend, description in results["backends"].items():
        lines.append(f"- **{BACKEND_NAMES[backend]}**: {description}.")
    models = ", ".join(f"`{x['name']}` ({x['category']}"
                       + (", service" if x["kind"] == "service" else "") + ")"
                       for x in settings["models"])
    lines += [
        "",
        "### Data",
        "",
        f"Each database holds calls spread over {settings['days']} days ending at the start of "
        "its load. The arrivals are the Azure LLM inference trace's (below): every hour of the "
        "span replays the trace's real hour (`code` and `conv` merged, 28 185 requests) from a "
        "random point, thinned to that hour's share, so bursts keep their real spacing; the "
        "hours follow an Asia/Shanghai working-day and weekly rhythm with a day-to-day "
        "wobble and 30 % growth over the span. Input and output tokens are the trace rows' own "
        "(`code` rows go to the code models, `conv` rows to the rest).",
        "",
        f"- {settings['keys']} API keys with Zipf-like volumes ({settings['internal_keys']} of "
        f"them internal), each using 2–6 of {len(settings['models'])} models: {models}.",
        "- 3 call types, derived as the gateway derives them (internal key → `internal`, "
        "service route → `service`, else `model`): "
        + ", ".join(f"{k} {v} %" for k, v in shape.get("call_types_pct", {}).items())
        + f"; {shape.get('key_model_type_combinations', '–')} key × model × type "
        "combinations occur.",
        f"- Errors {shape.get('errors_pct', '–')} % (429 {shape.get('rate_limited_pct', '–')} %,"
        " the rest 5xx and 400); streamed (with time to first token) "
        f"{shape.get('streamed_pct', '–')} %; cached input tokens on "
        f"{shape.get('cached_input_pct', '–')} %; reasoning tokens on "
        f"{shape.get('reasoning_pct', '–')} %; metadata tags on "
        f"{shape.get('with_metadata_pct', '–')} %; mean "
        f"{shape.get('mean_input_tokens', '–')} input and "
        f"{shape.get('mean_output_tokens', '–')} output tokens per call.",
        "- Ids are UUIDv7 of each call's time, as `new_call_id()` makes them; records arrive "
        "in time order, as a recorder or an import sends them.",
        "",
        "### Bulk ingest",
        "",
        f"`Ledger.store(batch)` for each batch of {_num(settings['batch_size'])} records: raw "
        "rows and every rollup tier (daily, hourly and 15-minute, with and without the key; for "
        "the last 7 days, the minute tiers' retention, the minute tiers too), committed; "
        "generating the records is not timed. The small-batch row loads "
        "the smallest size again at the recorder's batch size.",
        "",
        markdown_table(INGEST_HEADER, _ingest_rows(results), "lllrrrrrrl"),
        "",
        "### Summary + trend, 30 days",
        "",
        "One dashboard refresh: `usage_summary` (cards for the last 30 calendar days in the "
        "zone, today included, the previous 30 days, and peak RPM/TPM over the last 7 days) "
        "plus `usage_trend(metric=\"requests\", granularity=\"day\")` per model, through "
        "`Ledger` and a warm connection pool, as of the moment the last call was stored. "
        f"{_runs(settings['warmup'])} untimed, then {settings['reps']} timed. The **peer** is "
        "what log-table dashboards (One API, LiteLLM's usage page) do: the same cards for both "
        "periods and requests per model per local day, by GROUP BY over the raw `calls` table "
        "(with its `ts` and `api_key_id, ts` indexes), one untimed run, then "
        f"{settings['peer_reps']} timed; it does not compute the peak RPM/TPM. \"Same numbers\" "
        "checks that both give identical cards and trend. *Other work, cores*: the CPU that "
        "anything but this benchmark and PostgreSQL used during that measurement, out of "
        f"{results['machine']['cores']} cores (from `/proc/stat`).",
        "",
        markdown_table(QUERY_HEADER, _query_rows(results), "llllllrlr"),
        "",
        "### Bars",
        "",
        markdown_table(["bar (PRODUCT.md §9)", "measured", "bar", "result"],
                       [[b["what"], b["value"], b["bar"],
                         "PASS" if b["pass"] else f"**MISS** (× {b['ratio']:.2f} the bar)"]
                        for b in results["bars"]], "llll"),
        "",
        "### Rows behind the numbers",
        "",
        "Rows stored per table, and how many of them one refresh of the all-keys, "
        "Asia/Shanghai view reads (cards of the 30 days and of the previous 30, the per-day "
        "trend, the peak of the last 7 days): whole days come from the daily tier, the hours "
        "left at either end from the hourly one, and so on down to raw records for the "
        "partial minutes at the very edges.",
        "",
        markdown_table(
            ["backend", "stored", "table", "rows stored", "rows read per refresh"],
            [[BACKEND_NAMES[r["backend"]], label(r["size"]), f"`{table}`", _num(stored),
              _num(r["rows"]["read_per_refresh"].get(table, 0))]
             for r in results["runs"] for table, stored in r["rows"]["stored"].items()],
            "lllrr"),
        "",
        "Raw numbers, every sample included: `bench/results/ledger.json`.",
        *why_missed(results),
        "",
        "### Trace",
        "",
        "Arrival times and token counts come from the **Azure LLM inference trace 2023** of "
        "Microsoft Azure's [AzurePublicDataset](https://github.com/Azure/AzurePublicDataset) "
        "(`data/AzureLLMInferenceTrace_code.csv` and `_conv.csv`: one hour of real requests "
        "to a code-completion and a conversation service in Azure on 16 November 2023), "
        "licensed under [Creative Commons Attribution 4.0 International (CC BY 4.0)]"
        "(https://creativecommons.org/licenses/by/4.0/). Attribution, as the publishers ask: "
        "Pratyush Patel, Esha Choukse, Chaojie Zhang, Aashaka Shah, Íñigo Goiri, Saeed "
        "Maleki, Ricardo Bianchini, \"Splitwise: Efficient generative LLM inference using "
        "phase splitting\", ISCA 2024. The benchmark reads the copy shipped in "
        "`tallygate/demo/data/` (see its `ATTRIBUTION.md`), or the published files with "
        "`--trace-dir`, and time-shifts, thins and relabels the requests as described above; "
        "the call records it stores are synthetic.",
    ]
    return "\n".join(lines)


def _calls_per_rollup_row(stored: dict[str, int]) -> float:
    return stored["calls"] / max(stored["rollup_15m"], 1)


def why_missed(results: dict[str, Any]) -> list[str]:
    """For each missed bar, by how much, and what the measurements say about why."""
    missed = [b for b in results["bars"] if not b["pass"]]
    if not missed:
        return []
    lines = ["", "### Missed bars: by how much, and why", ""]
    ingest_missed = [b for b in missed if b["what"].startswith("bulk ingest")]
    for bar in ingest_missed:
        lines.append(f"- {bar['what']}: {bar['value']}, {1 - bar['ratio']:.0%} short of "
                     f"{bar['bar']}.")
    if ingest_missed:
        cpu_rates = []
        for run in results["runs"]:
            cpu = run.get("ingest", {}).get("cpu_us_per_record")
            if cpu:
                total = cpu["client"] + (cpu["server"] or 0)
                cpu_rates.append(f"{BACKEND_NAMES[run['backend']]} {label(run['size'])} "
                                 f"{_num(1e6 / total)}/s")
        lines += [
            "",
            "  The CPU each record cost (column *CPU µs/record*: the benchmark process inside "
            "`Ledger.store`, plus the PostgreSQL backend) bounds what the same code does with "
            "the cores to itself: " + ", ".join(cpu_rates) + ". Per record, the database "
            "inserts one raw row into four B-trees (the table and its `id`, `ts` and "
            "`api_key_id, ts` indexes), reads it back once into quarter-hour sums, and each "
            "tier adds up the next finer tier's sums. Spread over 60 days these streams are "
            "sparse (each 15-minute row holds on average "
            + ", ".join(f"{BACKEND_NAMES[r['backend']]} {label(r['size'])}: "
                        f"{_calls_per_rollup_row(r['rows']['stored']):.1f}"
                        for r in results["runs"])
            + " calls), so a batch of history touches nearly as many quarter-hour rows as it "
            "has records, and the nine tiers cost SQLite about as much again as the raw rows. "
            "The recorder's batches are a few seconds of live traffic, where the tiers add a "
            "handful of rows each.",
        ]
    query_missed = [b for b in missed if not b["what"].startswith("bulk ingest")]
    for bar in query_missed:
        lines.append(f"- {bar['what']}: {bar['value']}, × {bar['ratio']:.1f} the bar "
                     f"({bar['bar']}).")
    if query_missed:
        largest = max(results["runs"], key=lambda r: r["size"])
        read = largest["rows"]["read_per_refresh"]
        lines += [
            "",
            "  One refresh reads "
            + ", ".join(f"{_num(n)} rows of `{table}`" for table, n in read.items())
            + f" at {label(largest['size'])} calls; the *summary / trend* column shows where "
            "the time goes. The rollup rows hardly grow with the calls stored. The raw rows "
            "are the calls of the range's partial minutes (the range ends now, mid-minute; "
            "totals read the minute tiers for the last 23 hours, which every process keeps), "
            "so they grow with the traffic of one minute; the rest is the machine's noise "
            "(see *Other work, cores*).",
        ]
    return lines
