"""Reading the ledger: sums over rollups, with the ragged edges of a range read from raw calls.

A range ``[start, end)`` is split into pieces aligned to the rollup tiers — whole days in the
middle, then whole hours and quarter-hours toward the ends (minutes, for minute buckets) —
each answered from its tier (its cost depends on the number of rollup rows, not of calls),
and at most two partial-bucket edges, answered from raw records (at most a quarter-hour's
worth of calls each). The answers are summed, so every figure equals the brute-force sum over raw
records.

Raw records are complete only from the purge floor on (``store/retention.py``). An edge
below it is read from the minute rollups while the minute window still holds it; what is
left (a partial minute, or a minute past the window) has nothing exact to read, and the
answer says so (``aggregate_checked``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Select,
    Table,
    and_,
    case,
    func,
    literal,
    literal_column,
    or_,
    select,
    tuple_,
    union_all,
)

from tallygate.domain.records import CallRecord
from tallygate.store.database import Database
from tallygate.store.retention import PURGE_FLOOR
from tallygate.store.schema import (
    MEASURE_OF_CALL,
    NULLABLE_DIMENSIONS,
    ROLLUP_MEASURES,
    TIERS,
    Tier,
    calls,
    ledger_state,
)

DIMENSIONS = ("api_key_id", "model", "model_category", "call_type", "upstream_model")
US = 1_000_000


@dataclass(frozen=True, slots=True)
class CallFilter:
    """Which calls count. An empty tuple means "all"."""

    api_key_ids: tuple[str, ...] = ()
    models: tuple[str, ...] = ()
    call_types: tuple[str, ...] = ()
    model_categories: tuple[str, ...] = ()
    upstream_models: tuple[str, ...] = ()  # "" matches calls without an upstream model

    def by_dimension(self) -> dict[str, tuple[str, ...]]:
        """The values each filtered dimension may take (unfiltered ones are absent)."""
        chosen = {"api_key_id": self.api_key_ids, "model": self.models,
                  "call_type": self.call_types, "model_category": self.model_categories,
                  "upstream_model": self.upstream_models}
        return {name: values for name, values in chosen.items() if values}


@dataclass(frozen=True, slots=True)
class Bucketing:
    """Local-time buckets of ``width_s`` seconds.

    ``segments`` are ``(from_s, utc_offset_s)`` pairs in time order: the zone's offset from
    each instant on. A time ``t`` falls in local bucket ``(t + offset(t)) // width_s``; with
    ``split_by_offset`` the offset is part of the bucket's identity, so the repeated hour of a
    daylight-saving fall-back stays two hours.
    """

    width_s: int
    segments: tuple[tuple[int, int], ...]
    split_by_offset: bool = False

    def offsets(self) -> list[int]:
        return [offset for _, offset in self.segments]


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Sums of ``measures`` over ``[start_us, end_us)`` grouped by ``dimensions``."""

    start_us: int
    end_us: int
    filter: CallFilter = field(default_factory=CallFilter)
    dimensions: tuple[str, ...] = ()
    bucketing: Bucketing | None = None
    measures: tuple[str, ...] = ROLLUP_MEASURES
    minute_floor_s: int | None = None  # earliest minute the minute rollups still hold
    # Totals may read the minute rollups from here on: minutes no retention can have purged.
    recent_minutes_from_s: int | None = None
    # Raw records may have been purged before this (µs); ``aggregate`` reads the recorded
    # purge floor itself, in the snapshot it sums from.
    raw_floor_us: int = 0


Row = tuple[Any, ...]  # (bucket, offset, *dimensions, *measures); bucket/offset None if unused


def aggregate(db: Database, spec: Aggregate) -> list[Row]:
    """Rows of sums, one per group that has calls (groups without calls are absent)."""
    return aggregate_checked(db, spec)[0]


