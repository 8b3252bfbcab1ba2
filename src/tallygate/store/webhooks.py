"""The delivery log of anomaly webhooks: one row per anomaly, claimed by one process."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select, update

from tallygate.domain.records import format_ts
from tallygate.store.database import Database
from tallygate.store.schema import webhook_deliveries as deliveries


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    created_at: int
    event: str
    payload: str
    status: str  # pending, delivered, failed
    attempts: int
    next_attempt_at: int | None
    last_attempt_at: int | None
    response_status: int | None
    last_error: str | None
    delivered_at: int | None


def add_delivery(db: Database, delivery_id: str, event: str, payload: str, now_us: int) -> bool:
    """Log a new delivery, due now; False when it was logged before (by any process)."""
    # Each dialect's module loads only where it is used (PostgreSQL's is 2 MB of modules).
    if db.is_sqlite:
        from sqlalchemy.dialects import sqlite as dialect
    else:
        from sqlalchemy.dialects import postgresql as dialect  # type: ignore[no-redef]
    statement = dialect.insert(deliveries).values(
        id=delivery_id, created_at=now_us, event=event, payload=payload, status="pending",
        attempts=0, next_attempt_at=now_us).on_conflict_do_nothing(
        index_elements=["id"]).returning(deliveries.c.id)
    with db.write() as conn:
        # RETURNING, not rowcount: psycopg reports -1 for a statement like this one.
        return conn.execute(statement).first() is not None


def claim_due(db: Database, now_us: int, lease_us: int, limit: int = 50) -> list[Delivery]:
    """Pending deliveries that are due, each leased to this process for ``lease_us`` (another
    process skips it meanwhile)."""
    with db.read() as conn:
        due = conn.execute(select(deliveries.c.id, deliveries.c.next_attempt_at).where(
            deliveries.c.status == "pending", deliveries.c.next_attempt_at <= now_us)
            .order_by(deliveries.c.next_attempt_at).limit(limit)).all()
    claimed = []
    for delivery_id, due_at in due:
        with db.write() as conn:
            taken = conn.execute(update(deliveries).where(
                deliveries.c.id == delivery_id, deliveries.c.status == "pending",
                deliveries.c.next_attempt_at == due_at).values(
                next_attempt_at=now_us + lease_us).returning(deliveries.c.id)).first()
        if taken:
            found = get_delivery(db, delivery_id)
            if found is not None:
                claimed.append(found)
    return claimed


def record_attempt(db: Database, delivery_id: str, *, now_us: int, status: str,
                   response_status: int | None, error: str | None,
                   next_attempt_at: int | None) -> None:
    values = {"status": status, "attempts": deliveries.c.attempts + 1,
              "last_attempt_at": now_us, "response_status": response_status,
              "last_error": error, "next_attempt_at": next_attempt_at}
    if status == "delivered":
        values["delivered_at"] = now_us
    with db.write() as conn:
        conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(**values))


def get_delivery(db: Database, delivery_id: str) -> Delivery | None:
    with db.read() as conn:
        row = conn.execute(select(deliveries).where(deliveries.c.id == delivery_id)).first()
    return None if row is None else Delivery(**row._mapping)


def list_deliveries(db: Database, limit: int = 100) -> list[Delivery]:
    """The newest deliveries first."""
    with db.read() as conn:
        rows = conn.execute(select(deliveries).order_by(deliveries.c.created_at.desc(),
                                                        deliveries.c.id).limit(limit)).all()
    return [Delivery(**row._mapping) for row in rows]


def describe(delivery: Delivery) -> dict[str, Any]:
    """A delivery as the API shows it."""

    def at(value: int | None) -> str | None:
        return None if value is None else format_ts(value)

    return {"id": delivery.id, "event": delivery.event, "status": delivery.status,
            "attempts": delivery.attempts, "created_at": at(delivery.created_at),
            "last_attempt_at": at(delivery.last_attempt_at),
            "next_attempt_at": at(delivery.next_attempt_at) if delivery.status == "pending"
            else None,
            "response_status": delivery.response_status, "last_error": delivery.last_error,
            "delivered_at": at(delivery.delivered_at), "payload": json.loads(delivery.payload)}
