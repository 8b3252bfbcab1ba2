"""Liveness and readiness need no credential and tell the truth about the database."""

from __future__ import annotations

from tests.api.support import Api


def test_health_and_readiness(shared_api: Api) -> None:
    assert shared_api.get("/healthz", token=None).json() == {"status": "ok"}
    ready = shared_api.get("/readyz", token=None)
    assert ready.status_code == 200
    assert ready.json() == {"status": "ok", "recorder_queue": 0}
