"""The ledger's whole life as a state machine (PRODUCT.md §11, "the proof").

Random sequences of ingest, retried ingest, late records (older than the purge floor), purge,
retention changes, ``db check --repair``, price changes with ``pricing recompute`` (two at once
on PostgreSQL), import and re-import of a file, and a clock that moves on. After every step the
summary (current and previous period), the trend and the breakdown, in a random zone (the
zones whose daylight-saving change happens at midnight among them), equal a brute force over
an append-only log of everything the ledger ever accepted.

The model knows only what a user could know: which ids it sent, which the ledger said it
accepted, the prices it set and when, and the retention it asked for. Costs follow the price
table as a plain decimal formula; the calendar comes straight from zoneinfo (``tests/brute``).
"""

from __future__ import annotations

import csv
import os
import tempfile
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy import delete

from tallygate.domain.pricing import Price
from tallygate.domain.records import CallRecord, format_ts
from tallygate.ledger.importer import import_file
from tallygate.ledger.ingest import ingest_events
from tallygate.ledger.maintenance import check_rollups, purge_expired
from tallygate.ledger.reprice import reprice
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import UsageQuery, usage_breakdown, usage_summary, usage_trend
from tallygate.ledger.timerange import resolve_range
from tallygate.store.database import Database
from tallygate.store.schema import metadata
from tallygate.store.usage import CallFilter
from tests import brute

US = 1_000_000
HOUR_S = 3600
DAY_S = 86400
CURRENCY = "USD"
# Midnight daylight-saving changes (Havana, Santiago, Asuncion, Beirut, Cairo), half-hour DST
# (Lord Howe), +12:45/+13:45 (Chatham), +05:45 and plain New York.
ZONES = ("UTC", "America/Havana", "America/Santiago", "America/Asuncion", "Asia/Beirut",
         "Africa/Cairo", "Australia/Lord_Howe", "Pacific/Chatham", "Asia/Kathmandu",
         "America/New_York")
# Clocks a few days after those zones change offset in 2026: the 60 days of data before
# each hold some of the changes.
CLOCKS = tuple(datetime(*t, tzinfo=UTC) for t in (
    (2026, 3, 9, 13, 7), (2026, 3, 30, 2, 41), (2026, 4, 6, 23, 59), (2026, 4, 25, 0, 30),
    (2026, 9, 7, 18, 0), (2026, 10, 30, 21, 5), (2026, 11, 2, 6, 11)))
KEYS = ("key-a", "key-b", None)
MODELS = ("m-chat", "m-embed", "m-ocr")
CATEGORY = {"m-chat": "chat", "m-embed": "embedding", "m-ocr": "other"}
UPSTREAM_MODELS = ("m-chat-2026-01", "m-embed-v2")
STATUSES = (200, 200, 200, 400, 429, 499, 502)
DATA_DAYS = 70  # records are spread over the 70 days before the clock
EXAMPLES = int(os.environ.get("TALLYGATE_STATEFUL_EXAMPLES", "20"))


@dataclass
class ClockLedger(Ledger):
    """A ledger whose "now" is the machine's clock, not the real one."""

    clock_s: float = 0.0

    def minute_floor_s(self, now_s: float | None = None) -> int:
        return super().minute_floor_s(self.clock_s if now_s is None else now_s)

    def recent_minutes_floor_s(self, now_s: float | None = None) -> int:
        return super().recent_minutes_floor_s(self.clock_s if now_s is None else now_s)

    def raw_floor_us(self, now_s: float | None = None) -> int | None:
        return super().raw_floor_us(self.clock_s if now_s is None else now_s)


# Brute force: prices and the calendar -------------------------------------------------------


@dataclass(frozen=True)
class ModelPrice:
    model: str
    effective_from_us: int
    input_pm: Decimal
    cached_pm: Decimal | None
    output_pm: Decimal
    per_call: Decimal
    cache_write_pm: Decimal | None = None
    per_unit: Decimal = Decimal(0)


def price_in_force(prices: list[ModelPrice], model: str, ts_us: int) -> ModelPrice | None:
    """The latest price of ``model`` that started at or before ``ts_us`` (a later setting of
    the same start replaces an earlier one)."""
    found: ModelPrice | None = None
    for p in prices:
        if p.model == model and p.effective_from_us <= ts_us and (
                found is None or p.effective_from_us >= found.effective_from_us):
            found = p
    return found


