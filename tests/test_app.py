"""The application: what it answers itself, and what loads the admin application."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from tallygate.app import Tallygate, create_app
from tallygate.config import Route, load_settings
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.store.database import Database

ADMIN = "tg-admin-test-app"


@pytest.fixture
def running(tmp_path: Path) -> Iterator[tuple[Tallygate, TestClient, str]]:
    db = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
    db.upgrade()
    secret = KeyService(db).create(KeyCreate(name="app"), "test").key
    # The upstream is never reached by these tests: nothing listens on port 9.
    app = create_app(load_settings(database_url=db.url, admin_token=ADMIN, routes=[
        Route(model="m", base_url="http://127.0.0.1:9/v1")]))
    with TestClient(app) as client:
        yield app, client, secret
    db.dispose()


def test_relaying_and_the_probes_never_load_the_admin_application(
        running: tuple[Tallygate, TestClient, str]) -> None:
    app, client, secret = running
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok", "recorder_queue": 0}
    head = client.head("/readyz")
    assert head.status_code == 200 and head.content == b""
    models = client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert [m["id"] for m in models.json()["data"]] == ["m"]
    failed = client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                         json={"model": "m", "messages": []})
    assert failed.status_code == 502
    assert not app.admin_loaded
    summary = client.get("/api/v1/usage/summary", params={"period": "1d"},
                         headers={"Authorization": f"Bearer {ADMIN}"})
    assert summary.status_code == 200
    assert app.admin_loaded
    assert client.get("/healthz").json() == {"status": "ok"}


def test_an_unexpected_failure_of_an_endpoint_answers_500_in_openai_shape(
        running: tuple[Tallygate, TestClient, str], monkeypatch: pytest.MonkeyPatch) -> None:
    app, client, secret = running

    async def broken(*_: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setitem(app.handlers, ("GET", "/v1/models"), broken)
    answer = client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
    assert answer.status_code == 500
    assert answer.json()["error"]["code"] == "internal_error"
    assert "a bug" not in answer.text


def test_the_cli_and_the_application_load_no_web_framework() -> None:
    """What a relaying process imports at start: FastAPI, the templates and the
    PostgreSQL dialect load only when something asks for them (cold start, idle RSS)."""
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, tallygate.cli.main, tallygate.app; "
         "print(' '.join(sorted(m for m in ('fastapi', 'jinja2', 'tallygate.admin', "
         "'sqlalchemy.dialects.postgresql', 'httpx', 'alembic', 'psycopg') "
         "if m in sys.modules)))"],
        capture_output=True, text=True, check=True).stdout.split()
    assert loaded == []


def test_stopping_leaves_no_connection_open(db: Database) -> None:
    # The hourly purge starts with the application and runs on a thread: a stop must wait
    # for it, or the closed pool orphans its connection (a ResourceWarning, in some later
    # test, from the garbage collector). Quick starts and stops hit it most of the time.
    import gc
    import warnings

    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        for _ in range(15):
            app = create_app(load_settings(database_url=db.url, admin_token=ADMIN))
            with TestClient(app) as client:
                assert client.get("/healthz").status_code == 200
            gc.collect()
    assert not [w for w in seen if issubclass(w.category, ResourceWarning)]
