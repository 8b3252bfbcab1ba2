"""The statistics equal a brute force over the raw records (``tests/brute.py``).

Random ranges (periods with a fixed ``now``; custom dates; RFC 3339 instants not aligned to
anything, so the raw-edge path runs) anywhere in the 40 days before ``now``, often across a
daylight-saving change; random records around them (bunched at the range's edges, at
15-minute and minute boundaries, at the offset changes and at the minute window's edge);
random filters; zones with 30- and 45-minute offsets and DST, and zones whose clocks change
at midnight; on SQLite and on PostgreSQL. The range and its previous period are worked out
here from what the parameters mean (``brute.period_range`` and friends), never taken from
the code under test.
Each example empties the ledger tables first, so examples never see each other's calls
although the ``db`` fixture lives for the whole test.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from fractions import Fraction
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from tallygate.domain.records import CallRecord
from tallygate.ledger.service import RECENT_MINUTES_S, Ledger
from tallygate.ledger.statistics import (
    BREAKDOWN_SORTS,
    UsageQuery,
    usage_breakdown,
    usage_summary,
    usage_trend,
)
from tallygate.ledger.timerange import resolve_range
from tallygate.store.database import Database
from tallygate.store.schema import TIERS, calls
from tallygate.store.usage import CallFilter
from tests import brute

US = 1_000_000
DAY_US = 86400 * US
ZONES = ("UTC", "Asia/Shanghai", "America/New_York", "Asia/Kolkata", "Asia/Kathmandu",
         "Australia/Lord_Howe", "Europe/London", "Pacific/Chatham",
         # The clocks change at midnight: a day may begin at 01:00, or at 00:00 twice.
         "America/Havana", "America/Santiago", "America/Asuncion", "Asia/Beirut",
         "Africa/Cairo")
# The years whose offset changes the ranges are placed around: 2026, and 2024 for Asuncion,
# which has kept -03 all year since October 2024.
YEARS = {name: (2026,) for name in ZONES} | {"America/Asuncion": (2024,)}
# Every offset change of the zones above in those years (checked against zoneinfo below).
TRANSITIONS = tuple(datetime(*t, tzinfo=UTC) for t in (
    (2026, 3, 8, 7, 0),     # New York: 02:00 EST -> 03:00 EDT, a 23-hour day
    (2026, 3, 29, 1, 0),    # London: 01:00 GMT -> 02:00 BST
    (2026, 4, 4, 15, 0),    # Lord Howe: 02:00 +11 -> 01:30 +10:30
    (2026, 10, 3, 15, 30),  # Lord Howe: 02:00 +10:30 -> 02:30 +11
    (2026, 10, 25, 1, 0),   # London: 02:00 BST -> 01:00 GMT
    (2026, 11, 1, 6, 0),    # New York: 02:00 EDT -> 01:00 EST, a 25-hour day
    (2026, 4, 4, 14, 0),    # Chatham: 03:45 +13:45 -> 02:45 +12:45
    (2026, 9, 26, 14, 0),   # Chatham: 02:45 +12:45 -> 03:45 +13:45
    (2026, 3, 8, 5, 0),     # Havana: 00:00 -05 -> 01:00 -04, the day begins at 01:00
    (2026, 11, 1, 5, 0),    # Havana: 01:00 -04 -> 00:00 -05, midnight twice
    (2026, 4, 5, 3, 0),     # Santiago: 24:00 -03 -> 23:00 -04
    (2026, 9, 6, 4, 0),     # Santiago: 00:00 -04 -> 01:00 -03
    (2026, 3, 28, 22, 0),   # Beirut: 00:00 +02 -> 01:00 +03
    (2026, 10, 24, 21, 0),  # Beirut: 24:00 +03 -> 23:00 +02
    (2026, 4, 23, 22, 0),   # Cairo: 00:00 +02 -> 01:00 +03
    (2026, 10, 29, 21, 0),  # Cairo: 24:00 +03 -> 23:00 +02
    (2024, 3, 24, 3, 0),    # Asuncion: 24:00 -03 -> 23:00 -04
    (2024, 10, 6, 4, 0),    # Asuncion: 00:00 -04 -> 01:00 -03
))
# "now" is one of these plus up to 3 days: the 40 days before each hold some transitions.
ANCHORS = tuple(datetime(*d, tzinfo=UTC) for d in (
    (2026, 3, 8), (2026, 4, 4), (2026, 10, 3), (2026, 10, 24), (2026, 11, 1)))
KEYS = ("key-a", "key-b", "key-c", None)
FILTER_KEYS = ("key-a", "key-b", "key-c", "key-never-used")
MODELS = ("cltech/deepseek-r1-32b", "deepseek-r1-distill-llama-70b", "bge-m3")
CATEGORIES = ("chat", "completion", "embedding", "other")
UPSTREAM_MODELS = ("deepseek-r1-32b-0528", "llama-70b-v2", "bge-m3")
UNITS = ("image", "second", "character", "search_unit", "page", "request")
CALL_TYPES = ("model", "service", "internal")
STATUSES = (200, 200, 200, 201, 304, 400, 401, 429, 429, 499, 500, 502, 503, 504)
CURRENCY = "USD"

# TALLYGATE_PROPERTY_EXAMPLES=2000 for a long hunt; the default keeps the suite quick.
PROPERTY = settings(
    max_examples=int(os.environ.get("TALLYGATE_PROPERTY_EXAMPLES", "40")),
    deadline=None,
    # The db fixture is shared by the examples of one test: each example empties the tables.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


@dataclass
class FixedClockLedger(Ledger):
    """A ledger whose minute window is measured from a fixed clock instead of the real one,
    so the data may sit anywhere in 2026 and the window's edge can fall inside a range."""

    clock_s: float = 0.0

    def minute_floor_s(self, now_s: float | None = None) -> int:
        return super().minute_floor_s(self.clock_s if now_s is None else now_s)

    def recent_minutes_floor_s(self, now_s: float | None = None) -> int:
        return super().recent_minutes_floor_s(self.clock_s if now_s is None else now_s)