def cost_nano(p: ModelPrice, r: CallRecord) -> int:
    cached_rate = p.input_pm if p.cached_pm is None else p.cached_pm
    write_rate = p.input_pm if p.cache_write_pm is None else p.cache_write_pm
    uncached = r.input_tokens - r.cached_input_tokens - r.cache_write_tokens
    amount = (uncached * p.input_pm + r.cached_input_tokens * cached_rate
              + r.cache_write_tokens * write_rate + r.output_tokens * p.output_pm
              ) / Decimal(1_000_000) + r.units * p.per_unit
    if r.status_code < 400:
        amount += p.per_call * r.repeats
    return int((amount * Decimal(10**9)).to_integral_value(rounding=ROUND_HALF_EVEN))


# Strategies ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class View:
    tz: str
    period: str
    filter: brute.Filter
    group_by: str


views = st.builds(
    View,
    tz=st.sampled_from(ZONES),
    period=st.sampled_from(("1d", "3d", "7d", "30d")),
    filter=st.builds(
        brute.Filter,
        api_key_ids=st.sampled_from(((), (), ("key-a",), ("key-b", "key-a"))),
        models=st.sampled_from(((), (), ("m-chat",), ("m-embed", "m-ocr"))),
        call_types=st.sampled_from(((), (), ("internal",), ("model", "service")))),
    group_by=st.sampled_from(("model", "api_key", "call_type")),
)


@st.composite
def call_fields(draw: st.DrawFn) -> dict[str, Any]:
    """What one call says, without its id and time."""
    model = draw(st.sampled_from(MODELS))
    input_tokens = draw(st.one_of(st.integers(0, 50), st.integers(0, 10**8)))
    output_tokens = draw(st.one_of(st.integers(0, 50), st.integers(0, 10**8)))
    cached = draw(st.integers(0, input_tokens))
    unit = draw(st.none() | st.sampled_from(("image", "second", "page")))
    fields: dict[str, Any] = {
        "model": model, "model_category": CATEGORY[model],
        "call_type": draw(st.sampled_from(("model", "service", "internal"))),
        "api_key_id": draw(st.sampled_from(KEYS)),
        "status_code": draw(st.sampled_from(STATUSES)),
        "input_tokens": input_tokens, "output_tokens": output_tokens,
        "cached_input_tokens": cached,
        "cache_write_tokens": draw(st.just(0) | st.integers(0, input_tokens - cached)),
        "units": 0 if unit is None else draw(st.integers(1, 10**6)), "unit": unit,
        "upstream_model": draw(st.none() | st.sampled_from(UPSTREAM_MODELS)),
        "reasoning_tokens": draw(st.integers(0, output_tokens)),
        "latency_ms": draw(st.none() | st.integers(0, 90_000)),
        "estimated": draw(st.booleans()),
    }
    repeats = draw(st.sampled_from((None, None, 1)) | st.integers(2, 10**6))
    if repeats is not None:  # a record of several calls (docs/api.md), without a latency
        fields["repeats"] = repeats
        if repeats > 1:
            fields["latency_ms"] = None
    if draw(st.booleans()):  # a cost reported by the service itself
        fields["cost"] = str(Decimal(draw(st.integers(0, 10**12))) / Decimal(10**9))
    return fields


# How long before the clock a record falls: anywhere in the data's 70 days, within the last
# two hours (the partial quarter-hour of "now", the minute window), a minute or two from
# whole days before the clock (where a previous period ends); or a minute or two from a UTC
# midnight (where a purge cuts), given as ("midnight", days back, seconds from it).
offsets_s = st.one_of(st.integers(0, DATA_DAYS * DAY_S), st.integers(0, 2 * HOUR_S),
                      st.integers(0, 40).map(lambda d: d * DAY_S)
                      .flatmap(lambda s: st.integers(s - 120, s + 120).map(abs)),
                      st.tuples(st.just("midnight"), st.integers(0, 45), st.integers(-120, 120)))
Offset = int | tuple[str, int, int]


