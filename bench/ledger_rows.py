"""What a ledger benchmark's database holds: rows per table, the rows one dashboard refresh
reads from each (as ``store.usage.split_range`` cuts its ranges), the busiest key, and the
shape of the stored records (bench/ledger.py)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import case, func, select

from tallygate.ledger.service import Ledger
from tallygate.ledger.timerange import bucketing_for, resolve_range
from tallygate.store.database import Database
from tallygate.store.schema import TIERS, calls, rollup_15m
from tallygate.store.usage import Aggregate, Bucketing, split_range

US = 1_000_000


def table_rows(db: Database, now: datetime) -> dict[str, Any]:
    """How much each table holds, and how many rows one refresh of the all-keys
    Asia/Shanghai dashboard reads from each (cards of both periods, the per-day trend, the
    peak), as ``store.usage.split_range`` cuts its ranges."""
    r = resolve_range("30d", None, None, "Asia/Shanghai", now=now)
    ledger = Ledger(db)
    floor = ledger.minute_floor_s()
    recent = ledger.recent_minutes_floor_s()  # as usage_summary and usage_trend set it

    def count(table: Any, *conditions: Any) -> int:
        with db.read() as conn:
            return int(conn.execute(select(func.count()).select_from(table)
                                    .where(*conditions)).scalar_one())

    read: dict[str, int] = {}
    specs = [Aggregate(r.start_us, r.end_us, recent_minutes_from_s=recent),
             Aggregate(r.previous_start_us, r.previous_end_us, recent_minutes_from_s=recent),
             Aggregate(r.start_us, r.end_us, dimensions=("model",),
                       bucketing=bucketing_for("day", r), minute_floor_s=floor,
                       recent_minutes_from_s=recent),
             Aggregate(max(r.start_us, floor * US), r.end_us,
                       bucketing=Bucketing(60, ((0, 0),)), minute_floor_s=floor)]
    for spec in specs:
        pieces, edges = split_range(spec)
        for tier, lo, hi in pieces:
            bucket = tier.table.c.bucket
            read[tier.name] = read.get(tier.name, 0) + count(tier.table, bucket >= lo,
                                                             bucket < hi)
        for lo, hi in edges:
            read["calls"] = read.get("calls", 0) + count(calls, calls.c.ts >= lo,
                                                         calls.c.ts < hi)
    return {"stored": {table.name: count(table) for table in (calls, *(t.table for t in TIERS))},
            "read_per_refresh": read}


def busiest_key(db: Database) -> str:
    calls_sum = func.sum(rollup_15m.c.calls)
    with db.read() as conn:
        return str(conn.execute(select(rollup_15m.c.api_key_id).group_by(rollup_15m.c.api_key_id)
                                .order_by(calls_sum.desc()).limit(1)).scalar_one())


def data_shape(db: Database) -> dict[str, Any]:
    """Measured from a stored stream: what the records look like."""
    status = calls.c.status_code
    with db.read() as conn:
        row = conn.execute(select(
            func.count(),
            func.sum(case((status >= 400, 1), else_=0)),
            func.sum(case((status == 429, 1), else_=0)),
            func.count(calls.c.ttft_ms),
            func.sum(case((calls.c.cached_input_tokens > 0, 1), else_=0)),
            func.sum(case((calls.c.reasoning_tokens > 0, 1), else_=0)),
            func.count(calls.c.metadata),
            func.avg(calls.c.input_tokens), func.avg(calls.c.output_tokens),
        )).one()
        pairs = conn.execute(select(func.count()).select_from(
            select(calls.c.api_key_id, calls.c.model, calls.c.call_type).distinct()
            .subquery())).scalar_one()
        types: dict[str, int] = dict(conn.execute(select(calls.c.call_type, func.count())
                                  .group_by(calls.c.call_type)).all())
    total = int(row[0])

    def share(value: Any) -> float:
        return round(100 * int(value or 0) / total, 2)

    return {
        "records": total,
        "key_model_type_combinations": pairs,
        "errors_pct": share(row[1]),
        "rate_limited_pct": share(row[2]),
        "streamed_pct": share(row[3]),
        "cached_input_pct": share(row[4]),
        "reasoning_pct": share(row[5]),
        "with_metadata_pct": share(row[6]),
        "mean_input_tokens": round(float(row[7])),
        "mean_output_tokens": round(float(row[8])),
        "call_types_pct": {name: share(count) for name, count in sorted(types.items())},
    }
