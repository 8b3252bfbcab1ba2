"""Which keys, models and categories the ledger has seen: for the pages' filter lists."""

from __future__ import annotations

from sqlalchemy import select

from tallygate.store.database import Database
from tallygate.store.schema import rollup_15m


def seen_dimensions(db: Database, since_s: int,
                    api_key_id: str | None = None) -> list[tuple[str, str, str]]:
    """Distinct ``(api_key_id, model, model_category)`` in rollups from ``since_s`` on
    (``""`` stands for calls without a key)."""
    query = select(rollup_15m.c.api_key_id, rollup_15m.c.model,
                   rollup_15m.c.model_category).where(rollup_15m.c.bucket >= since_s).distinct()
    if api_key_id is not None:
        query = query.where(rollup_15m.c.api_key_id == api_key_id)
    with db.read() as conn:
        return [(row[0], row[1], row[2]) for row in conn.execute(query)]