def aggregate_checked(db: Database, spec: Aggregate) -> tuple[list[Row], bool]:
    """``aggregate``, and whether the rows are exact: False when part of the range (a
    partial minute or quarter-hour at an edge) lies below the purge floor where no tier
    still holds it, so its calls are missing."""
    width = 2 + len(spec.dimensions)
    merged: dict[tuple[Any, ...], list[int]] = {}
    with db.read() as conn:
        if not db.is_sqlite:  # the floor and the sums from one snapshot (SQLite's is one)
            conn = conn.execution_options(isolation_level="REPEATABLE READ")
        floor = conn.execute(select(ledger_state.c.value).where(
            ledger_state.c.name == PURGE_FLOOR)).scalar()
        spec = replace(spec, raw_floor_us=max(spec.raw_floor_us, int(floor or 0)))
        parts = _parts(spec)
        if not parts:  # an empty range
            return [], True
        for row in conn.execute(_one_statement(parts)):
            key = tuple(row[:width])
            sums = [int(v or 0) for v in row[width:]]
            if key in merged:
                merged[key] = [a + b for a, b in zip(merged[key], sums, strict=True)]
            else:
                merged[key] = sums
    exact = all(lo >= spec.raw_floor_us for lo, _ in split_range(spec)[1])
    return [(*key, *sums) for key, sums in merged.items()], exact


def _one_statement(parts: list[Select[Any]]) -> Any:
    """The pieces of a range as one statement: one round trip to the database."""
    return parts[0] if len(parts) == 1 else union_all(*parts)


def _parts(spec: Aggregate) -> list[Select[Any]]:
    """One grouped query per rollup piece of the range, one over raw calls for what is left."""
    pieces, edges = split_range(spec)
    parts = [_rollup_select(tier, spec, lo, hi) for tier, lo, hi in pieces]
    if edges:
        parts.append(_raw_select(spec, edges))
    return parts


def usable_tiers(spec: Aggregate) -> list[Tier]:
    """The tiers that sum exactly into ``spec``'s buckets, coarsest first, one per grain:
    the one with the fewest rows that still has every dimension the view filters or
    groups by.

    A tier fits a bucketing when its grain divides the bucket width, every UTC offset of
    the zone and every instant the offset changes, so none of its buckets straddles two
    local buckets.
    """
    needed = set(spec.dimensions) | set(spec.filter.by_dimension())
    tiers: list[Tier] = []
    for tier in reversed(TIERS):  # coarsest grain first, fewest dimensions first in a grain
        if not needed <= set(tier.dimensions):
            continue
        if tier.clustered_by_key and not spec.filter.api_key_ids:
            continue  # every key's minutes of the whole window, for any range
        if tier.windowed and minute_tiers_from_s(spec) is None:
            continue
        if tiers and tiers[-1].grain_s == tier.grain_s:
            continue
        if spec.bucketing is not None:
            grain = tier.grain_s
            b = spec.bucketing
            if (b.width_s % grain or any(offset % grain for offset in b.offsets())
                    or any(begin % grain for begin, _ in b.segments[1:])):
                continue
        tiers.append(tier)
    return tiers


def minute_tiers_from_s(spec: Aggregate) -> int | None:
    """From when ``spec`` may read the minute rollups (None: not at all).

    Minute buckets have nothing else to read: the minute window (``minute_floor_s``).
    Totals read them only for the recent minutes that no retention can have purged yet
    (``recent_minutes_from_s``): whether the window's oldest rows are still there depends on
    the retention setting of whoever purged them, which may not be this process's.
    """
    if spec.bucketing is not None and spec.bucketing.width_s == 60:
        return spec.minute_floor_s
    return spec.recent_minutes_from_s


