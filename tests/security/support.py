"""An app in this process on a seeded ledger, and signing in to its pages."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from tallygate.app import create_app
from tallygate.config import load_settings
from tallygate.domain.records import CallRecord
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tallygate.web.sessions import COOKIE

ADMIN = "tga-security-admin-4f1c9e7d2b"
US = 1_000_000


@dataclass
class Seeded:
    """Two keys with calls of their own: alpha's caller must never see bravo."""

    alpha_id: str
    alpha: str
    bravo_id: str
    bravo: str


BRAVO_NAME = "bravo-team-only"
BRAVO_MODEL = "model-bravo-only"


def seed(db: Database) -> Seeded:
    keys = KeyService(db)
    alpha = keys.create(KeyCreate(name="alpha-team"), "test")
    bravo = keys.create(KeyCreate(name=BRAVO_NAME, internal=True), "test")
    now = datetime.now(UTC)
    records = []
    for i in range(60):
        mine = i % 2 == 0
        ts = now - timedelta(hours=i, minutes=3)
        records.append(CallRecord(
            id=f"seed-{i}", ts_us=int(ts.timestamp() * US),
            model="model-alpha" if mine else BRAVO_MODEL,
            call_type="model" if mine else "internal",
            api_key_id=alpha.id if mine else bravo.id, model_category="chat",
            endpoint="/v1/chat/completions", status_code=200 if i % 5 else 429,
            input_tokens=100 + i, output_tokens=10 + i, total_tokens=110 + 2 * i,
            cost_nano=1_000 * i, latency_ms=50 + i,
            metadata={"team": "alpha" if mine else BRAVO_NAME}))
    Ledger(db).store(records)
    return Seeded(alpha.id, alpha.key, bravo.id, bravo.key)


@contextmanager
def app_client(db: Database, **settings: Any) -> Iterator[TestClient]:
    app = create_app(load_settings(**{"database_url": db.url, "admin_token": ADMIN} | settings))
    with TestClient(app, follow_redirects=False) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def post_login(client: Any, token: str, next: str = "/") -> Any:
    """Post the sign-in form as a browser does: with the form's CSRF token, from the form
    just fetched (and its cookie). ``client`` is a TestClient or an httpx.Client."""
    form = client.get("/login")
    found = re.search(r'name="csrf_token" value="([^"]+)"', form.text)
    assert found, form.text
    return client.post("/login", data={"token": token, "next": next,
                                       "csrf_token": found.group(1)})


def sign_in(client: TestClient, token: str) -> str:
    """Sign the client in to the pages; returns the session's CSRF token."""
    answer = post_login(client, token)
    assert answer.status_code == 303, answer.text
    assert client.cookies.get(COOKIE)
    page = client.get("/")
    assert page.status_code == 200
    found = re.search(r'<meta name="csrf-token" content="([^"]+)"', page.text)
    assert found
    return found.group(1)


def api_operations(client: TestClient) -> list[tuple[str, str]]:
    """Every (method, path) the app documents under /api/ and /metrics, from its own OpenAPI
    document: an endpoint added later is covered without anyone remembering to list it."""
    document = client.app.openapi()  # type: ignore[attr-defined]
    found = sorted((method.upper(), path) for path, operations in document["paths"].items()
                   if path.startswith("/api/") or path == "/metrics"
                   for method in operations)
    assert len(found) >= 15, found
    return found


BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/api/v1/keys"): {"name": "made by an intruder"},
    ("PATCH", "/api/v1/keys/{key_id}"): {"name": "renamed by an intruder"},
    ("POST", "/api/v1/pricing"): {"model": "m", "input_per_million": "1"},
    ("POST", "/api/v1/usage/events"): {"events": []},
}


def request_for(method: str, path: str, key_id: str) -> tuple[str, Any]:
    """The concrete path (parameters filled with a real key's id) and a body that would be
    accepted from the admin."""
    return re.sub(r"\{[^}]+\}", key_id, path), BODIES.get((method, path))
