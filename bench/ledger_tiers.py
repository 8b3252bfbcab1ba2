"""An experiment, not a benchmark of tallygate as it is: how fast the 30-day summary + trend
would be if the ledger also kept coarser rollups.

    python bench/ledger.py --sizes 10M --keep --workdir DIR     # once, to have the data
    python bench/ledger_tiers.py sqlite:///DIR/ledger-10M.db
    python bench/ledger_tiers.py postgresql://postgres@127.0.0.1:5432/tallygate_bench_10m

On a kept benchmark database it builds scratch tables (``whatif_*``) from ``rollup_15m`` and
``rollup_1m``: hourly and daily (UTC) rollups with the same dimensions, the same three grains
without ``api_key_id`` (for views of all keys), and per-minute totals (all keys, and per key)
for the peak RPM/TPM. Then it times what one dashboard refresh would read from them — the
cards of both periods from whole days, whole hours and quarter-hours with raw records only
at the edges, the per-day trend from hourly rows, the peak from minute totals — next to
tallygate's ``usage_summary`` + ``usage_trend`` today, and checks that the numbers agree.
The scratch tables are dropped at the end.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from decimal import Decimal
from functools import partial
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection, create_engine, text

from tallygate.ledger.money import to_nano
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import UsageQuery, usage_summary, usage_trend
from tallygate.ledger.timerange import TimeRange, bucketing_for, resolve_range
from tallygate.store.database import Database
from tallygate.store.schema import ROLLUP_MEASURES
from tallygate.store.usage import CallFilter

US = 1_000_000
KEYED = ("api_key_id", "model", "model_category", "call_type")
ALL_KEYS = ("model", "model_category", "call_type")
TIERS = (  # name, source, grain in seconds, dimensions
    ("whatif_1h", "rollup_15m", 3600, KEYED),
    ("whatif_1d", "rollup_15m", 86400, KEYED),
    ("whatif_15m_all", "rollup_15m", 900, ALL_KEYS),
    ("whatif_1h_all", "rollup_15m", 3600, ALL_KEYS),
    ("whatif_1d_all", "rollup_15m", 86400, ALL_KEYS),
    ("whatif_1m_total", "rollup_1m", 60, ()),
    ("whatif_1m_key", "rollup_1m", 60, ("api_key_id",)),
)
CARDS = ("calls", "success_calls", "failed_calls", "rate_limited_calls", "input_tokens",
         "output_tokens", "cached_input_tokens", "total_tokens", "cost_nano")
console = Console(width=None if sys.stdout.isatty() else 120)


def build(db: Database) -> None:
    with db.write() as conn:
        for name, source, grain, dims in TIERS:
            keys = ("bucket", *dims)
            columns = ", ".join(["bucket BIGINT NOT NULL",
                                 *(f"{d} VARCHAR(200) NOT NULL" for d in dims),
                                 *(f"{m} BIGINT NOT NULL" for m in ROLLUP_MEASURES)])
            suffix = " WITHOUT ROWID" if db.is_sqlite else ""
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")
            conn.exec_driver_sql(f"CREATE TABLE {name} ({columns}, "
                                 f"PRIMARY KEY ({', '.join(keys)})){suffix}")
            if "api_key_id" in dims:
                # A key's rows without reading every key's.
                conn.exec_driver_sql(f"CREATE INDEX {name}_key ON {name} (api_key_id, bucket)")
            select_list = ", ".join([f"bucket / {grain} * {grain}", *dims,
                                     *(f"sum({m})" for m in ROLLUP_MEASURES)])
            groups = ", ".join(str(i + 1) for i in range(len(keys)))
            conn.exec_driver_sql(f"INSERT INTO {name} SELECT {select_list} FROM {source} "
                                 f"GROUP BY {groups}")
    if not db.is_sqlite:
        engine = create_engine(db.url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.exec_driver_sql("VACUUM ANALYZE")
        engine.dispose()


def drop(db: Database) -> None:
    with db.write() as conn:
        for name, *_ in TIERS:
            conn.exec_driver_sql(f"DROP TABLE IF EXISTS {name}")


def _pieces(start_us: int, end_us: int, tiers: list[tuple[str, int]]
            ) -> list[tuple[str, int, int]]:
    """``[start, end)`` as (table, low, high): the coarsest tier for the middle, finer ones
    toward the edges, raw records (``calls``, in microseconds) for what is left."""
    pieces: list[tuple[str, int, int]] = []

    def split(low: int, high: int, level: int) -> None:
        if low >= high:
            return
        if level == len(tiers):
            pieces.append(("calls", low, high))
            return
        table, grain = tiers[level]
        first = -(-low // (grain * US)) * grain * US
        last = high // (grain * US) * grain * US
        if first >= last:
            split(low, high, level + 1)
            return
        pieces.append((table, first // US, last // US))
        split(low, first, level + 1)
        split(last, high, level + 1)

    split(start_us, end_us, 0)
    return pieces


def _cards(conn: Connection, start_us: int, end_us: int, key: str | None) -> dict[str, int]:
    tiers = ([("whatif_1d", 86400), ("whatif_1h", 3600), ("rollup_15m", 900)] if key
             else [("whatif_1d_all", 86400), ("whatif_1h_all", 3600), ("whatif_15m_all", 900)])
    totals = dict.fromkeys(CARDS, 0)
    params = {"key": key}
    for table, low, high in _pieces(start_us, end_us, tiers):
        if table == "calls":
            sums = ["count(*)", "sum(CASE WHEN status_code < 400 THEN 1 ELSE 0 END)",
                    "sum(CASE WHEN status_code >= 400 AND status_code <> 429 THEN 1 ELSE 0 END)",
                    "sum(CASE WHEN status_code = 429 THEN 1 ELSE 0 END)",
                    *(f"sum({m})" for m in CARDS[4:])]
            where = "ts >= :low AND ts < :high"
        else:
            sums = [f"sum({m})" for m in CARDS]
            where = "bucket >= :low AND bucket < :high"
        if key:
            where += " AND api_key_id = :key"
        row = conn.execute(text(f"SELECT {', '.join(sums)} FROM {table} WHERE {where}"),
                           {**params, "low": low, "high": high}).one()
        for name, value in zip(CARDS, row, strict=True):
            totals[name] += int(value or 0)
    return totals


def _trend(conn: Connection, r: TimeRange, key: str | None) -> dict[tuple[int, str], int]:
    segments = bucketing_for("day", r).segments
    offset = str(segments[-1][1])
    if len(segments) > 1:
        offset = "CASE " + " ".join(f"WHEN bucket < {segments[i + 1][0]} THEN {segments[i][1]}"
                                    for i in range(len(segments) - 1)) + f" ELSE {offset} END"
    # Hourly rows are exact for zones whose offsets are whole hours (both measured here).
    assert all(o % 3600 == 0 for _, o in segments)
    table = "whatif_1h" if key else "whatif_1h_all"
    trend: dict[tuple[int, str], int] = {}
    middle = [(t, lo, hi) for t, lo, hi in _pieces(r.start_us, r.end_us, [(table, 3600)])]
    for piece, low, high in middle:
        if piece == "calls":
            day = f"(ts / {US} + {offset.replace('bucket', f'ts / {US}')}) / 86400"
            where = "ts >= :low AND ts < :high"
        else:
            day = f"(bucket + {offset}) / 86400"
            where = "bucket >= :low AND bucket < :high"
        if key:
            where += " AND api_key_id = :key"
        value = "count(*)" if piece == "calls" else "sum(calls)"
        for d, model, n in conn.execute(text(
                f"SELECT {day} AS d, model, {value} FROM {piece} WHERE {where} "
                "GROUP BY 1, 2"), {"low": low, "high": high, "key": key}):
            trend[(int(d), model)] = trend.get((int(d), model), 0) + int(n)
    return trend


def _peak(conn: Connection, r: TimeRange, floor_s: int, key: str | None) -> tuple[int, int]:
    table, where = ("whatif_1m_key", " AND api_key_id = :key") if key else ("whatif_1m_total", "")
    row = conn.execute(text(f"SELECT max(calls), max(total_tokens) FROM {table} "
                            f"WHERE bucket >= :low AND bucket < :high{where}"),
                       {"low": max(floor_s, r.start_us // US), "high": r.end_us // US,
                        "key": key}).one()
    return int(row[0] or 0), int(row[1] or 0)


def _tallygate_today(ledger: Ledger, query: UsageQuery) -> None:
    usage_summary(ledger, query)
    usage_trend(ledger, query)


def _both_cards(conn: Connection, r: TimeRange, key: str | None
                ) -> tuple[dict[str, int], dict[str, int]]:
    return (_cards(conn, r.start_us, r.end_us, key),
            _cards(conn, r.previous_start_us, r.previous_end_us, key))


def _agrees(cards: tuple[dict[str, int], dict[str, int]], trend: dict[tuple[int, str], int],
            peak: tuple[int, int], summary: dict[str, Any], today: dict[str, Any]) -> bool:
    """Whether the tiers give tallygate's numbers: cards of both periods, every trend value,
    the peak."""
    for mine, theirs in ((cards[0], summary["cards"]), (cards[1], summary["previous"])):
        names = {"calls": "model_calls", "cost_nano": None}
        for name, value in mine.items():
            shown = names.get(name, name)
            if shown is None:
                amount = theirs["cost"]["amount"] if theirs["cost"] else "0"
                if to_nano(Decimal(amount)) != value:
                    return False
            elif (theirs.get(shown) or 0) != value:
                return False
    epoch = date(1970, 1, 1)
    days = [(date.fromisoformat(label) - epoch).days for label in today["buckets"]]
    values = {(day, series["name"]): value for series in today["series"]
              for day, value in zip(days, series["values"], strict=True) if value is not None}
    return values == trend and peak[0] == (summary["cards"]["peak_rpm"] or 0)


def median_ms(run: Callable[[], Any], reps: int) -> float:
    run()
    samples = []
    for _ in range(reps):
        started = time.perf_counter()
        run()
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("url", help="a database kept by bench/ledger.py --keep")
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--key", default="key-00", help="the key of the filtered view")
    options = parser.parse_args()
    db = Database(options.url)
    ledger = Ledger(db)
    started = time.perf_counter()
    build(db)
    console.print(f"scratch tiers built in {time.perf_counter() - started:.1f} s")
    try:
        with db.read() as conn:
            end_us = int(conn.execute(text("SELECT max(ts) FROM calls")).scalar_one()) + 1
        now = datetime.fromtimestamp(end_us / US, UTC)
        table = Table(title=f"30-day summary + trend, median of {options.reps} (ms)",
                      title_justify="left")
        for column in ("view", "tallygate today", "tiers: cards ×2", "trend", "peak",
                       "tiers total", "same numbers"):
            table.add_column(column, justify="left" if column == "view" else "right")
        for tz in ("Asia/Shanghai", "America/New_York"):
            for key in (None, options.key):
                r = resolve_range("30d", None, None, tz, now=now)
                query = UsageQuery(CallFilter(api_key_ids=(key,) if key else ()), r)
                floor = ledger.minute_floor_s()
                today = median_ms(partial(_tallygate_today, ledger, query), options.reps)
                with db.read() as conn:
                    times = {
                        "cards": median_ms(partial(_both_cards, conn, r, key), options.reps),
                        "trend": median_ms(partial(_trend, conn, r, key), options.reps),
                        "peak": median_ms(partial(_peak, conn, r, floor, key), options.reps),
                    }
                    summary = usage_summary(ledger, query)
                    trend = usage_trend(ledger, query)
                    same = _agrees(_both_cards(conn, r, key), _trend(conn, r, key),
                                   _peak(conn, r, floor, key), summary, trend)
                table.add_row(f"{key or 'all keys'}, {tz}", f"{today:,.1f}",
                              f"{times['cards']:.1f}", f"{times['trend']:.1f}",
                              f"{times['peak']:.1f}", f"{sum(times.values()):.1f}",
                              "yes" if same else "NO")
        console.print(table)
    finally:
        drop(db)
        db.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
