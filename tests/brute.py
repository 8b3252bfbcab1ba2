"""A brute-force ledger: every statistic recomputed from raw call records with plain loops.

Written apart from the code under test: it uses nothing from ``tallygate.store.usage``,
``tallygate.ledger.timerange`` or ``tallygate.ledger.statistics``.
Each record's local date, hour and minute come straight from zoneinfo, and every figure is a
sum over the records that match. Slow on purpose, and obviously right.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from tallygate.domain.records import CallRecord

US = 1_000_000
MINUTE_US = 60 * US
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

CARDS = ("model_calls", "service_calls", "internal_calls", "business_calls", "total_tokens",
         "input_tokens", "output_tokens", "cached_input_tokens", "cost", "success_calls",
         "failed_calls", "rate_limited_calls", "success_rate", "cache_hit_rate",
         "cache_write_tokens", "units")
UNITS = ("image", "second", "character", "search_unit", "page", "request")
GROUP_OF: dict[str, Callable[[CallRecord], str]] = {
    "api_key": lambda r: r.api_key_id or "",
    "model": lambda r: r.model,
    "call_type": lambda r: r.call_type,
    "model_category": lambda r: r.model_category,
    "upstream_model": lambda r: r.upstream_model or "",
}
METRIC_OF: dict[str, Callable[[CallRecord], int]] = {
    "requests": lambda r: r.repeats,
    "total_tokens": lambda r: r.total_tokens,
    "input_tokens": lambda r: r.input_tokens,
    "output_tokens": lambda r: r.output_tokens,
    "cost": lambda r: r.cost_nano,
    "cache_write_tokens": lambda r: r.cache_write_tokens,
    **{f"units:{unit}": (lambda r, unit=unit: r.units if r.unit == unit else 0)
       for unit in UNITS},
}


@dataclass(frozen=True)
class Filter:
    """Which calls count; an empty tuple means all."""

    api_key_ids: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    call_types: tuple[str, ...] = ()
    model_categories: tuple[str, ...] = ()
    upstream_models: tuple[str, ...] = ()

    def matches(self, r: CallRecord) -> bool:
        return ((not self.api_key_ids or r.api_key_id in self.api_key_ids)
                and (not self.models or r.model in self.models)
                and (not self.call_types or r.call_type in self.call_types)
                and (not self.model_categories or r.model_category in self.model_categories)
                and (not self.upstream_models
                     or (r.upstream_model or "") in self.upstream_models))


def local_time(ts_us: int, tz: ZoneInfo) -> datetime:
    return (EPOCH + timedelta(microseconds=ts_us)).astimezone(tz)


def instant_us(moment: datetime) -> int:
    delta = moment - EPOCH
    return (delta.days * 86400 + delta.seconds) * US + delta.microseconds


def unique(records: Iterable[CallRecord]) -> list[CallRecord]:
    """Each id once, the first record offered with it winning (as a stored ledger keeps it)."""
    seen: dict[str, CallRecord] = {}
    for r in records:
        seen.setdefault(r.id, r)
    return list(seen.values())


def select(records: Iterable[CallRecord], f: Filter, start_us: int,
           end_us: int) -> list[CallRecord]:
    return [r for r in records if start_us <= r.ts_us < end_us and f.matches(r)]


def amount(nano: int) -> str:
    """The exact decimal string of ``nano`` units: at least 2 places, no trailing zeros."""
    whole, fraction = divmod(nano, 1_000_000_000)
    digits = f"{fraction:09d}".rstrip("0")
    return f"{whole}.{digits.ljust(2, '0')}"


def ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 6)


def is_success(r: CallRecord) -> bool:
    return r.status_code < 400


def is_rate_limited(r: CallRecord) -> bool:
    return r.status_code == 429


def is_failure(r: CallRecord) -> bool:
    return r.status_code >= 400 and r.status_code != 429


def count(records: Iterable[CallRecord],
          which: Callable[[CallRecord], bool] = lambda r: True) -> int:
    """The calls among ``records`` that ``which`` picks: a record stands for ``repeats``."""
    return sum(r.repeats for r in records if which(r))


def units_by_kind(records: Iterable[CallRecord]) -> dict[str, int]:
    """Units summed per unit kind; kinds without any are left out."""
    sums: dict[str, int] = defaultdict(int)
    for r in records:
        if r.units:
            assert r.unit is not None
            sums[r.unit] += r.units
    return {unit: sums[unit] for unit in UNITS if sums[unit]}


def cards(records: Sequence[CallRecord], currency: str) -> dict[str, Any]:
    if not records:
        return dict.fromkeys(CARDS)
    calls = count(records)
    input_tokens = sum(r.input_tokens for r in records)
    cached = sum(r.cached_input_tokens for r in records)
    successes = count(records, is_success)
    internal = count(records, lambda r: r.call_type == "internal")
    return {
        "model_calls": calls,
        "service_calls": count(records, lambda r: r.call_type == "service"),
        "internal_calls": internal,
        "business_calls": calls - internal,
        "total_tokens": sum(r.total_tokens for r in records),
        "input_tokens": input_tokens,
        "output_tokens": sum(r.output_tokens for r in records),
        "cached_input_tokens": cached,
        "cost": {"amount": amount(sum(r.cost_nano for r in records)), "currency": currency},
        "success_calls": successes,
        "failed_calls": count(records, is_failure),
        "rate_limited_calls": count(records, is_rate_limited),
        "success_rate": ratio(successes, calls),
        "cache_hit_rate": ratio(cached, input_tokens),
        "cache_write_tokens": sum(r.cache_write_tokens for r in records),
        "units": units_by_kind(records),
    }


def minute_of(ts_us: int, tz: ZoneInfo) -> tuple[Any, ...]:
    t = local_time(ts_us, tz)
    return (t.date(), t.hour, t.minute, t.utcoffset())


def peak(records: Iterable[CallRecord], tz: ZoneInfo) -> tuple[int, int] | None:
    """Most calls and most total tokens in one minute (each its own busiest minute)."""
    per_minute: dict[tuple[Any, ...], list[int]] = defaultdict(lambda: [0, 0])
    for r in records:
        sums = per_minute[minute_of(r.ts_us, tz)]
        sums[0] += r.repeats
        sums[1] += r.total_tokens
    if not per_minute:
        return None
    return (max(s[0] for s in per_minute.values()), max(s[1] for s in per_minute.values()))


# Ranges --------------------------------------------------------------------------------------


@lru_cache(maxsize=4096)
def day_start_us(day: date, tz: ZoneInfo) -> int:
    """The first instant of the local date ``day`` (or of the next date the zone has, where it
    skipped ``day``): the earliest whole minute whose local date is not before ``day``, found
    by walking from before the earliest offset any zone has (+14:00). Every offset since 1972
    is whole minutes, so no instant between two minutes can be earlier."""
    t = instant_us(datetime(day.year, day.month, day.day, tzinfo=UTC)) - 15 * 3600 * US
    while local_time(t, tz).date() < day:
        t += MINUTE_US
    return t


def same_time_days_away_us(ts_us: int, days: int, tz: ZoneInfo) -> int:
    """As long after the first instant of the local day ``days`` away as ``ts_us`` is after
    the first instant of its own day, but no later than that day's end."""
    day = local_time(ts_us, tz).date()
    target = day + timedelta(days=days)
    return min(day_start_us(target, tz) + ts_us - day_start_us(day, tz),
               day_start_us(target + timedelta(days=1), tz))


