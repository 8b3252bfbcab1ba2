"""Repricing stored calls: new costs on raw records and the same change on their rollups,
in one transaction."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, bindparam, select, tuple_, update

from tallygate.store.database import Database
from tallygate.store.export import call_conditions
from tallygate.store.schema import TIERS, calls
from tallygate.store.usage import CallFilter

US = 1_000_000
BATCH = 5000

# What the new cost of one call is computed from (a raw row's columns, in this order).
PRICED_COLUMNS = ("id", "ts", "api_key_id", "model", "model_category", "call_type",
                  "status_code", "input_tokens", "cached_input_tokens", "output_tokens",
                  "cost_nano")
NewCost = Callable[[Any], int | None]  # a row → its new cost, or None to leave it alone


@dataclass(slots=True)
class RepriceCounts:
    examined: int = 0
    changed: int = 0
    skipped: int = 0  # rows ``new_cost`` left alone (no price in force)
    before_nano: int = 0  # the examined calls' cost before
    after_nano: int = 0  # and after
    by_model: dict[str, list[int]] = field(default_factory=dict)  # model → [changed, before, after]


def reprice_calls(db: Database, start_us: int, end_us: int, call_filter: CallFilter,
                  new_cost: NewCost, *, write: bool) -> RepriceCounts:
    """Give each raw call in ``[start_us, end_us)`` matching ``call_filter`` the cost
    ``new_cost`` says, and move every rollup tier's cost by the same amounts, all in one
    transaction (or, without ``write``, only count what would change)."""
    counts = RepriceCounts()
    deltas: dict[str, dict[tuple[Any, ...], int]] = {tier.name: {} for tier in TIERS}
    if not write:
        with db.read() as conn:
            _walk(conn, start_us, end_us, call_filter, new_cost, counts, deltas, write=False)
        return counts
    with db.write() as conn:
        _walk(conn, start_us, end_us, call_filter, new_cost, counts, deltas, write=True)
        for tier in TIERS:
            table = tier.table
            names = ("bucket", *tier.dimensions)
            changes = [{**{f"b_{n}": v for n, v in zip(names, key, strict=True)},
                        "b_delta": delta}
                       for key, delta in sorted(deltas[tier.name].items()) if delta]
            if changes:
                # A minute row already past its retention is simply not there to update.
                conn.execute(
                    update(table).where(*(table.c[n] == bindparam(f"b_{n}") for n in names))
                    .values(cost_nano=table.c.cost_nano + bindparam("b_delta")),
                    changes)
    return counts


def _walk(conn: Connection, start_us: int, end_us: int, call_filter: CallFilter,
          new_cost: NewCost, counts: RepriceCounts,
          deltas: dict[str, dict[tuple[Any, ...], int]], *, write: bool) -> None:
    columns = [calls.c[name] for name in PRICED_COLUMNS]
    after: tuple[int, str] | None = None
    set_cost = (update(calls).where(calls.c.id == bindparam("b_id"))
                .values(cost_nano=bindparam("b_cost")))
    while True:
        conditions = [calls.c.ts >= start_us, calls.c.ts < end_us,
                      *call_conditions(call_filter)]
        if after is not None:
            conditions.append(tuple_(calls.c.ts, calls.c.id) > tuple_(*after))
        rows = conn.execute(select(*columns).where(*conditions)
                            .order_by(calls.c.ts, calls.c.id).limit(BATCH)).all()
        changed = []
        for row in rows:
            cost = new_cost(row)
            counts.examined += 1
            counts.before_nano += row.cost_nano
            if cost is None:
                counts.skipped += 1
                counts.after_nano += row.cost_nano
                continue
            counts.after_nano += cost
            delta = cost - row.cost_nano
            if not delta:
                continue
            counts.changed += 1
            per_model = counts.by_model.setdefault(row.model, [0, 0, 0])
            per_model[0] += 1
            per_model[1] += row.cost_nano
            per_model[2] += cost
            changed.append({"b_id": row.id, "b_cost": cost})
            values = {"api_key_id": row.api_key_id or "", "model": row.model,
                      "model_category": row.model_category, "call_type": row.call_type}
            for tier in TIERS:
                key = (row.ts // (tier.grain_s * US) * tier.grain_s,
                       *(values[d] for d in tier.dimensions))
                tier_deltas = deltas[tier.name]
                tier_deltas[key] = tier_deltas.get(key, 0) + delta
        if write and changed:
            conn.execute(set_cost, changed)
        if len(rows) < BATCH:
            return
        after = (rows[-1].ts, rows[-1].id)