def _record_of(item: dict[str, Any], cost: int) -> CallRecord:
    ts = datetime.fromisoformat(item["ts"].replace("Z", "+00:00"))
    return CallRecord(
        id=item["id"], ts_us=int(ts.timestamp()) * US + ts.microsecond, model=item["model"],
        call_type=item["call_type"], api_key_id=item["api_key_id"],
        model_category=item["model_category"], status_code=item["status_code"],
        input_tokens=item["input_tokens"], output_tokens=item["output_tokens"],
        cached_input_tokens=item["cached_input_tokens"],
        reasoning_tokens=item["reasoning_tokens"],
        total_tokens=item["input_tokens"] + item["output_tokens"], cost_nano=cost,
        latency_ms=item["latency_ms"], estimated=item["estimated"],
        cache_write_tokens=item.get("cache_write_tokens", 0), units=item.get("units", 0),
        unit=item.get("unit") or None, upstream_model=item.get("upstream_model") or None,
        repeats=item.get("repeats", 1))


# The machine --------------------------------------------------------------------------------


class LedgerLife(RuleBasedStateMachine):
    def __init__(self, db: Database, workdir: Path) -> None:
        super().__init__()
        self.db = db
        self.workdir = workdir
        with db.write() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(delete(table))
        self.ledger = ClockLedger(db, currency=CURRENCY, minute_retention_days=7)
        # The append-only log: every call the ledger accepted, by the id the model knows it
        # by (an imported row without an id is known by its file and row).
        self.log: dict[str, CallRecord] = {}
        self.prices: list[ModelPrice] = []
        self.sent: list[list[dict[str, Any]]] = []
        self.reused: set[str] = set()  # ids a batch gave to a call other than their own
        self.files: list[tuple[Path, list[dict[str, Any]]]] = []
        self.floor_us = 0  # below it raw records may be gone: nothing there can be repriced
        self.serial = 0

    # -- helpers -----------------------------------------------------------------------------

    @property
    def now_us(self) -> int:
        return int(self.ledger.clock_s) * US

    def _next_id(self) -> str:
        self.serial += 1
        return f"ev-{self.serial:05d}"

    def _price_of(self, record: CallRecord, given_cost: str | None) -> int:
        if given_cost is not None:
            return int(Decimal(given_cost) * Decimal(10**9))
        price = price_in_force(self.prices, record.model, record.ts_us)
        return 0 if price is None else cost_nano(price, record)

    def _ts(self, offset: Offset) -> str:
        """The time of a record ``offset`` before the clock (just before: "now" is excluded
        from every range)."""
        if isinstance(offset, tuple):
            _, days, seconds = offset
            midnight = self.now_us // (DAY_S * US) * DAY_S * US - days * DAY_S * US
            return format_ts(min(midnight + seconds * US, self.now_us - 1))
        return format_ts(self.now_us - offset * US - 1)

    def _items(self, fields: list[dict[str, Any]],
               offsets: list[Offset]) -> list[dict[str, Any]]:
        return [{"id": self._next_id(), "ts": self._ts(offset), **f}
                for f, offset in zip(fields, offsets, strict=False)]

    def _ingest(self, items: list[dict[str, Any]]) -> None:
        """Send ``items``; the ledger must accept exactly the new ids at or above the floor
        and say why it refused the others."""
        result = ingest_events(self.ledger, items)
        expected_new = []
        seen = set()
        for item in items:
            record = _record_of(item, 0)
            if item["id"] in self.log or item["id"] in seen:
                continue
            seen.add(item["id"])
            if record.ts_us < self.floor_us:
                continue
            expected_new.append(item)
        refused = [e for e in result.errors]
        assert result.accepted == len(expected_new), (result, self.floor_us)
        assert result.accepted + result.duplicates + len(refused) == len(items)
        for error in refused:  # only records older than the floor are refused, naming ts
            assert error.field == "ts", error
            item = items[error.index]
            assert _record_of(item, 0).ts_us < self.floor_us, error
        for item in expected_new:
            record = _record_of(item, 0)
            self.log[item["id"]] = replace(record,
                                           cost_nano=self._price_of(record, item.get("cost")))
        self.sent.append(items)

    # -- rules -------------------------------------------------------------------------------

    @initialize(clock=st.sampled_from(CLOCKS), retention=st.sampled_from((0, 30)))
    def start(self, clock: datetime, retention: int) -> None:
        self.ledger.clock_s = clock.timestamp()
        self.ledger.raw_retention_days = retention

    @rule(fields=st.lists(call_fields(), min_size=1, max_size=12),
          offsets=st.lists(offsets_s, min_size=12, max_size=12),
          reuse=st.integers(0, 3))
    def ingest(self, fields: list[dict[str, Any]], offsets: list[Offset], reuse: int) -> None:
        items = self._items(fields, offsets)
        # Some items reuse ids whose raw records are kept, with other content: counted once,
        # the first wins. (An id is remembered while its raw record is kept; a new call that
        # reuses the id of a purged one at a time above the floor is not recognised:
        # docs/operations.md, "Retention and the purge floor".)
        stored = [i for i, r in self.log.items() if i.startswith("ev-")
                  and r.ts_us >= self.floor_us]
        for item, old in zip(items, stored[-reuse:] if reuse else [], strict=False):
            item["id"] = old
        self.reused.update(item["id"] for item in items[:reuse])
        self._ingest(items)

    @precondition(lambda self: bool(self.sent))
    @rule(which=st.integers(0, 10**6))
    def retry_ingest(self, which: int) -> None:
        """A client that never saw the answer sends the same batch again."""
        items = self.sent[which % len(self.sent)]
        if any(item["id"] in self.reused for item in items):
            return  # a batch that reused an id is not a retry of one call but another call
        before = dict(self.log)
        self._ingest(items)
        assert self.log == before

    @precondition(lambda self: self.floor_us > 0)
    @rule(fields=st.lists(call_fields(), min_size=1, max_size=4),
          before_s=st.lists(st.integers(1, 20 * DAY_S), min_size=4, max_size=4),
          resend=st.booleans())
    def late_records(self, fields: list[dict[str, Any]], before_s: list[int],
                     resend: bool) -> None:
        """Records older than the purge floor: new ones, or ids whose raw records were
        purged (a retry or a spool replay after the purge)."""
        items = [{"id": self._next_id(), "ts": format_ts(self.floor_us - s * US), **f}
                 for f, s in zip(fields, before_s, strict=False)]
        if resend:
            purged = [i for i, r in self.log.items() if r.ts_us < self.floor_us
                      and i.startswith("ev-")]
            for item, old in zip(items, purged, strict=False):
                item["id"] = old
        self._ingest(items)

    @rule(days=st.sampled_from((1, 2, 7, 30, 45)))
    def purge(self, days: int) -> None:
        self.ledger.raw_retention_days = days
        purge_expired(self.ledger, now_s=self.ledger.clock_s)
        cut = self.now_us - days * DAY_S * US
        # The floor moves only forward, and not past what the retention asked to keep.
        self.floor_us = max(self.floor_us, cut // (DAY_S * US) * DAY_S * US)

    @rule(days=st.sampled_from((0, 1, 30, 365)))
    def change_retention(self, days: int) -> None:
        """Only the setting: the next check or repair must not take it for history."""
        self.ledger.raw_retention_days = days

    @rule()
    def check_and_repair(self) -> None:
        report = check_rollups(self.ledger, repair=True)
        assert report.ok, report.differences[:5]

    @rule(model=st.sampled_from(MODELS),
          rates=st.tuples(st.integers(0, 5000), st.none() | st.integers(0, 500),
                          st.integers(0, 20000), st.sampled_from((0, 0, 3)),
                          st.none() | st.integers(0, 7000), st.sampled_from((0, 0, 17))),
          from_days=st.integers(0, DATA_DAYS), span_days=st.integers(1, 2 * DATA_DAYS),
          twice=st.booleans())
    def reprice_after_price_change(self, model: str,
                                   rates: tuple[int, int | None, int, int, int | None, int],
                                   from_days: int, span_days: int, twice: bool) -> None:
        """A price correction from some day on, then ``pricing recompute`` over a range
        (on PostgreSQL, sometimes two runs at once)."""
        cents = Decimal("0.001")
        price = ModelPrice(
            model, self.now_us - from_days * DAY_S * US, rates[0] * cents,
            None if rates[1] is None else rates[1] * cents, rates[2] * cents,
            Decimal(rates[3]) / 100, None if rates[4] is None else rates[4] * cents,
            Decimal(rates[5]) / 10**6)
        self.ledger.set_price(Price(
            model=model, effective_from_us=price.effective_from_us,
            input_per_million=price.input_pm, output_per_million=price.output_pm,
            cached_input_per_million=price.cached_pm, per_call=price.per_call,
            currency=CURRENCY, cache_write_per_million=price.cache_write_pm,
            per_unit=price.per_unit))
        self.prices.append(price)
        end_us = self.now_us + US
        start_us = end_us - span_days * DAY_S * US
        if twice and not self.db.is_sqlite:
            ledgers = [ClockLedger(self.db, currency=CURRENCY, clock_s=self.ledger.clock_s)
                       for _ in range(2)]
            barrier = threading.Barrier(2)
            failures: list[BaseException] = []

            def run(ledger: Ledger) -> None:
                try:
                    barrier.wait()
                    reprice(ledger, start_us, end_us)
                except BaseException as exc:  # reported below, in the test's thread
                    failures.append(exc)

            threads = [threading.Thread(target=run, args=(lg,)) for lg in ledgers]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert not failures, failures
        else:
            reprice(self.ledger, start_us, end_us)
        for key, record in self.log.items():
            if start_us <= record.ts_us < end_us and record.ts_us >= self.floor_us:
                in_force = price_in_force(self.prices, record.model, record.ts_us)
                if in_force is not None:
                    self.log[key] = replace(record, cost_nano=cost_nano(in_force, record))

    @rule(fields=st.lists(call_fields(), min_size=1, max_size=6),
          offsets=st.lists(offsets_s, min_size=6, max_size=6),
          repeats=st.lists(st.integers(1, 3), min_size=6, max_size=6))
    def import_new_file(self, fields: list[dict[str, Any]], offsets: list[Offset],
                        repeats: list[int]) -> None:
        """A CSV export of another system: rows without ids, identical rows being separate
        calls (three embeddings in one second), rows of an earlier file being the same calls
        again (overlapping exports)."""
        rows = []
        for f, offset, times in zip(fields, offsets, repeats, strict=False):
            row = {"ts": self._ts(offset), **f}
            row["latency_ms"] = "" if row["latency_ms"] is None else row["latency_ms"]
            row["api_key_id"] = row["api_key_id"] or ""
            row["unit"] = row["unit"] or ""
            row["upstream_model"] = row["upstream_model"] or ""
            row["estimated"] = "true" if row["estimated"] else "false"
            rows += [row] * times
        path = self.workdir / f"import-{len(self.files)}.csv"
        columns = sorted({name for row in rows for name in row})
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(rows)
        self.files.append((path, rows))
        result = import_file(self.ledger, path)
        accepted = 0
        # A row is known by its content (the file's columns, as written) and which repeat
        # of it in the file it is: the same row in two overlapping exports of the same
        # columns is one call, three identical rows in one file are three.
        occurrences: dict[str, int] = {}
        for row in rows:
            content = repr([(c, str(row.get(c, ""))) for c in columns])
            occurrences[content] = occurrences.get(content, 0) + 1
            item = {**row, "id": f"import:{content}:{occurrences[content]}",
                    "api_key_id": row["api_key_id"] or None,
                    "latency_ms": None if row["latency_ms"] == "" else row["latency_ms"],
                    "estimated": row["estimated"] == "true"}
            record = _record_of(item, 0)
            if record.ts_us < self.floor_us or item["id"] in self.log:
                continue
            accepted += 1
            self.log[item["id"]] = replace(record,
                                           cost_nano=self._price_of(record, row.get("cost")))
        assert result.accepted == accepted, result
        assert all(e.field == "ts" for e in result.errors), result.errors

    @precondition(lambda self: bool(self.files))
    @rule(which=st.integers(0, 10**6))
    def import_again(self, which: int) -> None:
        path, _ = self.files[which % len(self.files)]
        result = import_file(self.ledger, path)
        assert result.accepted == 0, result

    @rule(hours=st.sampled_from((0, 1, 5, 23, 24, 49, 24 * 8)))
    def clock_moves_on(self, hours: int) -> None:
        # Events from the future are refused, so the clock stays in the real past.
        latest = datetime.now(UTC).timestamp() - HOUR_S
        self.ledger.clock_s = min(self.ledger.clock_s + hours * HOUR_S, latest)

    @rule(view=views)
    def look(self, view: View) -> None:
        """Someone opens the page in any zone, with any filter."""
        self._compare(view)

    # -- the comparison ----------------------------------------------------------------------

    @invariant()
    def figures_equal_the_brute_force(self) -> None:
        if not self.ledger.clock_s:
            return  # before initialisation
        for view in VIEWS_PER_STEP:
            self._compare(view)

    def _compare(self, view: View) -> None:
        tz = ZoneInfo(view.tz)
        now = datetime.fromtimestamp(self.ledger.clock_s, UTC)
        time_range = resolve_range(view.period, None, None, view.tz, now=now)
        start, end, previous_start, previous_end = brute.period_range(
            int(view.period[:-1]), self.now_us, tz)
        assert (time_range.start_us, time_range.end_us) == (start, end), view
        assert (time_range.previous_start_us, time_range.previous_end_us) == (
            previous_start, previous_end), view
        query = UsageQuery(CallFilter(**{
            "api_key_ids": view.filter.api_key_ids, "models": view.filter.models,
            "call_types": view.filter.call_types,
            "upstream_models": view.filter.upstream_models}), time_range)
        records = list(self.log.values())

        summary = usage_summary(self.ledger, query)
        current = brute.select(records, view.filter, start, end)
        previous = brute.select(records, view.filter, previous_start, previous_end)
        # Every edge of a period is on a quarter-hour or within the last day: exact for ever.
        assert summary["approximate"] == {"cards": False, "previous": False}, view
        cards = {k: v for k, v in summary["cards"].items() if not k.startswith("peak")}
        assert cards == brute.cards(current, CURRENCY), view
        assert summary["previous"] == brute.cards(previous, CURRENCY), view

        for metric in ("requests", "cost"):
            got = usage_trend(self.ledger, query, metric=metric, granularity="day",
                              group_by=view.group_by)
            expected = brute.trend(records, view.filter, start, end, tz, metric, "day",
                                   view.group_by)
            assert got["buckets"] == expected["buckets"], view
            assert [{k: s[k] for k in ("name", "values", "total")} for s in got["series"]
                    ] == expected["series"], (view, metric)

        got_rows = usage_breakdown(self.ledger, query, group_by=[view.group_by])["rows"]
        # No minute rollup has the upstream model: its peaks come from raw records, so
        # from the purge floor on.
        peak_from_us = self.ledger.minute_floor_s() * US
        if view.group_by == "upstream_model" or view.filter.upstream_models:
            peak_from_us = max(peak_from_us, self.floor_us)
        expected_rows = brute.breakdown(records, view.filter, start, end, tz,
                                        [view.group_by], CURRENCY, peak_from_us=peak_from_us)
        rows = {(row[view.group_by] or "",): {
            k: v for k, v in row.items() if k not in (view.group_by, "api_key_name")}
            for row in got_rows}
        assert rows == expected_rows, view


# Every step is followed by these views (one zone with a midnight change among them); the
# rules' own random views would make hypothesis shrink the views instead of the steps.
VIEWS_PER_STEP = (
    View("America/Havana", "7d", brute.Filter(), "model"),
    View("Asia/Beirut", "30d", brute.Filter(call_types=("model", "service")), "api_key"),
    View("Pacific/Chatham", "1d", brute.Filter(api_key_ids=("key-a",)), "call_type"),
    View("America/Santiago", "3d", brute.Filter(models=("m-chat",)), "model"),
    # The upstream model's own tiers: kept for ever, so exact past raw retention too.
    View("Asia/Beirut", "30d", brute.Filter(upstream_models=UPSTREAM_MODELS[:1]),
         "upstream_model"),
)


STATEFUL = settings(max_examples=EXAMPLES, stateful_step_count=12, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])


