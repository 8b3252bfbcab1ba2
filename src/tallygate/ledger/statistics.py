"""The statistics behind the page, the API and the CLI: one path for every number.

Each function takes the parsed filters and returns plain dicts in the API's shapes. A figure
for a range without any call is ``None`` (shown as "no data"), never 0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from tallygate.domain.money import format_amount, money
from tallygate.ledger.service import Ledger
from tallygate.ledger.timerange import (
    BadParameter,
    TimeRange,
    bucketing_for,
    check_bucket_count,
    iter_buckets,
)
from tallygate.store import keys as key_store
from tallygate.store.schema import ROLLUP_MEASURES, UNIT_MEASURES
from tallygate.store.usage import (
    PERCENTILE_COLUMNS,
    Aggregate,
    CallFilter,
    aggregate,
    aggregate_checked,
    peak_from_us,
    peak_per_minute,
    percentiles,
)

METRICS = {
    "requests": "calls",
    "total_tokens": "total_tokens",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "cost": "cost_nano",
    "cache_write_tokens": "cache_write_tokens",
    "units": "units_<unit>",  # of the kind the ``unit`` parameter names
}
GROUPS = {"api_key": "api_key_id", "model": "model", "call_type": "call_type",
          "model_category": "model_category", "upstream_model": "upstream_model"}
# Groups whose "" (a call without a key, or without a reported upstream model) shows as null.
_EMPTY_AS_NULL = ("api_key", "upstream_model")
CARD_MEASURES = ("calls", "success_calls", "failed_calls", "rate_limited_calls",
                 "input_tokens", "output_tokens", "cached_input_tokens", "total_tokens",
                 "cost_nano", "cache_write_tokens", *UNIT_MEASURES.values())


@dataclass(frozen=True, slots=True)
class UsageQuery:
    """Parsed common filters: which calls, and when."""

    filter: CallFilter
    range: TimeRange

    def window(self) -> dict[str, str]:
        return {"start": self.range.start().isoformat(), "end": self.range.end().isoformat(),
                "tz": self.range.tz.key}


def units_by_kind(sums: dict[str, int]) -> dict[str, int]:
    """The units of each kind among measure ``sums``, kinds without any left out: a card or
    row shows only the units its calls were billed by."""
    return {unit: sums[measure] for unit, measure in UNIT_MEASURES.items() if sums[measure]}


def _ratio(part: int, whole: int) -> float | None:
    return None if whole == 0 else round(part / whole, 6)


def _cards(ledger: Ledger, query: UsageQuery, start_us: int, end_us: int,
           exact: list[bool] | None = None) -> dict[str, Any]:
    """The cards of ``[start_us, end_us)``; appends to ``exact`` whether they are exact."""
    rows, is_exact = aggregate_checked(ledger.db, Aggregate(
        start_us, end_us, query.filter, ("call_type",), measures=CARD_MEASURES,
        minute_floor_s=ledger.minute_floor_s(),
        recent_minutes_from_s=ledger.recent_minutes_floor_s()))
    if exact is not None:
        exact.append(is_exact)
    totals = dict.fromkeys(CARD_MEASURES, 0)
    by_type = {"service": 0, "internal": 0}
    for row in rows:
        values = row[3:]
        for name, value in zip(CARD_MEASURES, values, strict=True):
            totals[name] += value
        if row[2] in by_type:
            by_type[row[2]] += values[0]
    calls = totals["calls"]
    if calls == 0:
        return dict.fromkeys(
            ("model_calls", "service_calls", "internal_calls", "business_calls", "total_tokens",
             "input_tokens", "output_tokens", "cached_input_tokens", "cost", "success_calls",
             "failed_calls", "rate_limited_calls", "success_rate", "cache_hit_rate",
             "cache_write_tokens", "units"))
    return {
        "model_calls": calls,
        "service_calls": by_type["service"],
        "internal_calls": by_type["internal"],
        "business_calls": calls - by_type["internal"],
        "total_tokens": totals["total_tokens"],
        "input_tokens": totals["input_tokens"],
        "output_tokens": totals["output_tokens"],
        "cached_input_tokens": totals["cached_input_tokens"],
        "cost": money(totals["cost_nano"], ledger.currency),
        "success_calls": totals["success_calls"],
        "failed_calls": totals["failed_calls"],
        "rate_limited_calls": totals["rate_limited_calls"],
        "success_rate": _ratio(totals["success_calls"], calls),
        "cache_hit_rate": _ratio(totals["cached_input_tokens"], totals["input_tokens"]),
        "cache_write_tokens": totals["cache_write_tokens"],
        "units": units_by_kind(totals),
    }


def _card_number(card: Any) -> Decimal | None:
    if card is None:
        return None
    if isinstance(card, dict):
        return Decimal(card["amount"])
    return Decimal(card)


def _changes(current: dict[str, Any], previous: dict[str, Any]) -> dict[str, Any]:
    """Relative change per card; None when either side has no data or the base is 0."""
    changes: dict[str, Any] = {}
    for name, value in current.items():
        if name == "units":  # per unit kind
            before_units = previous.get(name)
            changes[name] = None if value is None else _changes(
                {unit: n for unit, n in value.items()},
                {unit: (before_units or {}).get(unit) for unit in value})
            continue
        now, before = _card_number(value), _card_number(previous.get(name))
        if name.endswith("_rate"):
            changes[name] = None if now is None or before is None else float(
                round(now - before, 6))
            continue
        changes[name] = None if now is None or not before else float(
            round((now - before) / before, 6))
    return changes


def usage_summary(ledger: Ledger, query: UsageQuery) -> dict[str, Any]:
    r = query.range
    exact: list[bool] = []
    cards = _cards(ledger, query, r.start_us, r.end_us, exact)
    previous = _cards(ledger, query, r.previous_start_us, r.previous_end_us, exact)
    peak_spec = Aggregate(r.start_us, r.end_us, query.filter,
                          minute_floor_s=ledger.minute_floor_s())
    peaks = peak_per_minute(ledger.db, peak_spec)
    floor = peak_from_us(ledger.db, peak_spec) // 1_000_000
    peak = peaks.get(())
    cards["peak_rpm"] = None if peak is None else peak[0]
    cards["peak_tpm"] = None if peak is None else peak[1]
    return {
        **query.window(),
        "previous_start": r.previous_start().isoformat(),
        "previous_end": r.previous_end().isoformat(),
        "currency": ledger.currency,
        "cards": cards,
        "previous": previous,
        "change": _changes({k: v for k, v in cards.items() if not k.startswith("peak")},
                           previous),
        "peak_window_start": max(r.start(), _dt_from_s(floor, r)).isoformat(),
        # True where an edge of the range (a partial minute or quarter-hour) lies before the
        # purge floor and past the minute window: its calls are in no tier any more.
        "approximate": {"cards": not exact[0], "previous": not exact[1]},
    }


def _dt_from_s(seconds: int, r: TimeRange) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(seconds, UTC).astimezone(r.tz)


def _series_value(metric: str, value: int) -> int | str:
    return format_amount(value) if metric == "cost" else value


def usage_trend(ledger: Ledger, query: UsageQuery, metric: str = "requests",
                granularity: str = "day", group_by: str = "model",
                unit: str | None = None) -> dict[str, Any]:
    """``metric=units`` counts the units of one kind, named by ``unit``."""
    if metric not in METRICS:
        raise BadParameter("metric", f"must be one of {', '.join(METRICS)}")
    if metric == "units" and unit not in UNIT_MEASURES:
        raise BadParameter("unit", "metric=units needs unit, one of "
                                   f"{', '.join(UNIT_MEASURES)}")
    if group_by not in GROUPS:
        raise BadParameter("group_by", f"must be one of {', '.join(GROUPS)}")
    check_bucket_count(granularity, query.range)
    bucketing = bucketing_for(granularity, query.range)
    dimension = GROUPS[group_by]
    measure = UNIT_MEASURES[unit] if metric == "units" and unit else METRICS[metric]
    rows = aggregate(ledger.db, Aggregate(
        query.range.start_us, query.range.end_us, query.filter, (dimension,), bucketing,
        measures=(measure,), minute_floor_s=ledger.minute_floor_s(),
        recent_minutes_from_s=ledger.recent_minutes_floor_s()))
    buckets = list(iter_buckets(query.range, bucketing))
    position = {(b.index, b.offset): i for i, b in enumerate(buckets)}
    series: dict[str, list[int | None]] = {}
    totals: dict[str, int] = {}
    for bucket_index, offset, name, value in rows:
        name = name or ""
        values = series.setdefault(name, [None] * len(buckets))
        values[position[(bucket_index, offset)]] = value
        totals[name] = totals.get(name, 0) + value
    names = _display_names(ledger, group_by, series)
    ordered = sorted(series, key=lambda n: (-totals[n], n))
    return {
        "metric": metric,
        **({"unit": unit} if metric == "units" else {}),
        "granularity": granularity,
        "group_by": group_by,
        **query.window(),
        "buckets": [b.label for b in buckets],
        "series": [
            {"name": n, "label": names.get(n, n),
             "values": [None if v is None else _series_value(metric, v) for v in series[n]],
             "total": _series_value(metric, totals[n])}
            for n in ordered
        ],
    }


def _display_names(ledger: Ledger, group_by: str, groups: Any) -> dict[str, str]:
    if group_by == "upstream_model":
        return {"": "(not reported)"}
    if group_by != "api_key":
        return {}
    names = key_store.key_names(ledger.db)
    return {g: names.get(g, g or "(no key)") for g in groups}


PERCENTILE_FIELDS = {f"p{k}_{column}": (column, k)
                     for column in PERCENTILE_COLUMNS for k in (50, 95)}
BREAKDOWN_SORTS = ("calls", "success_calls", "failed_calls", "rate_limited_calls",
                   "input_tokens", "output_tokens", "cached_input_tokens", "reasoning_tokens",
                   "total_tokens", "cost", "cache_hit_rate", "avg_latency_ms", "peak_rpm",
                   "peak_tpm", "cache_write_tokens", *PERCENTILE_FIELDS)


def usage_breakdown(ledger: Ledger, query: UsageQuery, group_by: Sequence[str] = ("model",),
                    sort: str = "-calls", *, with_percentiles: bool = False) -> dict[str, Any]:
    """Per-group figures. ``with_percentiles`` adds the p50/p95 latency and time to first
    token of each group (exact, from raw records: slower on long ranges); sorting by one of
    them implies it."""
    if not group_by or len(group_by) > 2 or len(set(group_by)) != len(group_by):
        raise BadParameter("group_by", "give one or two distinct groupings")
    for group in group_by:
        if group not in GROUPS:
            raise BadParameter("group_by", f"must be among {', '.join(GROUPS)}")
    sort_key = sort.lstrip("-")
    if sort_key not in BREAKDOWN_SORTS and sort_key not in group_by:
        raise BadParameter("sort", f"must be one of {', '.join(BREAKDOWN_SORTS)} (or a "
                                   "group), with - for descending")
    dims = tuple(GROUPS[g] for g in group_by)
    spec = Aggregate(query.range.start_us, query.range.end_us, query.filter, dims,
                     minute_floor_s=ledger.minute_floor_s(),
                     recent_minutes_from_s=ledger.recent_minutes_floor_s())
    rows = aggregate(ledger.db, spec)
    peaks = peak_per_minute(ledger.db, spec)
    total_calls = sum(row[2 + len(dims)] for row in rows)
    # What the percentiles sort: the records with a latency (or a time to first token), each
    # of one call; an aggregate of a flood of refusals has neither and costs the sort nothing.
    timed = max((sum(row[2 + len(dims) + ROLLUP_MEASURES.index(m)] for row in rows)
                 for m in ("latency_count", "ttft_count")), default=0)
    with_percentiles = with_percentiles or sort_key in PERCENTILE_FIELDS
    why_not = _why_no_percentiles(ledger, query, timed) if with_percentiles else None
    ranked = {column: percentiles(ledger.db, spec, column)
              if with_percentiles and why_not is None else {}
              for column in PERCENTILE_COLUMNS}
    total_cost = sum(row[2 + len(dims) + 9] for row in rows)
    names = _display_names(ledger, "api_key", {row[2 + group_by.index("api_key")]
                                               for row in rows}) if "api_key" in group_by else {}
    items = []
    for row in rows:
        groups = row[2:2 + len(dims)]
        m = dict(zip(ROLLUP_MEASURES, row[2 + len(dims):], strict=True))
        item: dict[str, Any] = {g: (v or None) if g in _EMPTY_AS_NULL else v
                                for g, v in zip(group_by, groups, strict=True)}
        if "api_key" in group_by:
            item["api_key_name"] = names.get(groups[group_by.index("api_key")])
        peak = peaks.get(tuple(groups))
        item.update({
            "calls": m["calls"], "success_calls": m["success_calls"],
            "failed_calls": m["failed_calls"], "rate_limited_calls": m["rate_limited_calls"],
            "input_tokens": m["input_tokens"], "output_tokens": m["output_tokens"],
            "cached_input_tokens": m["cached_input_tokens"],
            "reasoning_tokens": m["reasoning_tokens"], "total_tokens": m["total_tokens"],
            "cache_write_tokens": m["cache_write_tokens"], "units": units_by_kind(m),
            "estimated_calls": m["estimated_calls"],
            "cache_hit_rate": _ratio(m["cached_input_tokens"], m["input_tokens"]),
            "success_rate": _ratio(m["success_calls"], m["calls"]),
            "cost": money(m["cost_nano"], ledger.currency),
            "avg_latency_ms": None if not m["latency_count"] else round(
                m["latency_ms_sum"] / m["latency_count"], 1),
            "avg_ttft_ms": None if not m["ttft_count"] else round(
                m["ttft_ms_sum"] / m["ttft_count"], 1),
            "peak_rpm": None if peak is None else peak[0],
            "peak_tpm": None if peak is None else peak[1],
            "share": _ratio(m["calls"], total_calls),
            "cost_share": _ratio(m["cost_nano"], total_cost),
        })
        if with_percentiles:
            for name, (column, k) in PERCENTILE_FIELDS.items():
                item[name] = ranked[column].get(tuple(groups), {}).get(k)
        items.append(item)
    _sort_rows(items, sort)
    answer: dict[str, Any] = {**query.window(), "group_by": list(group_by), "sort": sort,
                              "currency": ledger.currency, "rows": items}
    if with_percentiles:
        answer["percentiles"] = why_not or {"available": True, "reason": None}
    return answer


def _why_no_percentiles(ledger: Ledger, query: UsageQuery,
                        timed_calls: int) -> dict[str, Any] | None:
    """Why exact percentiles cannot be given for the range, or None when they can.

    They need every raw record of the range: after retention removed some they would
    describe only part of it. And they cost a sort of those records: past
    ``percentile_max_calls`` calls with a latency one page view would cost seconds of the
    server's CPU.
    """
    raw_from_us = max(ledger.raw_floor_us() or 0, ledger.purge_floor_us())
    if raw_from_us > query.range.start_us:
        return {"available": False, "reason": "raw_records_purged",
                "raw_records_from": _dt_from_s(raw_from_us // 1_000_000,
                                               query.range).isoformat()}
    if timed_calls > ledger.percentile_max_calls:
        return {"available": False, "reason": "too_many_calls",
                "max_calls": ledger.percentile_max_calls}
    return None


def _sort_rows(items: list[dict[str, Any]], sort: str) -> None:
    key = sort.lstrip("-")

    def value(item: dict[str, Any]) -> Any:
        v = item.get(key)
        if isinstance(v, dict):
            v = Decimal(v["amount"])
        return (v is None, v if v is not None else 0)

    items.sort(key=lambda item: str(item.get("model") or item.get("api_key") or ""))
    if key in GROUPS:
        items.sort(key=lambda item: str(item.get(key) or ""), reverse=sort.startswith("-"))
        return
    present = [i for i in items if i.get(key) is not None]
    missing = [i for i in items if i.get(key) is None]
    present.sort(key=value, reverse=sort.startswith("-"))
    items[:] = present + missing