def period_range(days: int, now_us: int, tz: ZoneInfo) -> tuple[int, int, int, int]:
    """``period=Nd`` as docs/api.md defines it: ``(start, end, previous_start, previous_end)``.
    From the first instant of the local day N-1 days ago until now; the previous period from
    the first instant of the day 2N-1 days ago, as far into the day N days ago as now is into
    today, rounded down to a UTC quarter-hour."""
    today = local_time(now_us, tz).date()
    quarter = 900 * US
    return (day_start_us(today - timedelta(days=days - 1), tz), now_us,
            day_start_us(today - timedelta(days=2 * days - 1), tz),
            same_time_days_away_us(now_us, -days, tz) // quarter * quarter)


def dates_range(first: date, last: date, tz: ZoneInfo) -> tuple[int, int, int, int]:
    """``start=first&end=last``: whole local days; the previous period is as many days before."""
    return (day_start_us(first, tz), day_start_us(last, tz),
            day_start_us(first - (last - first), tz), day_start_us(first, tz))


def instants_range(start_us: int, end_us: int) -> tuple[int, int, int, int]:
    """Any other range: the previous period is as long, in absolute time, ending at start."""
    return (start_us, end_us, 2 * start_us - end_us, start_us)


# Trend buckets -------------------------------------------------------------------------------


def bucket_of(ts_us: int, tz: ZoneInfo, granularity: str) -> tuple[Any, ...]:
    """A local calendar day; or a local hour / minute *and* its UTC offset, so that the hour
    repeated when clocks fall back is two buckets."""
    t = local_time(ts_us, tz)
    if granularity == "day":
        return (t.date(),)
    if granularity == "hour":
        return (t.date(), t.hour, t.utcoffset())
    return (t.date(), t.hour, t.minute, t.utcoffset())


@lru_cache(maxsize=8)  # the same range is asked for each metric in turn
def buckets(start_us: int, end_us: int, tz: ZoneInfo,
            granularity: str) -> tuple[tuple[Any, ...], ...]:
    """Every bucket some instant of ``[start, end)`` falls in, in time order.

    Offsets only change on whole minutes, so looking at the start and at every minute boundary
    after it sees every bucket.
    """
    if granularity == "day":
        first, last = local_time(start_us, tz).date(), local_time(end_us - 1, tz).date()
        return tuple((first + timedelta(days=n),) for n in range((last - first).days + 1))
    keys: list[tuple[Any, ...]] = []
    t = start_us
    while t < end_us:
        key = bucket_of(t, tz, granularity)
        if not keys or keys[-1] != key:
            assert key not in keys
            keys.append(key)
        t = (t // MINUTE_US + 1) * MINUTE_US
    return tuple(keys)


def bucket_label(key: tuple[Any, ...], tz: ZoneInfo, granularity: str) -> str:
    """``YYYY-MM-DD`` for a day; else the bucket's first instant in local time (the whole
    bucket's, not cut by the range), to the minute, with its offset."""
    day: date = key[0]
    if granularity == "day":
        return day.isoformat()
    minute = key[2] if granularity == "minute" else 0
    offset: timedelta = key[-1]
    wall = datetime(day.year, day.month, day.day, key[1], minute, tzinfo=UTC)
    t = instant_us(wall - offset)
    # Where the offset changed inside the wall-clock hour (a 30-minute shift), the bucket
    # starts at the change.
    while bucket_of(t, tz, granularity) != key:
        t += MINUTE_US
    return local_time(t, tz).isoformat(timespec="minutes")


def trend(records: Sequence[CallRecord], f: Filter, start_us: int, end_us: int, tz: ZoneInfo,
          metric: str, granularity: str, group_by: str) -> dict[str, Any]:
    """``buckets`` labels and ``series`` ``{name, values, total}`` ordered by total, then name."""
    keys = buckets(start_us, end_us, tz, granularity)
    position = {key: i for i, key in enumerate(keys)}
    values: dict[str, list[int | None]] = {}
    for r in select(records, f, start_us, end_us):
        name = GROUP_OF[group_by](r)
        row = values.setdefault(name, [None] * len(keys))
        i = position[bucket_of(r.ts_us, tz, granularity)]
        row[i] = (row[i] or 0) + METRIC_OF[metric](r)
    totals = {name: sum(v for v in row if v is not None) for name, row in values.items()}

    def shown(value: int | None) -> int | str | None:
        if value is None or metric != "cost":
            return value
        return amount(value)

    return {
        "buckets": [bucket_label(key, tz, granularity) for key in keys],
        "series": [{"name": name, "values": [shown(v) for v in values[name]],
                    "total": shown(totals[name])}
                   for name in sorted(values, key=lambda n: (-totals[n], n))],
    }


# Breakdown -----------------------------------------------------------------------------------


def breakdown(records: Sequence[CallRecord], f: Filter, start_us: int, end_us: int,
              tz: ZoneInfo, group_by: Sequence[str], currency: str,
              peak_from_us: int, with_percentiles: bool = False,
              ) -> dict[tuple[str, ...], dict[str, Any]]:
    """One row per group with calls, keyed by the group's values ("" for no key)."""
    chosen = select(records, f, start_us, end_us)
    groups: dict[tuple[str, ...], list[CallRecord]] = defaultdict(list)
    for r in chosen:
        groups[tuple(GROUP_OF[g](r) for g in group_by)].append(r)
    all_calls = count(chosen)
    all_cost = sum(r.cost_nano for r in chosen)
    rows = {}
    for group, rs in groups.items():
        latencies = [r.latency_ms for r in rs if r.latency_ms is not None]
        ttfts = [r.ttft_ms for r in rs if r.ttft_ms is not None]
        input_tokens = sum(r.input_tokens for r in rs)
        cached = sum(r.cached_input_tokens for r in rs)
        successes = count(rs, is_success)
        calls = count(rs)
        cost = sum(r.cost_nano for r in rs)
        busiest = peak((r for r in rs if r.ts_us >= peak_from_us), tz)
        rows[group] = {
            "calls": calls,
            "success_calls": successes,
            "failed_calls": count(rs, is_failure),
            "rate_limited_calls": count(rs, is_rate_limited),
            "input_tokens": input_tokens,
            "output_tokens": sum(r.output_tokens for r in rs),
            "cached_input_tokens": cached,
            "reasoning_tokens": sum(r.reasoning_tokens for r in rs),
            "total_tokens": sum(r.total_tokens for r in rs),
            "cache_write_tokens": sum(r.cache_write_tokens for r in rs),
            "units": units_by_kind(rs),
            "estimated_calls": count(rs, lambda r: r.estimated),
            "cache_hit_rate": ratio(cached, input_tokens),
            "success_rate": ratio(successes, calls),
            "cost": {"amount": amount(cost), "currency": currency},
            "avg_latency_ms": round(sum(latencies) / len(latencies), 1) if latencies else None,
            "avg_ttft_ms": round(sum(ttfts) / len(ttfts), 1) if ttfts else None,
            "peak_rpm": None if busiest is None else busiest[0],
            "peak_tpm": None if busiest is None else busiest[1],
            "share": ratio(calls, all_calls),
            "cost_share": ratio(cost, all_cost),
        }
        if with_percentiles:
            for k in (50, 95):
                rows[group][f"p{k}_latency_ms"] = nearest_rank(latencies, k)
                rows[group][f"p{k}_ttft_ms"] = nearest_rank(ttfts, k)
    return rows


def nearest_rank(values: Sequence[int], percent: int) -> int | None:
    """The smallest value with at least ``percent`` % of the values at or below it."""
    if not values:
        return None
    ordered = sorted(values)
    for i, value in enumerate(ordered, start=1):
        if i * 100 >= percent * len(ordered):
            return value
    raise AssertionError("unreachable")


# Rollups -------------------------------------------------------------------------------------

ROLLUP_MEASURES = ("calls", "success_calls", "failed_calls", "rate_limited_calls",
                   "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
                   "total_tokens", "cost_nano", "latency_ms_sum", "latency_count", "ttft_ms_sum",
                   "ttft_count", "estimated_calls", "cache_write_tokens",
                   *(f"units_{unit}" for unit in UNITS))


def rollups(records: Iterable[CallRecord], grain_s: int, min_bucket_s: int | None = None,
            dimensions: Sequence[str] = ("api_key_id", "model", "model_category", "call_type"),
            ) -> dict[tuple[Any, ...], tuple[int, ...]]:
    """``(bucket_s, *dimensions)`` → measures, as a rebuild sees it ("" for no key)."""
    rows: dict[tuple[Any, ...], dict[str, int]] = {}
    for r in records:
        bucket = r.ts_us // US // grain_s * grain_s
        if min_bucket_s is not None and bucket < min_bucket_s:
            continue
        values = {"api_key_id": r.api_key_id or "", "model": r.model,
                  "model_category": r.model_category, "call_type": r.call_type,
                  "upstream_model": r.upstream_model or ""}
        key = (bucket, *(values[d] for d in dimensions))
        m = rows.setdefault(key, dict.fromkeys(ROLLUP_MEASURES, 0))
        m["calls"] += r.repeats
        m["success_calls"] += is_success(r) * r.repeats
        m["failed_calls"] += is_failure(r) * r.repeats
        m["rate_limited_calls"] += is_rate_limited(r) * r.repeats
        m["input_tokens"] += r.input_tokens
        m["output_tokens"] += r.output_tokens
        m["cached_input_tokens"] += r.cached_input_tokens
        m["reasoning_tokens"] += r.reasoning_tokens
        m["total_tokens"] += r.total_tokens
        m["cost_nano"] += r.cost_nano
        m["latency_ms_sum"] += r.latency_ms or 0
        m["latency_count"] += r.latency_ms is not None
        m["ttft_ms_sum"] += r.ttft_ms or 0
        m["ttft_count"] += r.ttft_ms is not None
        m["estimated_calls"] += r.estimated * r.repeats
        m["cache_write_tokens"] += r.cache_write_tokens
        if r.units:
            m[f"units_{r.unit}"] += r.units
    return {key: tuple(m[name] for name in ROLLUP_MEASURES) for key, m in rows.items()}
