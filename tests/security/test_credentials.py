"""Credentials are compared as hashes: the admin token with ``hmac.compare_digest`` on SHA-256
digests, API keys by looking up the digest (an index on a hash: the timing of a look-up says
nothing about any secret, since an attacker cannot choose what a guess hashes to)."""

from __future__ import annotations

import hashlib
import hmac
import re

import httpx
import pytest

from tallygate.config import Route
from tallygate.store import keys as key_store
from tallygate.store.database import Database
from tests.reliability.support import CHAT, gateway_in_process
from tests.security.support import ADMIN, app_client, bearer, seed, sign_in

HEX_DIGEST = re.compile(rb"^[0-9a-f]{64}$")


def test_the_admin_token_is_compared_as_a_digest_in_constant_time(
        sqlite_db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    compared: list[tuple[bytes, bytes]] = []
    real = hmac.compare_digest

    def spy(a: bytes, b: bytes) -> bool:
        compared.append((a, b))
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    seed(sqlite_db)
    with app_client(sqlite_db) as client:
        assert client.get("/api/v1/keys", headers=bearer(ADMIN)).status_code == 200
        assert client.get("/api/v1/keys", headers=bearer(ADMIN + "x")).status_code == 401
        sign_in(client, ADMIN)
    assert len(compared) >= 3
    admin_digest = hashlib.sha256(ADMIN.encode()).hexdigest().encode()
    for a, b in compared:
        if HEX_DIGEST.match(a):  # credentials: both sides digests, never the token
            assert HEX_DIGEST.match(b) and ADMIN.encode() not in (a, b)
    assert any(admin_digest in pair for pair in compared)


def test_api_keys_are_looked_up_by_digest_only(sqlite_db: Database, upstream: str,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    looked_up: list[str] = []
    real = key_store.find_by_hash

    def spy(db: Database, secret_hash: str) -> object:
        looked_up.append(secret_hash)
        return real(db, secret_hash)

    monkeypatch.setattr(key_store, "find_by_hash", spy)
    seeded = seed(sqlite_db)
    routes = [Route(model=CHAT, base_url=f"{upstream}/v1")]
    with gateway_in_process(sqlite_db.url, routes) as url:
        for path in ("/v1/models", "/api/v1/usage/summary"):
            assert httpx.get(f"{url}{path}", headers=bearer(seeded.alpha)).status_code == 200
            assert httpx.get(f"{url}{path}", headers=bearer(seeded.alpha + "x")
                             ).status_code == 401
    assert looked_up
    assert all(HEX_DIGEST.match(h.encode()) for h in looked_up)
    assert hashlib.sha256(seeded.alpha.encode()).hexdigest() in looked_up
    assert seeded.alpha not in looked_up