def test_the_ledger_stays_exact_through_its_life(db: Database) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        run_state_machine_as_test(lambda: LedgerLife(db, Path(workdir)), settings=STATEFUL)


@pytest.mark.parametrize("tz", ZONES)
def test_views_in_every_zone_after_a_life(sqlite_db: Database, tz: str) -> None:
    """One fixed life, then every zone and period: the zones the rules do not visit."""
    with tempfile.TemporaryDirectory() as workdir:
        life = LedgerLife(sqlite_db, Path(workdir))
        life.start(CLOCKS[0], 30)
        fields = {"model": "m-chat", "model_category": "chat", "call_type": "model",
                  "api_key_id": "key-a", "status_code": 200, "input_tokens": 100,
                  "output_tokens": 7, "cached_input_tokens": 10, "reasoning_tokens": 0,
                  "latency_ms": 30, "estimated": False}
        offsets = [h * HOUR_S for h in range(0, DATA_DAYS * 24, 7)]
        for chunk in range(0, len(offsets), 50):
            life._ingest(life._items([fields] * 50, offsets[chunk:chunk + 50]))
        life.purge(30)
        life.check_and_repair()
        for period in ("1d", "3d", "7d", "30d"):
            for group_by in ("model", "api_key", "call_type"):
                life._compare(View(tz, period, brute.Filter(), group_by))
