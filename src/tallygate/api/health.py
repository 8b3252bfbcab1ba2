"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", summary="The database answers and the recorder keeps up")
def readyz(request: Request) -> Any:
    try:
        with request.app.state.db.read() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any database failure means "not ready"
        return JSONResponse({"status": "unavailable", "database": exc.__class__.__name__},
                            status_code=503)
    recorder = request.app.state.recorder
    return {"status": "ok", "recorder_queue": recorder.queue_depth}
