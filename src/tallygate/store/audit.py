"""Reading the audit log (``store/meta.py`` writes it): filtered, newest first, a page at a
time from a ``(ts, id)`` cursor."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, select, tuple_

from tallygate.store.database import Database
from tallygate.store.schema import audit_log

# Key changes name the key in ``target``; other actions (price.set) name a model there.
KEY_ACTION_PREFIX = "key."


@dataclass(frozen=True, slots=True)
class AuditFilter:
    """Empty tuples and None mean "any"; ``[start_us, end_us)``."""

    actors: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    api_key_ids: tuple[str, ...] = ()
    start_us: int | None = None
    end_us: int | None = None


@dataclass(frozen=True, slots=True)
class StoredAuditEntry:
    id: int
    ts_us: int
    actor: str
    action: str
    target: str | None
    details: dict[str, Any] | None


def _conditions(f: AuditFilter) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if f.actors:
        conditions.append(audit_log.c.actor.in_(f.actors))
    if f.actions:
        conditions.append(audit_log.c.action.in_(f.actions))
    if f.api_key_ids:
        conditions.append(audit_log.c.target.in_(f.api_key_ids))
        conditions.append(audit_log.c.action.startswith(KEY_ACTION_PREFIX, autoescape=True))
    if f.start_us is not None:
        conditions.append(audit_log.c.ts >= f.start_us)
    if f.end_us is not None:
        conditions.append(audit_log.c.ts < f.end_us)
    return conditions


def audit_page(db: Database, f: AuditFilter, *, before: tuple[int, int] | None = None,
               limit: int = 100) -> list[StoredAuditEntry]:
    """At most ``limit`` entries, newest first, strictly older than ``before`` (``(ts, id)``
    of the last entry of the previous page). The id breaks ties between entries written in
    the same microsecond, so a page boundary never skips or repeats one."""
    conditions = _conditions(f)
    if before is not None:
        conditions.append(tuple_(audit_log.c.ts, audit_log.c.id) < tuple_(*before))
    query = (select(audit_log).where(*conditions)
             .order_by(audit_log.c.ts.desc(), audit_log.c.id.desc()).limit(limit))
    with db.read() as conn:
        rows = conn.execute(query).all()
    return [StoredAuditEntry(id=row.id, ts_us=row.ts, actor=row.actor, action=row.action,
                             target=row.target,
                             details=None if row.details is None else json.loads(row.details))
            for row in rows]