def split_range(spec: Aggregate) -> tuple[list[tuple[Tier, int, int]], list[tuple[int, int]]]:
    """``[start, end)`` as rollup pieces ``(tier, from_s, to_s)`` and raw edges (µs).

    The coarsest tier takes the whole buckets of the middle, finer tiers the whole buckets
    of what is left at either end, and raw records the partial minutes (or quarter-hours)
    at the very edges. The minute tiers only reach back to ``minute_tiers_from_s(spec)``.
    """
    tiers = usable_tiers(spec)
    pieces: list[tuple[Tier, int, int]] = []
    edges: list[tuple[int, int]] = []

    def split(lo: int, hi: int, level: int) -> None:
        while lo < hi and level < len(tiers):
            tier = tiers[level]
            grain = tier.grain_s * US
            first, last = -(-lo // grain) * grain, hi // grain * grain
            if tier.windowed:
                floor_s = minute_tiers_from_s(spec)
                assert floor_s is not None
                first = max(first, -(-floor_s * US // grain) * grain)
            if first < last:
                pieces.append((tier, first // US, last // US))
                split(lo, first, level + 1)
                split(last, hi, level + 1)
                return
            level += 1
        if lo < hi:
            edges.append((lo, hi))

    split(spec.start_us, spec.end_us, 0)
    if spec.raw_floor_us and any(lo < spec.raw_floor_us for lo, _ in edges):
        pieces, edges = _edges_below_the_floor(spec, pieces, edges)
    return pieces, edges


def _edges_below_the_floor(spec: Aggregate, pieces: list[tuple[Tier, int, int]],
                           edges: list[tuple[int, int]]
                           ) -> tuple[list[tuple[Tier, int, int]], list[tuple[int, int]]]:
    """Read the part of each edge below the purge floor from the minute rollups, its
    whole minutes inside the minute window; raw records keep what is at or above the floor
    and what nothing else covers."""
    floor = spec.raw_floor_us
    tier = _edge_minute_tier(spec)
    minute = 60 * US
    pieces, raw = list(pieces), []
    for lo, hi in edges:
        cut = min(hi, floor)
        if cut < hi:
            raw.append((max(lo, cut), hi))
        if lo >= cut:
            continue
        if tier is not None and spec.minute_floor_s is not None:
            first = max(-(-lo // minute) * minute, -(-spec.minute_floor_s // 60) * minute)
            last = cut // minute * minute
            if first < last:
                pieces.append((tier, first // US, last // US))
                raw.extend(part for part in ((lo, first), (last, cut)) if part[0] < part[1])
                continue
        raw.append((lo, cut))
    return pieces, sorted(raw)


def _edge_minute_tier(spec: Aggregate) -> Tier | None:
    """The minute tier with the fewest rows that has every dimension ``spec`` needs and
    whose minutes nest in its buckets, or None."""
    needed = set(spec.dimensions) | set(spec.filter.by_dimension())
    b = spec.bucketing
    if b is not None and (b.width_s % 60 or any(offset % 60 for offset in b.offsets())
                          or any(begin % 60 for begin, _ in b.segments[1:])):
        return None
    for tier in reversed(TIERS):
        if (tier.windowed and needed <= set(tier.dimensions)
                and (not tier.clustered_by_key or spec.filter.api_key_ids)):
            return tier
    return None


def _offset_expr(bucketing: Bucketing, t: ColumnElement[Any]) -> ColumnElement[Any]:
    segments = bucketing.segments
    if len(segments) == 1:
        return literal(segments[0][1])
    whens = [(t < segments[i + 1][0], segments[i][1]) for i in range(len(segments) - 1)]
    return case(*whens, else_=segments[-1][1])


def _grouped(spec: Aggregate, inner: Select[Any]) -> Select[Any]:
    """Wrap a per-row select with bucket and offset columns, then group it.

    Grouping happens in an outer query over plain columns, because PostgreSQL does not treat
    two copies of an expression with bound parameters as the same GROUP BY expression.
    """
    sub = inner.subquery()
    group_cols = [sub.c.b, sub.c.o, *(sub.c[d] for d in spec.dimensions)]
    sums = [func.sum(sub.c[m]) for m in spec.measures]
    return select(*group_cols, *sums).group_by(*group_cols)


def _bucket_columns(spec: Aggregate, t: ColumnElement[Any]) -> list[ColumnElement[Any]]:
    if spec.bucketing is None:
        return [literal(None).label("b"), literal(None).label("o")]
    offset = _offset_expr(spec.bucketing, t)
    bucket = ((t + offset) // spec.bucketing.width_s).label("b")
    shown_offset = offset if spec.bucketing.split_by_offset else literal(None)
    return [bucket, shown_offset.label("o")]


def filter_conditions(table: Table, f: CallFilter) -> list[ColumnElement[bool]]:
    """The conditions of a filter on the raw ``calls`` table or on a rollup table."""
    conditions: list[ColumnElement[bool]] = []
    if f.api_key_ids:
        conditions.append(table.c.api_key_id.in_(f.api_key_ids))
    if f.models:
        conditions.append(table.c.model.in_(f.models))
    if f.call_types:
        conditions.append(table.c.call_type.in_(f.call_types))
    if f.model_categories:
        conditions.append(table.c.model_category.in_(f.model_categories))
    if f.upstream_models:
        # Rollups store a missing upstream model as "", raw records as NULL.
        column = table.c.upstream_model
        conditions.append((func.coalesce(column, "") if table is calls else column)
                          .in_(f.upstream_models))
    return conditions


def _rollup_select(tier: Tier, spec: Aggregate, start_s: int, end_s: int) -> Select[Any]:
    table = tier.table
    t = table.c.bucket
    conditions = (t >= start_s, t < end_s, *filter_conditions(table, spec.filter))
    dims = [table.c[d] for d in spec.dimensions]
    flat_groups = None
    if spec.bucketing is not None and spec.bucketing.width_s == tier.grain_s:
        flat_groups = [t, *dims]  # one stored bucket is one local bucket
        single = {d for d, values in spec.filter.by_dimension().items() if len(values) == 1}
        if set(tier.dimensions) <= set(spec.dimensions) | single:
            # Already one row per group: nothing to sum.
            return select(*_bucket_columns(spec, t), *dims,
                          *(table.c[m] for m in spec.measures)).where(*conditions)
    elif spec.bucketing is None and dims:
        flat_groups = dims
    if flat_groups is not None:
        # Grouped by stored columns alone: read in primary-key order, without a sort.
        return select(*_bucket_columns(spec, t), *dims,
                      *(func.sum(table.c[m]) for m in spec.measures)
                      ).where(*conditions).group_by(*flat_groups)
    inner = select(*_bucket_columns(spec, t), *dims,
                   *(table.c[m] for m in spec.measures)).where(*conditions)
    return _grouped(spec, inner)


def raw_measure(name: str) -> ColumnElement[Any]:
    """What one raw call adds to measure ``name``, in a select from ``calls`` alone."""
    return literal_column(MEASURE_OF_CALL[name], BigInteger).label(name)


def raw_dimension_value(name: str) -> ColumnElement[Any]:
    """A dimension of a raw call as the rollups store it ("" for a missing key or upstream
    model)."""
    column = calls.c[name]
    return func.coalesce(column, "") if name in NULLABLE_DIMENSIONS else column


def raw_dimension(name: str) -> ColumnElement[Any]:
    """``raw_dimension_value``, named as the dimension."""
    return raw_dimension_value(name).label(name)


def _raw_select(spec: Aggregate, edges: list[tuple[int, int]]) -> Select[Any]:
    t = calls.c.ts // US
    in_edges = or_(*(and_(calls.c.ts >= lo, calls.c.ts < hi) for lo, hi in edges))
    dims = [raw_dimension(d) for d in spec.dimensions]
    inner = select(
        *_bucket_columns(spec, t),
        *dims,
        *(raw_measure(m) for m in spec.measures),
    ).where(in_edges, *filter_conditions(calls, spec.filter))
    return _grouped(spec, inner)


def peak_per_minute(db: Database, spec: Aggregate) -> dict[tuple[Any, ...], tuple[int, int]]:
    """Highest calls and total tokens in one minute, per group of ``spec.dimensions``.

    Whole minutes come from the minute rollups, the partial minutes at the range's edges from
    raw records; the two never share a minute, so the peak is the larger of their peaks.
    Minutes before ``spec.minute_floor_s`` are not looked at. No minute rollup has the
    upstream model: a view that needs it reads raw records alone, and so only from the purge
    floor on (``peak_from_us``).
    """
    peaks: dict[tuple[Any, ...], tuple[int, int]] = {}
    if spec.minute_floor_s is None:
        return peaks
    by_minute = Aggregate(
        start_us=max(spec.start_us, peak_from_us(db, spec)), end_us=spec.end_us,
        filter=spec.filter, dimensions=spec.dimensions, bucketing=Bucketing(60, ((0, 0),)),
        measures=("calls", "total_tokens"), minute_floor_s=spec.minute_floor_s,
    )
    if by_minute.end_us <= by_minute.start_us:
        return peaks
    # The pieces never share a minute: the busiest minute of their union is the peak.
    per_minute = _one_statement(_parts(by_minute)).subquery()
    dims = [per_minute.c[d] for d in spec.dimensions]
    calls_col, tokens_col = list(per_minute.c)[-2:]
    query = select(*dims, func.max(calls_col), func.max(tokens_col)).group_by(*dims)
    with db.read() as conn:
        for row in conn.execute(query):
            if row[-2] is not None:
                peaks[tuple(row[:-2])] = (int(row[-2]), int(row[-1]))
    return peaks


def peak_from_us(db: Database, spec: Aggregate) -> int:
    """From when ``peak_per_minute`` looks at ``spec``'s minutes: the minute window, and for
    a view no minute rollup can answer (one by upstream model), the purge floor too."""
    assert spec.minute_floor_s is not None
    start = spec.minute_floor_s * US
    if _edge_minute_tier(replace(spec, bucketing=Bucketing(60, ((0, 0),)))) is None:
        with db.read() as conn:
            floor = conn.execute(select(ledger_state.c.value).where(
                ledger_state.c.name == PURGE_FLOOR)).scalar()
        start = max(start, int(floor or 0))
    return start


PERCENTILE_COLUMNS = ("latency_ms", "ttft_ms")


def percentiles(db: Database, spec: Aggregate, column: str,
                ranks: tuple[int, ...] = (50, 95)) -> dict[tuple[Any, ...], dict[int, int]]:
    """Nearest-rank percentiles (``ranks``, in percent) of a raw column per group of
    ``spec.dimensions``: the smallest value with at least k % of the group's calls at or
    below it. Exact, from the raw records of ``[start, end)`` (calls without a value are left
    out); groups without any value are absent.
    """
    if column not in PERCENTILE_COLUMNS:
        raise ValueError(column)
    value = calls.c[column]
    dims = [raw_dimension(d) for d in spec.dimensions]
    partition = [raw_dimension_value(d) for d in spec.dimensions]
    ranked = select(
        *dims, value.label("v"),
        func.row_number().over(partition_by=partition or None, order_by=value).label("rn"),
        func.count().over(partition_by=partition or None).label("n"),
    ).where(calls.c.ts >= spec.start_us, calls.c.ts < spec.end_us, value.is_not(None),
            *filter_conditions(calls, spec.filter)).subquery()
    # ceil(k * n / 100) in integers, on both databases
    wanted = [ranked.c.rn == (ranked.c.n * k + 99) // 100 for k in ranks]
    query = select(*(ranked.c[d] for d in spec.dimensions), ranked.c.rn, ranked.c.n,
                   ranked.c.v).where(or_(*wanted))
    found: dict[tuple[Any, ...], dict[int, int]] = {}
    with db.read() as conn:
        for row in conn.execute(query):
            group = tuple(row[:len(spec.dimensions)])
            rn, n, v = row[-3:]
            for k in ranks:
                if rn == (n * k + 99) // 100:
                    found.setdefault(group, {})[k] = int(v)
    return found


def record_from_row(row: Any) -> CallRecord:
    """A row of ``calls`` as the record it stores."""
    return CallRecord(
        id=row.id, ts_us=row.ts, api_key_id=row.api_key_id, model=row.model,
        model_category=row.model_category, call_type=row.call_type,
        endpoint=row.endpoint, status_code=row.status_code,
        input_tokens=row.input_tokens, output_tokens=row.output_tokens,
        cached_input_tokens=row.cached_input_tokens,
        reasoning_tokens=row.reasoning_tokens, total_tokens=row.total_tokens,
        cost_nano=row.cost_nano, latency_ms=row.latency_ms, ttft_ms=row.ttft_ms,
        estimated=bool(row.estimated),
        metadata=None if row.metadata is None else json.loads(row.metadata),
        cache_write_tokens=row.cache_write_tokens, units=row.units, unit=row.unit,
        upstream_model=row.upstream_model, repeats=row.repeats,
    )


def iter_calls(db: Database, f: CallFilter, start_us: int, end_us: int, *,
               before: tuple[int, str] | None = None, limit: int | None = None,
               batch_size: int = 5000) -> Iterator[CallRecord]:
    """Raw records, newest first, from ``before`` (exclusive) on; streamed in batches."""

    cursor = before
    remaining = limit
    while remaining is None or remaining > 0:
        size = batch_size if remaining is None else min(batch_size, remaining)
        conditions = [calls.c.ts >= start_us, calls.c.ts < end_us,
                      *filter_conditions(calls, f)]
        if cursor is not None:
            conditions.append(tuple_(calls.c.ts, calls.c.id) < tuple_(*cursor))
        query = (select(calls).where(*conditions)
                 .order_by(calls.c.ts.desc(), calls.c.id.desc()).limit(size))
        with db.read() as conn:
            rows = conn.execute(query).all()
        yield from (record_from_row(row) for row in rows)
        if len(rows) < size:
            return
        cursor = (rows[-1].ts, rows[-1].id)
        if remaining is not None:
            remaining -= len(rows)
