"""Which keys, models and categories the ledger has seen: for the pages' filter lists."""

from __future__ import annotations

from sqlalchemy import select

from tallygate.store.database import Database
from tallygate.store.schema import rollup_1d

DAY_S = 86400


def seen_dimensions(db: Database, since_s: int,
                    api_key_id: str | None = None) -> list[tuple[str, str, str]]:
    """Distinct ``(api_key_id, model, model_category)`` in the daily rollups of the days from
    ``since_s`` on (``""`` stands for calls without a key)."""
    t = rollup_1d
    query = select(t.c.api_key_id, t.c.model, t.c.model_category).where(
        t.c.bucket >= since_s // DAY_S * DAY_S).distinct()
    if api_key_id is not None:
        query = query.where(t.c.api_key_id == api_key_id)
    with db.read() as conn:
        return [(row[0], row[1], row[2]) for row in conn.execute(query)]
