"""Small named values the server keeps (the admin token's hash) and the audit log."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import select

from tallygate.domain.records import now_us
from tallygate.store.database import Database
from tallygate.store.schema import audit_log, meta


def get_value(db: Database, name: str) -> str | None:
    with db.read() as conn:
        return conn.execute(select(meta.c.value).where(meta.c.name == name)).scalar()


def set_value_if_absent(db: Database, name: str, value: str) -> bool:
    """True when this call stored the value; False when one was already there."""
    with db.write() as conn:
        if conn.execute(select(meta.c.name).where(meta.c.name == name)).first():
            return False
        conn.execute(meta.insert().values(name=name, value=value))
        return True


def write_audit(db: Database, actor: str, action: str, target: str | None,
                details: dict[str, Any] | None = None, *, at_us: int | None = None) -> None:
    with db.write() as conn:
        conn.execute(audit_log.insert().values(
            ts=now_us() if at_us is None else at_us, actor=actor, action=action, target=target,
            details=None if details is None else json.dumps(details, sort_keys=True)))


def list_audit(db: Database, limit: int = 100) -> list[dict[str, Any]]:
    with db.read() as conn:
        rows = conn.execute(select(audit_log).order_by(audit_log.c.id.desc()).limit(limit))
        return [
            {"id": row.id, "ts": row.ts, "actor": row.actor, "action": row.action,
             "target": row.target,
             "details": None if row.details is None else json.loads(row.details)}
            for row in rows
        ]
