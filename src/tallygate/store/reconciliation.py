"""Stored reconciliation runs: the newest per provider is what the page shows."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, insert, select

from tallygate.domain.records import format_ts
from tallygate.store.database import Database
from tallygate.store.schema import reconciliation_runs as runs


def save_run(db: Database, run_id: str, provider: str, created_at_us: int, start_day: str,
             end_day: str, status: str, result: dict[str, Any] | None,
             error: str | None) -> None:
    with db.write() as conn:
        conn.execute(insert(runs).values(
            id=run_id, provider=provider, created_at=created_at_us, start_day=start_day,
            end_day=end_day, status=status,
            result=None if result is None else json.dumps(result, separators=(",", ":")),
            error=error))


def last_runs(db: Database, providers: list[str] | None = None) -> dict[str, dict[str, Any]]:
    """The newest run of each provider (of ``providers``, if given)."""
    newest = select(runs.c.provider, func.max(runs.c.created_at).label("at")).group_by(
        runs.c.provider)
    if providers is not None:
        newest = newest.where(runs.c.provider.in_(providers))
    sub = newest.subquery()
    query = select(runs).join(sub, (runs.c.provider == sub.c.provider)
                              & (runs.c.created_at == sub.c.at))
    with db.read() as conn:
        rows = conn.execute(query).mappings().all()
    return {row["provider"]: _run(row) for row in rows}


def latest_run_at(db: Database, provider: str) -> int | None:
    with db.read() as conn:
        value = conn.execute(select(func.max(runs.c.created_at)).where(
            runs.c.provider == provider)).scalar()
    return None if value is None else int(value)


def _run(row: Any) -> dict[str, Any]:
    return {"id": row["id"], "provider": row["provider"],
            "created_at": format_ts(int(row["created_at"])), "start": row["start_day"],
            "end": row["end_day"], "status": row["status"],
            "result": None if row["result"] is None else json.loads(row["result"]),
            "error": row["error"]}
