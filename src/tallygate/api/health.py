"""Liveness and readiness in the API's document. app.py answers both probes (GET and HEAD)
before a request reaches the API, with the same functions; these routes are what the
OpenAPI document shows of them."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from tallygate.health import LIVE, readiness

router = APIRouter(tags=["health"])


@router.get("/healthz", summary="The process is up")
def healthz() -> dict[str, str]:
    return LIVE


@router.get("/readyz", summary="The database answers and the recorder keeps up")
def readyz(request: Request) -> Any:
    status, body = readiness(request.app.state.db, request.app.state.recorder)
    return JSONResponse(body, status_code=status)
