"""A key's ``allowed_ips`` holds everywhere the key is accepted: the gateway, ``/api/v1`` and
the pages' sign-in and sessions; an IPv4 client seen over IPv6 is still that IPv4 client.
And the sign-in form itself is protected from cross-site posts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from fastapi.testclient import TestClient

from tallygate.app import create_app
from tallygate.config import load_settings
from tallygate.keys.access import ip_allowed
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.store.database import Database
from tallygate.web.pages import LOGIN_COOKIE
from tallygate.web.sessions import COOKIE, SignInBrake
from tests.conftest import RECENT
from tests.security.support import ADMIN, bearer, post_login

INSIDE = "10.1.2.3"
MAPPED_INSIDE = "::ffff:10.1.2.3"
OUTSIDE = "127.0.0.1"


@pytest.mark.parametrize(("allowed", "client", "expected"), [
    (None, OUTSIDE, True),
    (None, None, True),
    ([], OUTSIDE, False),  # as an empty allowed_models: nothing
    (["10.0.0.0/8"], INSIDE, True),
    (["10.0.0.0/8"], MAPPED_INSIDE, True),
    (["10.0.0.0/8"], OUTSIDE, False),
    (["10.0.0.0/8"], "::ffff:127.0.0.1", False),
    (["::ffff:10.0.0.0/104"], INSIDE, True),
    (["::ffff:10.0.0.0/104"], MAPPED_INSIDE, True),
    (["2001:db8::/32"], "2001:db8::1", True),
    (["2001:db8::/32"], INSIDE, False),
    (["10.0.0.0/8"], None, False),
    (["10.0.0.0/8"], "testclient", False),
    (["fe80::/10"], "fe80::1%eth0", True),
])
def test_the_address_rule(allowed: list[str] | None, client: str | None,
                          expected: bool) -> None:
    assert ip_allowed(allowed, client) is expected


@contextmanager
def client_from(db: Database, address: str) -> Iterator[TestClient]:
    app = create_app(load_settings(database_url=db.url, admin_token=ADMIN))
    with TestClient(app, follow_redirects=False, client=(address, 50123)) as client:
        yield client


def _key(db: Database, allowed_ips: list[str] | None) -> str:
    return KeyService(db).create(KeyCreate(name="office-only", allowed_ips=allowed_ips),
                                 "test").key


@pytest.mark.parametrize("address", [OUTSIDE, "::1", "::ffff:127.0.0.1"])
def test_a_key_from_a_refused_address_is_refused_everywhere(db: Database, address: str) -> None:
    secret = _key(db, ["10.0.0.0/8"])
    with client_from(db, address) as client:
        models = client.get("/v1/models", headers=bearer(secret))
        assert models.status_code == 403
        assert models.json()["error"]["code"] == "ip_not_allowed"
        calls = client.get("/api/v1/usage/calls", params={"period": RECENT},
                           headers=bearer(secret))
        assert calls.status_code == 403 and calls.json()["error"]["code"] == "ip_not_allowed"
        summary = client.get("/api/v1/usage/summary", headers=bearer(secret))
        assert summary.status_code == 403
        signed = post_login(client, secret)
        assert signed.status_code == 401 and not client.cookies.get(COOKIE)


@pytest.mark.parametrize("address", [INSIDE, MAPPED_INSIDE])
def test_a_key_from_its_network_is_served(db: Database, address: str) -> None:
    secret = _key(db, ["10.0.0.0/8"])
    with client_from(db, address) as client:
        assert client.get("/v1/models", headers=bearer(secret)).status_code == 200
        assert client.get("/api/v1/usage/calls", params={"period": RECENT},
                          headers=bearer(secret)).status_code == 200
        assert post_login(client, secret).status_code == 303
        assert client.get("/").status_code == 200


def test_a_session_carried_to_another_address_opens_nothing(db: Database) -> None:
    secret = _key(db, ["10.0.0.0/8"])
    with client_from(db, INSIDE) as inside:
        assert post_login(inside, secret).status_code == 303
        cookie = inside.cookies.get(COOKIE)
    assert cookie
    with client_from(db, OUTSIDE) as outside:
        outside.cookies.set(COOKIE, cookie)
        assert outside.get("/").status_code == 303  # to the sign-in form
        answer = outside.get("/api/v1/usage/summary")
        assert answer.status_code == 403 and answer.json()["error"]["code"] == "ip_not_allowed"
    with client_from(db, INSIDE) as back:  # where it is allowed, the session still works
        back.cookies.set(COOKIE, cookie)
        assert back.get("/").status_code == 200


def test_an_empty_list_allows_no_address_as_an_empty_model_list_allows_no_model(
        db: Database) -> None:
    nowhere = _key(db, [])
    no_model = KeyService(db).create(KeyCreate(name="no-models", allowed_models=[]), "t").key
    with client_from(db, INSIDE) as client:
        assert client.get("/v1/models", headers=bearer(nowhere)).status_code == 403
        assert client.get("/api/v1/usage/summary", headers=bearer(nowhere)).status_code == 403
        listed = client.get("/v1/models", headers=bearer(no_model))
        assert listed.status_code == 200 and listed.json()["data"] == []


def test_the_admin_is_not_limited_by_any_key(db: Database) -> None:
    _key(db, ["10.0.0.0/8"])
    with client_from(db, OUTSIDE) as client:
        assert client.get("/api/v1/keys", headers=bearer(ADMIN)).status_code == 200


def test_a_sign_in_posted_without_the_forms_token_is_refused(db: Database) -> None:
    with client_from(db, OUTSIDE) as client:
        # Another site's form: no token of ours, and (SameSite=Strict) no cookie of ours.
        forged = client.post("/login", data={"token": ADMIN, "next": "/"})
        assert forged.status_code == 403 and not client.cookies.get(COOKIE)
        assert "expired" in forged.text
        client.get("/login")  # a real form's cookie, but a token the attacker made up
        guessed = client.post("/login", data={"token": ADMIN, "csrf_token": "made-up"})
        assert guessed.status_code == 403 and not client.cookies.get(COOKIE)
        client.cookies.delete(LOGIN_COOKIE, path="/login")
        token_only = client.post("/login", data={"token": ADMIN, "csrf_token": "x" * 43})
        assert token_only.status_code == 403
        assert post_login(client, ADMIN).status_code == 303 and client.cookies.get(COOKIE)


def test_the_sign_in_form_sets_a_strict_cookie(db: Database) -> None:
    with client_from(db, OUTSIDE) as client:
        form = client.get("/login")
        cookie = form.headers["set-cookie"]
        assert cookie.startswith(f"{LOGIN_COOKIE}=") and "samesite=strict" in cookie.lower()
        assert "httponly" in cookie.lower() and "path=/login" in cookie.lower()


def test_the_sign_in_brake_stays_bounded_under_a_spread_flood() -> None:
    brake = SignInBrake(limit=3, window_s=60, max_addresses=100)
    for n in range(5_000):
        brake.failed(f"10.{n // 65536}.{n // 256 % 256}.{n % 256}")
    assert len(brake) <= 100
    for _ in range(50):
        brake.failed("198.51.100.7")
    assert brake.retry_after("198.51.100.7") is not None
    assert len(brake._failures["198.51.100.7"]) == 3  # a bounded record per address
    assert brake.retry_after("203.0.113.9") is None and len(brake) <= 100
