"""What anomaly detection reads besides the usage sums: when each key first used each model."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import func, select

from tallygate.store.database import Database
from tallygate.store.schema import calls, rollup_15m

US = 1_000_000


def first_use(db: Database, api_key_ids: Sequence[str] = ()) -> dict[tuple[str, str], int]:
    """(key, model) → the start (s) of the first 15-minute bucket the key called the model in.

    Read from the 15-minute rollups, which are kept for ever, so a pair's first use is known
    after its raw records are gone.
    """
    t = rollup_15m
    query = (select(t.c.api_key_id, t.c.model, func.min(t.c.bucket))
             .where(t.c.api_key_id != "").group_by(t.c.api_key_id, t.c.model))
    if api_key_ids:
        query = query.where(t.c.api_key_id.in_(api_key_ids))
    with db.read() as conn:
        return {(key, model): int(first) for key, model, first in conn.execute(query)}


def first_call_at(db: Database, api_key_id: str, model: str, start_us: int,
                  end_us: int) -> int | None:
    """The time (µs) of the key's first call of the model within ``[start_us, end_us)``, from
    the raw records (None when they are gone)."""
    query = select(func.min(calls.c.ts)).where(
        calls.c.api_key_id == api_key_id, calls.c.model == model, calls.c.ts >= start_us,
        calls.c.ts < end_us)
    with db.read() as conn:
        found = conn.execute(query).scalar()
    return None if found is None else int(found)
