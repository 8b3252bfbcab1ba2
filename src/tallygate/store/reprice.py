"""Repricing stored calls: new costs on raw records and the same change on their rollups.

A reprice walks its range in batches of at most ``batch_size`` raw records, in (ts, id)
order, and each batch is its own transaction:

- A batch is first read in a short read transaction. Only a batch where some cost changes
  opens a write transaction, which reads its records again, locked, prices them, writes the
  new costs and moves every rollup tier by the same deltas before it commits. The figures
  are consistent after every commit: an interrupted reprice leaves part of the range
  repriced and every tier equal to its raw records; running it again does the rest.
- No write transaction holds more than one batch, so other writers (the recorder, ingest,
  a purge) wait at most one batch's time, not the whole range's (docs/operations.md).
- The records are locked before their cost is read (``SELECT … FOR UPDATE`` on PostgreSQL;
  on SQLite the write transaction holds the database's write lock from its start). Two
  reprices at once, or a reprice and any other writer of a call's cost, therefore never both
  move the rollups away from the same old cost: the second waits for the first's row locks,
  and READ COMMITTED then gives it the cost the first wrote, so its delta is from that.
- Minute tiers are moved only from ``minute_cutoff_s`` on: older minute rows are past their
  retention (purged, or about to be, and read by nothing), and a year's reprice would
  otherwise spend millions of no-op UPDATEs on them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, Row, bindparam, select, tuple_, update

from tallygate.store.database import Database
from tallygate.store.export import call_conditions
from tallygate.store.schema import TIERS, calls
from tallygate.store.usage import CallFilter

US = 1_000_000
# Raw records per transaction: what bounds how long a reprice holds the write lock
# (measured by bench/reprice.py, documented in docs/operations.md).
BATCH = 1000

# What the new cost of one call is computed from (a raw row's columns, in this order).
PRICED_COLUMNS = ("id", "ts", "api_key_id", "model", "model_category", "call_type",
                  "status_code", "input_tokens", "cached_input_tokens", "output_tokens",
                  "cost_nano", "cache_write_tokens", "units", "upstream_model",
                  "repeats")
NewCost = Callable[[Any], int | None]  # a row → its new cost, or None to leave it alone
Deltas = dict[str, dict[tuple[Any, ...], int]]  # tier → rollup key → cost delta


@dataclass(slots=True)
class RepriceCounts:
    examined: int = 0
    changed: int = 0
    skipped: int = 0  # rows ``new_cost`` left alone (no price in force)
    before_nano: int = 0  # the examined calls' cost before
    after_nano: int = 0  # and after
    by_model: dict[str, list[int]] = field(default_factory=dict)  # model → [changed, before, after]
    transactions: int = 0  # write transactions committed


def reprice_calls(db: Database, start_us: int, end_us: int, call_filter: CallFilter,
                  new_cost: NewCost, *, write: bool, minute_cutoff_s: int | None = None,
                  batch_size: int = BATCH) -> RepriceCounts:
    """Give each raw call in ``[start_us, end_us)`` matching ``call_filter`` the cost
    ``new_cost`` says, and move every rollup tier's cost by the same amounts, one batch of
    at most ``batch_size`` records per transaction (or, without ``write``, only count what
    would change). Minute tiers are left alone below ``minute_cutoff_s`` (None: moved
    everywhere)."""
    counts = RepriceCounts()
    after: tuple[int, str] | None = None
    while True:
        with db.read() as conn:
            rows = _batch(conn, start_us, end_us, call_filter, after, limit=batch_size)
        if not rows:
            return counts
        last = (rows[-1].ts, rows[-1].id)
        if write and any(_changes(row, new_cost) for row in rows):
            with db.write() as conn:
                # Read again, locked: the costs may have moved since the read above.
                locked = _batch(conn, start_us, end_us, call_filter, after, upto=last,
                                lock=not db.is_sqlite)
                changed, deltas = _tally(locked, new_cost, counts)
                _write(conn, changed, deltas, minute_cutoff_s)
            counts.transactions += 1
        else:
            _tally(rows, new_cost, counts)
        if len(rows) < batch_size:
            return counts
        after = last


def _batch(conn: Connection, start_us: int, end_us: int, call_filter: CallFilter,
           after: tuple[int, str] | None, *, limit: int | None = None,
           upto: tuple[int, str] | None = None, lock: bool = False) -> Sequence[Row[Any]]:
    """The next records after ``after`` in (ts, id) order: ``limit`` of them, or all up to
    and including ``upto``; with ``lock``, locked for update, in that order (two reprices
    lock the same rows in the same order, so they queue rather than deadlock)."""
    conditions = [calls.c.ts >= start_us, calls.c.ts < end_us, *call_conditions(call_filter)]
    if after is not None:
        conditions.append(tuple_(calls.c.ts, calls.c.id) > tuple_(*after))
    if upto is not None:
        conditions.append(tuple_(calls.c.ts, calls.c.id) <= tuple_(*upto))
    query = (select(*(calls.c[name] for name in PRICED_COLUMNS)).where(*conditions)
             .order_by(calls.c.ts, calls.c.id))
    if limit is not None:
        query = query.limit(limit)
    if lock:
        query = query.with_for_update()
    return conn.execute(query).all()


def _changes(row: Row[Any], new_cost: NewCost) -> bool:
    cost = new_cost(row)
    return cost is not None and cost != row.cost_nano


def _tally(rows: Sequence[Row[Any]], new_cost: NewCost, counts: RepriceCounts
           ) -> tuple[list[dict[str, Any]], Deltas]:
    """Count ``rows`` into ``counts``; the new costs to write and the rollups' deltas."""
    changed = []
    deltas: Deltas = {tier.name: {} for tier in TIERS}
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
                  "model_category": row.model_category, "call_type": row.call_type,
                  "upstream_model": row.upstream_model or ""}
        for tier in TIERS:
            key = (row.ts // (tier.grain_s * US) * tier.grain_s,
                   *(values[d] for d in tier.dimensions))
            tier_deltas = deltas[tier.name]
            tier_deltas[key] = tier_deltas.get(key, 0) + delta
    return changed, deltas


def _write(conn: Connection, changed: list[dict[str, Any]], deltas: Deltas,
           minute_cutoff_s: int | None) -> None:
    if not changed:
        return
    conn.execute(update(calls).where(calls.c.id == bindparam("b_id"))
                 .values(cost_nano=bindparam("b_cost")), changed)
    for tier in TIERS:
        table = tier.table
        names = ("bucket", *tier.dimensions)
        # Sorted: every reprice updates rollup rows in the same order.
        changes = [{**{f"b_{n}": v for n, v in zip(names, key, strict=True)},
                    "b_delta": delta}
                   for key, delta in sorted(deltas[tier.name].items())
                   if delta and not (tier.windowed and minute_cutoff_s is not None
                                     and key[0] < minute_cutoff_s)]
        if changes:
            # A minute row already purged is simply not there to update.
            conn.execute(
                update(table).where(*(table.c[n] == bindparam(f"b_{n}") for n in names))
                .values(cost_nano=table.c.cost_nano + bindparam("b_delta")),
                changes)
