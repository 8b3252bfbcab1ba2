"""No one let in: every admin endpoint and page refuses a missing, wrong or key-holder
credential, and a key holder never sees another key's usage through any parameter."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tallygate.keys.secrets import hash_secret
from tallygate.keys.service import KeyService
from tallygate.store.database import Database
from tallygate.store.schema import meta, sessions
from tallygate.web.sessions import COOKIE
from tests.security.support import (
    ADMIN,
    BRAVO_MODEL,
    BRAVO_NAME,
    Seeded,
    api_operations,
    app_client,
    bearer,
    post_login,
    request_for,
    seed,
    sign_in,
)

# What a key holder may call (its own usage only); every other operation is the admin's.
KEY_HOLDER_MAY = {
    ("GET", "/api/v1/usage/summary"), ("GET", "/api/v1/usage/trend"),
    ("GET", "/api/v1/usage/breakdown"), ("GET", "/api/v1/usage/calls"),
    ("GET", "/api/v1/usage/export"), ("GET", "/api/v1/usage/dimensions"),
    ("GET", "/api/v1/anomalies"), ("GET", "/api/v1/pricing"),
}
# Operations that need something configured first (a [[providers]] entry): the admin gets a
# 400 naming the missing parameter, never a refusal.
NEEDS_CONFIGURATION = {("GET", "/api/v1/reconciliation"): "provider"}
WRONG = [None, "", "Bearer", "Bearer ", f"Basic {ADMIN}", ADMIN, f"Bearer {ADMIN}x",
         f"Bearer {ADMIN[:-1]}", f"bearer  {ADMIN} extra", "Bearer tg-" + "a" * 40,
         "Bearer \u00e9\u00e9"]


@pytest.fixture
def running(db: Database) -> Iterator[tuple[TestClient, Seeded]]:
    seeded = seed(db)
    with app_client(db) as client:
        yield client, seeded


def test_every_api_operation_refuses_a_missing_or_wrong_credential(
        running: tuple[TestClient, Seeded]) -> None:
    client, seeded = running
    for method, template in api_operations(client):
        path, body = request_for(method, template, seeded.alpha_id)
        for header in WRONG:
            headers = {} if header is None else {"Authorization": header.encode()}
            answer = client.request(method, path, headers=headers, json=body)
            assert answer.status_code == 401, (method, path, header, answer.text)
            assert answer.json()["error"]["type"] == "authentication_error"
            assert ADMIN not in answer.text
    # Nothing was changed by any of it.
    keys = client.get("/api/v1/keys", headers=bearer(ADMIN)).json()["data"]
    assert sorted(k["name"] for k in keys) == ["alpha-team", BRAVO_NAME]


def test_a_key_holder_gets_only_the_usage_endpoints(running: tuple[TestClient, Seeded]
                                                    ) -> None:
    client, seeded = running
    operations = api_operations(client)
    assert set(operations) >= KEY_HOLDER_MAY
    for method, template in operations:
        path, body = request_for(method, template, seeded.alpha_id)
        answer = client.request(method, path, headers=bearer(seeded.alpha), json=body)
        if (method, template) in KEY_HOLDER_MAY:
            assert answer.status_code == 200, (method, path, answer.text)
        else:
            assert answer.status_code == 403, (method, path, answer.text)
            assert answer.json()["error"]["code"] == "admin_only"
    # The admin gets them all (so the refusals above were about the credential).
    for method, template in sorted(operations, key=lambda op: op[0] == "DELETE"):
        path, body = request_for(method, template, seeded.bravo_id)
        answer = client.request(method, path, headers=bearer(ADMIN), json=body)
        if (method, template) in NEEDS_CONFIGURATION:
            assert answer.status_code == 400, (method, path, answer.text)
            assert answer.json()["error"]["param"] == NEEDS_CONFIGURATION[(method, template)]
            continue
        assert answer.status_code < 300, (method, path, answer.text)


def test_the_pages_need_a_session_and_keys_needs_the_admin(
        running: tuple[TestClient, Seeded]) -> None:
    client, seeded = running
    for page in ("/", "/keys"):
        answer = client.get(page)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/login")
        client.cookies.set(COOKIE, "forged-session-token")
        assert client.get(page).headers["location"].startswith("/login")
        client.cookies.clear()
        # A bearer credential is not a page session.
        assert client.get(page, headers=bearer(ADMIN)).status_code == 303
    csrf = sign_in(client, seeded.alpha)
    assert client.get("/").status_code == 200
    assert client.get("/keys").headers["location"] == "/"
    # The key holder's session opens its own usage, not the admin's API...
    assert client.get("/api/v1/usage/summary").status_code == 200
    refused = client.post("/api/v1/keys", json={"name": "x"}, headers={"X-CSRF-Token": csrf})
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "admin_only"
    assert client.get("/api/v1/keys").status_code == 403
    # ...and ends with the key: disabled, its session no longer opens any data.
    KeyService(client.app.state.db).set_status(seeded.alpha_id, "disabled", "test")  # type: ignore[attr-defined]
    ended = client.get("/api/v1/usage/summary")
    assert ended.status_code == 401 and ended.json()["error"]["code"] == "session_expired"


def test_disabling_a_key_ends_its_page_sessions(running: tuple[TestClient, Seeded]) -> None:
    client, seeded = running
    sign_in(client, seeded.alpha)
    KeyService(client.app.state.db).set_status(seeded.alpha_id, "disabled", "test")  # type: ignore[attr-defined]
    assert client.get("/").status_code == 303


def test_admin_sessions_end_when_the_admin_token_changes(db: Database) -> None:
    seeded = seed(db)
    with app_client(db) as client:
        sign_in(client, ADMIN)
        admin_cookie = client.cookies.get(COOKIE)
        client.cookies.clear()
        sign_in(client, seeded.alpha)
        key_cookie = client.cookies.get(COOKIE)
    with app_client(db) as client:  # a restart with the same token keeps every session
        for cookie in (admin_cookie, key_cookie):
            client.cookies.set(COOKIE, cookie)
            assert client.get("/").status_code == 200
    with app_client(db, admin_token="tga-the-replacement-admin-token") as client:
        client.cookies.set(COOKIE, admin_cookie)
        assert client.get("/").status_code == 303
        assert client.get("/api/v1/keys").json()["error"]["code"] == "session_expired"
        client.cookies.set(COOKIE, key_cookie)  # the key holder's was never the admin's
        assert client.get("/").status_code == 200


def test_a_rolling_token_change_leaves_no_admin_session_of_the_old_token(db: Database) -> None:
    # Processes on the new token and on the old one run side by side, in either start
    # order: a sign-in with the old token, wherever it was made, never opens on the new one.
    seed(db)
    new_token = "tga-the-replacement-admin-token"
    with app_client(db, admin_token=new_token) as new, app_client(db) as old:
        sign_in(old, ADMIN)
        assert old.get("/").status_code == 200
        new.cookies.clear()
        new.cookies.set(COOKIE, old.cookies.get(COOKIE))
        assert new.get("/").status_code == 303
        assert new.get("/api/v1/keys").json()["error"]["code"] == "session_expired"
        new.cookies.clear()
        sign_in(new, new_token)
        assert new.get("/").status_code == 200
        taken = new.cookies.get(COOKIE)
        old.cookies.clear()
        old.cookies.set(COOKIE, taken)
        assert old.get("/").status_code == 303
    with db.read() as conn:  # nothing stored that would test guesses of the admin token
        bindings = [row.admin_binding for row in conn.execute(select(sessions))]
        assert conn.execute(select(meta.c.name).where(
            meta.c.name.like("%fingerprint%"))).first() is None
    assert len(bindings) == 2 and None not in bindings
    assert hash_secret(ADMIN) not in bindings and hash_secret(new_token) not in bindings


@pytest.mark.parametrize("typed", ["", " ", "\t", "tga-"])
def test_nothing_short_of_the_token_signs_in(running: tuple[TestClient, Seeded],
                                             typed: str) -> None:
    client, _ = running
    answer = post_login(client, typed)
    assert answer.status_code != 303 and not client.cookies.get(COOKIE)


def test_metrics_need_the_admin_unless_made_public(db: Database) -> None:
    seeded = seed(db)
    with app_client(db) as client:
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers=bearer(seeded.alpha)).status_code == 403
        assert client.get("/metrics", headers=bearer(ADMIN)).status_code == 200


def _texts(answer: Any, fmt: str | None) -> str:
    """Everything an answer says, as text (an XLSX file's sheets included)."""
    if fmt == "xlsx":
        with zipfile.ZipFile(io.BytesIO(answer.content)) as book:
            return "\n".join(book.read(name).decode() for name in book.namelist())
    if fmt == "parquet":
        return answer.content.decode("latin-1")
    return str(answer.text)


def _views(seeded: Seeded) -> Iterator[tuple[str, dict[str, Any], str | None]]:
    period = {"period": "7d"}
    yield "/api/v1/usage/summary", period, None
    yield "/api/v1/usage/dimensions", {}, None
    yield "/api/v1/anomalies", period, None
    yield "/api/v1/pricing", {}, None
    for group in ("model", "api_key", "call_type", "model_category"):
        yield "/api/v1/usage/trend", {**period, "group_by": group}, None
        yield "/api/v1/usage/breakdown", {**period, "group_by": group}, None
    yield "/api/v1/usage/breakdown", {**period, "group_by": ["api_key", "model"]}, None
    yield "/api/v1/usage/calls", {**period, "limit": 1000}, None
    yield "/api/v1/usage/calls", {**period, "model": BRAVO_MODEL}, None
    yield "/api/v1/usage/calls", {**period, "call_type": "internal"}, None
    for what in ("summary", "trend", "breakdown", "calls"):
        for fmt in ("csv", "json", "ndjson", "xlsx", "parquet"):
            params = {**period, "what": what, "format": fmt}
            if what == "breakdown":
                params["group_by"] = "api_key"
            yield "/api/v1/usage/export", params, fmt


def test_a_key_holder_never_sees_another_keys_usage(running: tuple[TestClient, Seeded]
                                                    ) -> None:
    client, seeded = running
    mine = bearer(seeded.alpha)
    for path, params, fmt in _views(seeded):
        for keys in ([], [seeded.alpha_id]):
            answer = client.get(path, params={**params, "api_key_id": keys}, headers=mine)
            if answer.status_code == 400 and fmt == "parquet":
                continue  # a format this build does not offer
            assert answer.status_code == 200, (path, params, answer.text)
            text = _texts(answer, fmt)
            for secret in (seeded.bravo_id, BRAVO_NAME, BRAVO_MODEL, seeded.bravo):
                assert secret not in text, (path, params, keys, secret)
        for keys in ([seeded.bravo_id], [seeded.alpha_id, seeded.bravo_id], ["", "%"]):
            answer = client.get(path, params={**params, "api_key_id": keys}, headers=mine)
            if path in ("/api/v1/usage/dimensions", "/api/v1/pricing"):
                assert seeded.bravo_id not in answer.text  # these take no api_key_id filter
                continue
            assert answer.status_code in (400, 403), (path, params, keys, answer.text)
    # The figures are its own: 30 calls of its own, in every view of them.
    summary = client.get("/api/v1/usage/summary", params={"period": "7d"}, headers=mine).json()
    assert summary["cards"]["model_calls"] == 30
    calls = client.get("/api/v1/usage/calls", params={"period": "7d", "limit": 1},
                       headers=mine).json()
    seen = 1
    while calls["has_more"]:  # the cursor cannot lead elsewhere either
        calls = client.get("/api/v1/usage/calls", headers=mine, params={
            "period": "7d", "limit": 7, "cursor": calls["next_cursor"]}).json()
        assert {c["api_key_id"] for c in calls["data"]} == {seeded.alpha_id}
        seen += len(calls["data"])
    assert seen == 30
