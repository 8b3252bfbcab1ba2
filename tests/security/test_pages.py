"""The pages: security headers, CSRF on everything a cookie can change, a brake on failed
sign-ins, and nothing a crafted link can inject or redirect."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from tallygate.store.database import Database
from tests.security.support import (
    ADMIN,
    Seeded,
    app_client,
    bearer,
    post_login,
    seed,
    sign_in,
)


@pytest.fixture
def running(sqlite_db: Database) -> Iterator[tuple[TestClient, Seeded]]:
    seeded = seed(sqlite_db)
    with app_client(sqlite_db) as client:
        yield client, seeded


def assert_secure_headers(path: str, headers: dict[str, str]) -> None:
    csp = headers.get("content-security-policy", "")
    directives = dict((d.strip().split(" ", 1) + [""])[:2] for d in csp.split(";") if d.strip())
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp, (path, csp)
    assert directives.get("frame-ancestors") == "'none'", (path, csp)
    assert "script-src" in directives or "default-src" in directives, (path, csp)
    assert headers.get("x-content-type-options") == "nosniff", path


def test_every_page_and_answer_carries_the_security_headers(
        running: tuple[TestClient, Seeded]) -> None:
    client, seeded = running
    for path in ("/login", "/docs", "/healthz", "/openapi.json", "/no-such-page",
                 "/static/app.css"):
        assert_secure_headers(path, dict(client.get(path).headers))
    assert_secure_headers("/api", dict(client.get("/api/v1/keys", headers=bearer(ADMIN)).headers))
    assert_secure_headers("/api 401", dict(client.get("/api/v1/keys").headers))
    sign_in(client, ADMIN)
    for path in ("/", "/keys"):
        page = client.get(path)
        assert page.status_code == 200
        assert_secure_headers(path, dict(page.headers))
        # Nothing inline that the policy would block: scripts and styles are files.
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text), path
        assert not re.search(r"<style|\sstyle=\"|\son[a-z]+=", page.text), path


def test_state_changes_through_a_session_need_its_csrf_token(
        running: tuple[TestClient, Seeded]) -> None:
    client, seeded = running
    csrf = sign_in(client, ADMIN)
    changes = [("POST", "/api/v1/keys", {"name": "csrf"}),
               ("PATCH", f"/api/v1/keys/{seeded.alpha_id}", {"name": "renamed"}),
               ("POST", f"/api/v1/keys/{seeded.alpha_id}/rotate", None),
               ("POST", "/api/v1/pricing", {"model": "m", "input_per_million": "1"}),
               ("POST", "/api/v1/usage/events", {"events": []}),
               ("DELETE", f"/api/v1/keys/{seeded.bravo_id}", None)]
    for method, path, body in changes:
        for token in (None, "", "wrong", csrf[:-1], csrf + "x"):
            headers = {} if token is None else {"X-CSRF-Token": token}
            answer = client.request(method, path, json=body, headers=headers)
            assert answer.status_code == 403, (method, path, token, answer.text)
            assert answer.json()["error"]["code"] == "csrf_failed"
    assert [k["name"] for k in client.get("/api/v1/keys").json()["data"]] == [
        "alpha-team", "bravo-team-only"]  # a read needs no token; nothing changed
    for method, path, body in changes:
        answer = client.request(method, path, json=body, headers={"X-CSRF-Token": csrf})
        assert answer.status_code < 300, (method, path, answer.text)


def test_sign_out_needs_the_csrf_token(running: tuple[TestClient, Seeded]) -> None:
    client, _ = running
    csrf = sign_in(client, ADMIN)
    cookie = dict(client.cookies)
    client.post("/logout", data={})  # a forged form: the session must survive it
    client.cookies.update(cookie)
    assert client.get("/").status_code == 200
    client.post("/logout", data={"csrf_token": "wrong"})
    client.cookies.update(cookie)
    assert client.get("/").status_code == 200
    client.post("/logout", data={"csrf_token": csrf})
    client.cookies.update(cookie)  # even replayed, the ended session opens nothing
    assert client.get("/").status_code == 303


def test_failed_sign_ins_are_braked(running: tuple[TestClient, Seeded]) -> None:
    client, _ = running
    answers = [post_login(client, f"guess-{n}").status_code
               for n in range(12)]
    assert answers[:10] == [401] * 10 and answers[10:] == [429, 429]
    braked = post_login(client, ADMIN)  # even the right token waits
    assert braked.status_code == 429 and int(braked.headers["retry-after"]) >= 1
    assert "tallygate_session" not in client.cookies


def test_a_crafted_link_neither_injects_nor_redirects_away(
        running: tuple[TestClient, Seeded]) -> None:
    client, _ = running
    page = client.get("/login", params={"next": '"><script>alert(1)</script>'})
    assert "<script>alert(1)" not in page.text
    for target in ("https://evil.example/", "//evil.example/", "/\\evil.example/",
                   "\\\\evil.example", "javascript:alert(1)", " //evil.example"):
        client.cookies.clear()
        answer = post_login(client, ADMIN, next=target)
        assert answer.status_code == 303
        location = answer.headers["location"]
        assert location.startswith("/") and not location.startswith(("//", "/\\")), \
            (target, location)
