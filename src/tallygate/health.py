"""Liveness and readiness: what ``/healthz`` and ``/readyz`` answer (app.py serves them
without loading the API, so a probe never makes a relaying process load it)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import text

from tallygate.ledger.recorder import Recorder
from tallygate.store.database import Database

LIVE = {"status": "ok"}


def readiness(db: Database, recorder: Recorder) -> tuple[int, dict[str, Any]]:
    """200 when the database answers; the recorder's backlog says whether it keeps up."""
    try:
        with db.read() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any database failure means "not ready"
        return 503, {"status": "unavailable", "database": exc.__class__.__name__}
    return 200, {"status": "ok", "recorder_queue": recorder.queue_depth}