@dataclass(frozen=True)
class Case:
    now: datetime
    tz: str
    period: str | None
    start: str | None
    end: str | None
    batches: tuple[tuple[CallRecord, ...], ...]
    filter: brute.Filter
    clock_s: float
    minute_retention_days: int
    # (start, end, previous_start, previous_end) worked out in the test from the parameters'
    # meaning (docs/api.md), never taken from the code under test.
    expected: tuple[int, int, int, int]

    def query(self) -> UsageQuery:
        return UsageQuery(CallFilter(**asdict(self.filter)),
                          resolve_range(self.period, self.start, self.end, self.tz,
                                        now=self.now))

    def records(self) -> list[CallRecord]:
        return brute.unique(r for batch in self.batches for r in batch)


# Strategies ----------------------------------------------------------------------------------


def _changes_offset(moment: datetime, tz: ZoneInfo) -> bool:
    t = brute.instant_us(moment)
    return brute.local_time(t - 1, tz).utcoffset() != brute.local_time(t, tz).utcoffset()


def _grid_points(edges: tuple[int, ...]) -> tuple[int, ...]:
    """The edges, and the day, hour, 15-minute and minute boundaries on each side of them:
    where one rollup tier's piece of a range meets the next, or the raw edges."""
    points = set(edges)
    for edge in edges:
        for grain in (DAY_US, 3600 * US, 900 * US, 60 * US):
            points.update((edge // grain * grain, -(-edge // grain) * grain))
    return tuple(sorted(points))


@st.composite
def _stamps(draw: st.DrawFn, lo_us: int, hi_us: int, edges: tuple[int, int],
            points: tuple[int, ...]) -> list[int]:
    """Record times: a few anywhere, a cluster inside the range next to one of its ``edges``,
    more clusters around points that matter; some clusters are tight enough to share a
    minute (so peaks exceed 1)."""
    start, end = edges
    stamps = draw(st.lists(st.integers(lo_us, hi_us - 1), max_size=4))
    stamps += draw(st.lists(st.integers(start, max(start, end - 1)), max_size=4))
    spreads = st.sampled_from((1, 2 * US, 90 * US, 900 * US, 4 * 3600 * US))
    spread = min(draw(spreads), end - start)
    if spread > 0:
        stamps += draw(st.lists(st.one_of(st.integers(start, start + spread - 1),
                                          st.integers(end - spread, end - 1)),
                                min_size=1, max_size=8))
    for centre in draw(st.lists(st.sampled_from(points), max_size=5)):
        spread = draw(spreads)
        stamps += draw(st.lists(st.integers(centre - spread, centre + spread), min_size=1,
                                max_size=8))
    return stamps


@st.composite
def _start_instant(draw: st.DrawFn, lo_us: int, hi_us: int, near: tuple[int, ...]) -> int:
    """A range's start: anywhere, near an offset change, or on or next to a grid line."""
    how = draw(st.sampled_from(("anywhere", "near", "grid")))
    if how == "near" and near:
        return draw(st.sampled_from(near)) + draw(st.one_of(
            st.sampled_from((-1, 0, 1, -US, US - 1)),
            st.integers(-3 * 3600 * US, 3 * 3600 * US)))
    base = draw(st.integers(lo_us, hi_us - 1))
    if how == "anywhere":
        return base
    grid = draw(st.sampled_from((900, 3600, 60))) * US
    return base // grid * grid + draw(st.sampled_from((-1, 0, 1, 30 * US, -30 * US)))


@st.composite
def _record(draw: st.DrawFn, index: int, ts_us: int) -> CallRecord:
    input_tokens = draw(st.one_of(st.integers(0, 60), st.integers(0, 10**9)))
    output_tokens = draw(st.one_of(st.integers(0, 60), st.integers(0, 10**9)))
    cached = draw(st.integers(0, input_tokens))
    unit = draw(st.none() | st.sampled_from(UNITS))
    # Mostly one call a record; sometimes many (an aggregate of refusals, or an event that
    # says so), which carries no latency.
    repeats = draw(st.sampled_from((1, 1, 1)) | st.integers(2, 1000) | st.integers(2, 10**6))
    return CallRecord(
        id=f"call-{index:04d}",
        ts_us=ts_us,
        api_key_id=draw(st.sampled_from(KEYS)),
        model=draw(st.sampled_from(MODELS)),
        model_category=draw(st.sampled_from(CATEGORIES)),
        call_type=draw(st.sampled_from(CALL_TYPES)),
        endpoint="/v1/chat/completions",
        status_code=draw(st.sampled_from(STATUSES)),
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=draw(st.just(0) | st.integers(0, input_tokens - cached)),
        unit=unit,
        units=0 if unit is None else draw(st.integers(1, 60) | st.integers(1, 10**9)),
        upstream_model=draw(st.none() | st.sampled_from(UPSTREAM_MODELS)),
        reasoning_tokens=draw(st.integers(0, output_tokens)),
        total_tokens=input_tokens + output_tokens,
        cost_nano=draw(st.one_of(st.just(0), st.integers(0, 10**6), st.integers(0, 10**15))),
        latency_ms=None if repeats > 1 else draw(
            st.none() | st.sampled_from((0, 250, 250, 1800)) | st.integers(0, 86_400_000)),
        ttft_ms=None if repeats > 1 else draw(st.none() | st.integers(0, 60_000)),
        estimated=draw(st.booleans()),
        repeats=repeats,
    )


def _rfc3339(ts_us: int, style: str, tz: ZoneInfo) -> str:
    moment = brute.EPOCH + timedelta(microseconds=ts_us)
    if style == "Z":
        return moment.replace(tzinfo=None).isoformat() + "Z"
    if style == "zone":
        return moment.astimezone(tz).isoformat()
    hours, minutes = {"+05:45": (5, 45), "-03:30": (-3, -30), "+14:00": (14, 0)}[style]
    return moment.astimezone(timezone(timedelta(hours=hours, minutes=minutes))).isoformat()


def _subset(values: tuple[str, ...]) -> st.SearchStrategy[tuple[str, ...]]:
    return st.one_of(st.just(()), st.just(()), st.just(()),
                     st.lists(st.sampled_from(values), min_size=1, max_size=3,
                              unique=True).map(tuple))


@st.composite
def cases(draw: st.DrawFn, short: bool = False) -> Case:
    """A ledger's content and one query over it. ``short`` favours ranges of at most a day."""
    tz_name = draw(st.sampled_from(ZONES))
    tz = ZoneInfo(tz_name)
    # Half the time the range is placed around one of the zone's own offset changes: now is
    # just after it, or so many days after it that the period or its previous period begins
    # on the day of the change (where a day may begin at 01:00).
    changes = tuple(brute.instant_us(t) for t in TRANSITIONS if _changes_offset(t, tz))
    at_change = bool(changes) and draw(st.booleans())
    if at_change:
        now_us = draw(st.sampled_from(changes)) + draw(st.one_of(
            st.integers(-6 * 3600 * US, 2 * DAY_US),
            st.builds(lambda days, into: days * DAY_US + into,
                      st.sampled_from((1, 2, 3, 5, 6, 7, 13, 29, 30, 59)),
                      st.integers(-3600 * US, DAY_US))))
    else:
        now_us = brute.instant_us(draw(st.sampled_from(ANCHORS))) + draw(
            st.integers(0, 3 * DAY_US))
    now = brute.EPOCH + timedelta(microseconds=now_us)
    today = now.astimezone(tz).date()
    period = start = end = None
    kinds = ("period", "instants") if short else ("period", "dates", "instants")
    kind = draw(st.sampled_from(kinds))
    if kind == "period":
        period = draw(st.sampled_from(("1d",) if short else ("1d", "3d", "7d", "30d")))
        expected = brute.period_range(int(period[:-1]), now_us, tz)
    elif kind == "dates":
        first = today - timedelta(days=draw(st.integers(0, 3 if at_change else 38)))
        last = first + timedelta(days=draw(st.integers(1, 10)))
        which = draw(st.sampled_from(("both", "both", "start", "end")))
        if which == "start" and brute.day_start_us(first, tz) >= now_us:
            which = "both"
        start = first.isoformat() if which != "end" else None
        end = last.isoformat() if which != "start" else None
        if which == "start":  # until now: compared with as long a span before it
            expected = brute.instants_range(brute.day_start_us(first, tz), now_us)
        else:  # whole days, 7 before end when start is not given
            if which == "end":
                first = last - timedelta(days=7)
            expected = brute.dates_range(first, last, tz)
    else:
        start_us = draw(_start_instant(now_us - 40 * DAY_US, now_us, changes))
        lengths = [st.integers(1, 3600 * US), st.integers(3600 * US, DAY_US)]
        if not short:
            lengths.append(st.integers(DAY_US, 12 * DAY_US))
        end_us = start_us + draw(st.one_of(*lengths))
        styles = st.sampled_from(("Z", "zone", "+05:45", "-03:30", "+14:00"))
        start, end = _rfc3339(start_us, draw(styles), tz), _rfc3339(end_us, draw(styles), tz)
        expected = brute.instants_range(start_us, end_us)
    edges = expected
    clock_s = now_us // US + draw(st.integers(0, 86400))
    minute_retention_days = draw(st.sampled_from((1, 2, 7, 90)))
    window_edge = (clock_s - minute_retention_days * 86400) // 60 * 60 + 60
    recent_edge = -(-(clock_s - RECENT_MINUTES_S) // 60) * 60  # totals' minutes from here
    lo, hi = min(edges) - DAY_US, max(edges) + DAY_US
    points = (*_grid_points((*edges, now_us, window_edge * US, recent_edge * US)),
              *(t for t in changes if lo <= t < hi))
    stamps = draw(_stamps(lo, hi, edges[:2], points))
    records = [draw(_record(i, ts)) for i, ts in enumerate(stamps)]
    cuts = sorted(draw(st.lists(st.integers(0, len(records)), max_size=2)))
    batches = [tuple(records[a:b]) for a, b in zip([0, *cuts], [*cuts, len(records)],
                                                   strict=True)]
    if batches and draw(st.booleans()):
        batches.append(draw(st.sampled_from(batches)))  # a retried batch counts once
    return Case(
        now=now, tz=tz_name, period=period, start=start, end=end,
        batches=tuple(batches),
        filter=brute.Filter(draw(_subset(FILTER_KEYS)), draw(_subset(MODELS)),
                            draw(_subset(CALL_TYPES)), draw(_subset(CATEGORIES)),
                            draw(_subset(UPSTREAM_MODELS))),
        clock_s=clock_s,
        minute_retention_days=minute_retention_days,
        expected=expected,
    )


# Helpers -------------------------------------------------------------------------------------


def _load(db: Database, case: Case) -> FixedClockLedger:
    with db.write() as conn:
        for table in (calls, *(tier.table for tier in TIERS)):
            conn.execute(delete(table))
    ledger = FixedClockLedger(db, currency=CURRENCY, clock_s=case.clock_s,
                              minute_retention_days=case.minute_retention_days)
    for batch in case.batches:
        ledger.store(batch)
    return ledger


def _note(case: Case, query: UsageQuery) -> None:
    """What the example exercised (``--hypothesis-show-statistics``)."""
    start_us, end_us = case.expected[:2]
    grain = 900 * US
    middle = (-(-start_us // grain) * grain, end_us // grain * grain)
    chosen = brute.select(case.records(), case.filter, start_us, end_us)
    in_middle = sum(1 for c in chosen if middle[0] <= c.ts_us < middle[1])
    event(f"range: {query.range.label}, {case.tz}")
    event(f"calls in range: {min(len(chosen), 5)}{'+' if len(chosen) >= 5 else ''}")
    event(f"calls from 15-minute rollups: {in_middle > 0}; "
          f"from raw edges: {len(chosen) > in_middle}")


def _number(card: Any) -> Fraction | None:
    if card is None:
        return None
    return Fraction(Decimal(card["amount"])) if isinstance(card, dict) else Fraction(card)


def _expected_changes(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    changes: dict[str, Any] = {}
    for name in brute.CARDS:
        if name == "units":  # per unit kind of the current period
            changes[name] = None if current[name] is None else _expected_changes_of(
                current[name], {unit: (previous[name] or {}).get(unit)
                                for unit in current[name]})
            continue
        now, before = _number(current[name]), _number(previous[name])
        if now is None or before is None or (not before and not name.endswith("_rate")):
            changes[name] = None
        elif name.endswith("_rate"):
            changes[name] = float(round(now - before, 6))
        else:
            changes[name] = float(round((now - before) / before, 6))
    return changes


def _expected_changes_of(current: dict[str, int], previous: dict[str, int | None]
                        ) -> dict[str, float | None]:
    return {name: None if not previous[name] else float(round(
        (Fraction(value) - Fraction(previous[name] or 0)) / Fraction(previous[name] or 1), 6))
        for name, value in current.items()}


# Properties ----------------------------------------------------------------------------------


@PROPERTY
@given(case=cases())
def test_usage_summary_matches_brute_force(db: Database, case: Case) -> None:
    ledger = _load(db, case)
    query = case.query()
    _note(case, query)
    start_us, end_us, previous_start_us, previous_end_us = case.expected
    tz = ZoneInfo(case.tz)
    records = case.records()
    current = brute.select(records, case.filter, start_us, end_us)
    previous = brute.select(records, case.filter, previous_start_us, previous_end_us)
    floor_us = ledger.minute_floor_s() * US

    got = usage_summary(ledger, query)

    cards = brute.cards(current, CURRENCY)
    previous_cards = brute.cards(previous, CURRENCY)
    busiest = brute.peak((c for c in current if c.ts_us >= floor_us), tz)
    assert {k: v for k, v in got["cards"].items() if not k.startswith("peak")} == cards
    assert (got["cards"]["peak_rpm"], got["cards"]["peak_tpm"]) == (
        busiest or (None, None))
    assert got["previous"] == previous_cards
    assert got["change"] == _expected_changes(cards, previous_cards)
    assert [brute.instant_us(datetime.fromisoformat(got[edge])) for edge in (
        "start", "end", "previous_start", "previous_end")] == list(case.expected)


def _granularities(start_us: int, end_us: int, tz: ZoneInfo) -> list[str]:
    allowed = ["day"]
    if end_us - start_us <= 93 * DAY_US:
        allowed.append("hour")
    # Minute buckets are for ranges up to a day: 24 hours, or one calendar day in tz (which
    # lasts 25 hours when the clocks fall back).
    if (end_us - start_us <= DAY_US or brute.local_time(start_us, tz).date()
            == brute.local_time(end_us - 1, tz).date()):
        allowed.append("minute")
    return allowed


@PROPERTY
@given(case=cases(short=True) | cases(), data=st.data())
def test_usage_trend_matches_brute_force(db: Database, case: Case, data: st.DataObject) -> None:
    ledger = _load(db, case)
    query = case.query()
    _note(case, query)
    start_us, end_us = case.expected[:2]
    tz = ZoneInfo(case.tz)
    granularity = data.draw(st.sampled_from(_granularities(start_us, end_us, tz)),
                            label="granularity")
    group_by = data.draw(st.sampled_from(("model", "api_key", "call_type", "model_category",
                                          "upstream_model")), label="group_by")
    unit = data.draw(st.sampled_from(UNITS), label="unit")
    records = case.records()
    for metric in ("requests", "total_tokens", "input_tokens", "output_tokens", "cost",
                   "cache_write_tokens", "units"):
        got = usage_trend(ledger, query, metric=metric, granularity=granularity,
                          group_by=group_by, unit=unit)
        expected = brute.trend(records, case.filter, start_us, end_us, tz,
                               f"units:{unit}" if metric == "units" else metric,
                               granularity, group_by)
        assert got["buckets"] == expected["buckets"], metric
        assert [{k: s[k] for k in ("name", "values", "total")} for s in got["series"]] == (
            expected["series"]), metric
        for series in got["series"]:
            if series["name"] == "":
                assert series["label"] == {"api_key": "(no key)",
                                           "upstream_model": "(not reported)"}[group_by]


def _sort_value(row: dict[str, Any], key: str) -> Any:
    value = row[key]
    if isinstance(value, dict):
        return Decimal(value["amount"])
    return value


@PROPERTY
@given(case=cases(), data=st.data())
def test_usage_breakdown_matches_brute_force(db: Database, case: Case,
                                             data: st.DataObject) -> None:
    ledger = _load(db, case)
    query = case.query()
    _note(case, query)
    start_us, end_us = case.expected[:2]
    group_by = data.draw(st.lists(
        st.sampled_from(("api_key", "model", "call_type", "model_category", "upstream_model")),
        min_size=1, max_size=2, unique=True), label="group_by")
    sort_key = data.draw(st.sampled_from((*BREAKDOWN_SORTS, *group_by)), label="sort")
    sort = data.draw(st.sampled_from(("-", "")), label="direction") + sort_key
    with_percentiles = data.draw(st.booleans(), label="percentiles")

    got = usage_breakdown(ledger, query, group_by=group_by, sort=sort,
                          with_percentiles=with_percentiles)

    with_percentiles = with_percentiles or sort_key.startswith(("p50_", "p95_"))
    assert ("percentiles" in got) == with_percentiles
    expected = brute.breakdown(case.records(), case.filter, start_us, end_us,
                               ZoneInfo(case.tz),
                               group_by, CURRENCY,
                               peak_from_us=ledger.minute_floor_s() * US,
                               with_percentiles=with_percentiles)
    rows = {}
    for row in got["rows"]:
        group = tuple(row[g] or "" for g in group_by)
        assert group not in rows
        rows[group] = {k: v for k, v in row.items() if k not in (*group_by, "api_key_name")}
        if "api_key" in group_by and row["api_key"] is not None:
            assert row["api_key"] in FILTER_KEYS
    assert rows == expected
    # Sorted by the chosen column, rows without a value last.
    descending = sort.startswith("-")
    if sort_key in group_by:
        values = [str(row[sort_key] or "") for row in got["rows"]]
        assert values == sorted(values, reverse=descending)
    else:
        present = [_sort_value(row, sort_key) for row in got["rows"]
                   if row[sort_key] is not None]
        assert present == sorted(present, reverse=descending)
        assert all(row[sort_key] is None for row in got["rows"][len(present):])


def test_the_offset_changes_aimed_at_are_where_zoneinfo_has_them() -> None:
    changes = set()
    for name in ZONES:
        tz = ZoneInfo(name)
        for year in YEARS[name]:
            hour = datetime(year, 1, 1, tzinfo=UTC)
            while hour.year == year:
                if hour.astimezone(tz).utcoffset() != (hour + timedelta(hours=1)).astimezone(
                        tz).utcoffset():
                    t = hour
                    while t.astimezone(tz).utcoffset() == hour.astimezone(tz).utcoffset():
                        t += timedelta(minutes=1)
                    changes.add(t)
                hour += timedelta(hours=1)
    assert changes == set(TRANSITIONS)


@pytest.mark.parametrize("tz", ["America/New_York", "Australia/Lord_Howe"])
def test_a_fall_back_day_has_minute_buckets_for_all_its_hours(sqlite_db: Database,
                                                              tz: str) -> None:
    """The last day in ``tz`` is a calendar day even when it lasts 25 (or 24.5) hours."""
    ledger = Ledger(sqlite_db, minute_retention_days=3650)
    day = {"America/New_York": date(2026, 11, 1), "Australia/Lord_Howe": date(2026, 4, 5)}[tz]
    now = datetime(day.year, day.month, day.day, 23, 59, tzinfo=ZoneInfo(tz))
    query = UsageQuery(CallFilter(), resolve_range("1d", None, None, tz, now=now))
    got = usage_trend(ledger, query, granularity="minute")
    length_minutes = (query.range.end_us - query.range.start_us) // (60 * US)
    assert len(got["buckets"]) == length_minutes > 1440
