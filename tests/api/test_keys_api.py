"""/api/v1/keys: create (secret shown once), read, change, rotate, delete; all audited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from tallygate.keys.secrets import hash_secret
from tallygate.store.database import Database
from tallygate.store.meta import list_audit
from tallygate.store.schema import metadata
from tests.api.support import ADMIN_TOKEN, Api, bearer

KEY_FIELDS = {"id", "name", "prefix", "status", "internal", "owner", "tags", "created_at",
              "updated_at", "expires_at", "allowed_models", "allowed_ips", "rpm_limit",
              "tpm_limit", "quota_tokens", "budget", "quota_period", "max_concurrency",
              # live figures (issue 5): added, never renamed
              "discount_percent", "usage", "near_limit", "near_expiry", "warnings"}


def _patch(api: Api, key_id: str, body: Any) -> Any:
    return api.client.patch(f"/api/v1/keys/{key_id}", json=body, headers=bearer(ADMIN_TOKEN))


def _everything_stored(db: Database) -> str:
    """Every value of every table, as text: what someone with the database would see."""
    with db.read() as conn:
        return "\n".join(repr(tuple(row)) for table in metadata.sorted_tables
                         for row in conn.execute(select(table)))


def test_a_key_is_created_shown_once_and_never_again(api: Api) -> None:
    created = api.create_key(name="search team", internal=True, owner="alice",
                             tags=["search", "prod"], rpm_limit=60, tpm_limit=100_000,
                             quota_tokens=5_000_000, budget="12.5", quota_period="monthly",
                             allowed_models=["cltech/deepseek-r1-32b"],
                             allowed_ips=["10.0.0.0/8", "::1"])
    secret = created["key"]
    assert secret.startswith("tg-") and len(secret) >= 40
    assert set(created) == KEY_FIELDS | {"key"}
    assert created["prefix"] == secret[:10] and created["status"] == "active"
    assert created["budget"] == "12.50" and created["quota_period"] == "monthly"
    assert created["internal"] is True and created["tags"] == ["search", "prod"]

    listed = api.ok("/api/v1/keys")["data"]
    one = api.ok(f"/api/v1/keys/{created['id']}")
    expected = {k: v for k, v in created.items() if k != "key"}
    assert listed == [expected] and one == expected
    for response in (api.get("/api/v1/keys"), api.get(f"/api/v1/keys/{created['id']}")):
        assert secret not in response.text
        assert hash_secret(secret) not in response.text
        assert "secret" not in response.text and "hash" not in response.text

    # A second key has its own secret.
    other = api.create_key(name="other")
    assert other["key"] != secret and other["id"] != created["id"]
    assert [k["id"] for k in api.ok("/api/v1/keys")["data"]] == [created["id"], other["id"]]


@pytest.mark.parametrize(("body", "param"), [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": "x", "internal": "yes"}, "internal"),
    ({"name": "x", "allowed_ips": ["10.0.0.300"]}, "allowed_ips"),
    ({"name": "x", "rpm_limit": 0}, "rpm_limit"),
    ({"name": "x", "tpm_limit": 1.5}, "tpm_limit"),
    ({"name": "x", "budget": "-1"}, "budget"),
    ({"name": "x", "budget": "NaN"}, "budget"),
    ({"name": "x", "quota_period": "weekly"}, "quota_period"),
    ({"name": "x", "expires_at": "2027-01-01T00:00:00"}, "expires_at"),
    ({"name": "x", "secret_hash": "0" * 64}, "secret_hash"),
    ({"name": "x", "key": "tg-my-own-choice"}, "key"),
    ({"name": "a\x00b"}, "name"),
    ({"name": "x", "tags": ["ok", "a\x00"]}, "tags"),
    ({"name": "x", "owner": "\x00"}, "owner"),
    ({"name": "x", "allowed_models": ["m\x00"]}, "allowed_models"),
])
def test_creating_a_key_validates_every_field(shared_api: Api, body: dict[str, Any],
                                              param: str) -> None:
    response = shared_api.client.post("/api/v1/keys", json=body, headers=bearer(ADMIN_TOKEN))
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error"


def test_an_unreadable_body_is_a_400_without_a_parameter(shared_api: Api) -> None:
    response = shared_api.client.post("/api/v1/keys", content=b"{not json",
                                      headers={**bearer(ADMIN_TOKEN),
                                               "content-type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["param"] is None


def test_patch_changes_limits_validates_and_disables(api: Api) -> None:
    key = api.create_key(name="limits", rpm_limit=10)
    key_id = key["id"]
    expires = (datetime.now(UTC) + timedelta(days=30)).replace(microsecond=0)
    changed = _patch(api, key_id, {
        "rpm_limit": 120, "tpm_limit": 50_000, "quota_tokens": 10**9, "budget": "99.95",
        "quota_period": "daily", "allowed_models": ["bge-m3"],
        "allowed_ips": ["192.168.1.0/24", "2001:db8::/32"], "owner": "bob",
        "tags": ["batch"], "expires_at": expires.isoformat(), "name": "limits v2"})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert set(body) == KEY_FIELDS
    assert (body["rpm_limit"], body["tpm_limit"], body["quota_tokens"]) == (120, 50_000, 10**9)
    assert body["budget"] == "99.95" and body["quota_period"] == "daily"
    assert body["allowed_ips"] == ["192.168.1.0/24", "2001:db8::/32"]
    assert body["name"] == "limits v2" and body["owner"] == "bob" and body["tags"] == ["batch"]
    assert datetime.fromisoformat(body["expires_at"]) == expires
    assert body["updated_at"] > key["updated_at"]
    assert api.ok(f"/api/v1/keys/{key_id}") == body

    # null clears a limit; fields not sent stay as they are.
    cleared = _patch(api, key_id, {"rpm_limit": None, "budget": None, "allowed_ips": None})
    assert cleared.status_code == 200
    after = cleared.json()
    assert after["rpm_limit"] is None and after["budget"] is None
    assert after["allowed_ips"] is None
    assert after["tpm_limit"] == 50_000 and after["name"] == "limits v2"

    for bad, param in (({"allowed_ips": ["300.1.1.1"]}, "allowed_ips"),
                       ({"allowed_ips": ["10.0.0.0/33"]}, "allowed_ips"),
                       ({"name": None}, "name"), ({"name": ""}, "name"),
                       ({"status": "expired"}, "status"), ({"status": None}, "status"),
                       ({"internal": None}, "internal"), ({"quota_period": None}, "quota_period"),
                       ({"rpm_limit": -5}, "rpm_limit"), ({"id": "new-id"}, "id"),
                       ({"prefix": "tg-x"}, "prefix")):
        response = _patch(api, key_id, bad)
        assert response.status_code == 400, (bad, response.text)
        assert response.json()["error"]["param"] == param, bad
    assert api.ok(f"/api/v1/keys/{key_id}") == after  # a refused change changes nothing

    disabled = _patch(api, key_id, {"status": "disabled"})
    assert disabled.json()["status"] == "disabled"
    assert api.ok(f"/api/v1/keys/{key_id}")["status"] == "disabled"
    assert _patch(api, key_id, {"status": "active"}).json()["status"] == "active"

    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    assert _patch(api, key_id, {"expires_at": past}).json()["status"] == "expired"
    assert _patch(api, key_id, {"expires_at": None}).json()["status"] == "active"

    missing = _patch(api, "no-such-key", {"rpm_limit": 1})
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "not_found_error"
    for no_key in ("a%00b", "k" * 65):  # ids no key can have never reach the database
        admin = bearer(ADMIN_TOKEN)
        for response in (api.client.get(f"/api/v1/keys/{no_key}", headers=admin),
                         _patch(api, no_key, {"rpm_limit": 1}),
                         api.client.post(f"/api/v1/keys/{no_key}/rotate", headers=admin),
                         api.client.delete(f"/api/v1/keys/{no_key}", headers=admin)):
            assert response.status_code == 404, response.text


def test_rotate_replaces_the_secret_and_keeps_everything_else(api: Api) -> None:
    key = api.create_key(name="rotating", rpm_limit=7, tags=["a"])
    old = key["key"]
    assert api.get("/api/v1/usage/summary", token=old).status_code == 200

    rotated = api.client.post(f"/api/v1/keys/{key['id']}/rotate", headers=bearer(ADMIN_TOKEN))
    assert rotated.status_code == 200
    new = rotated.json()
    assert new["id"] == key["id"] and new["key"] != old and new["prefix"] == new["key"][:10]
    assert (new["rpm_limit"], new["tags"], new["name"]) == (7, ["a"], "rotating")

    assert api.get("/api/v1/usage/summary", token=old).status_code == 401
    assert api.get("/api/v1/usage/summary", token=new["key"]).status_code == 200
    assert old not in api.get("/api/v1/keys").text and new["key"] not in api.get(
        "/api/v1/keys").text

    missing = api.client.post("/api/v1/keys/nope/rotate", headers=bearer(ADMIN_TOKEN))
    assert missing.status_code == 404


def test_delete_removes_the_key_for_good(api: Api) -> None:
    key = api.create_key(name="short-lived")
    keep = api.create_key(name="stays")
    deleted = api.client.delete(f"/api/v1/keys/{key['id']}", headers=bearer(ADMIN_TOKEN))
    assert deleted.status_code == 204 and deleted.content == b""
    assert api.get(f"/api/v1/keys/{key['id']}").status_code == 404
    again = api.client.delete(f"/api/v1/keys/{key['id']}", headers=bearer(ADMIN_TOKEN))
    assert again.status_code == 404
    assert [k["id"] for k in api.ok("/api/v1/keys")["data"]] == [keep["id"]]
    assert api.get("/api/v1/usage/summary", token=key["key"]).status_code == 401


def test_every_change_is_audited_and_no_secret_is_stored(api: Api) -> None:
    key = api.create_key(name="audited")
    secrets = [key["key"]]
    _patch(api, key["id"], {"rpm_limit": 5})
    _patch(api, key["id"], {})  # no change, no entry
    _patch(api, key["id"], {"status": "disabled"})
    _patch(api, key["id"], {"status": "active"})
    _patch(api, key["id"], {"allowed_ips": ["nope"]})  # refused, no entry
    secrets.append(api.client.post(f"/api/v1/keys/{key['id']}/rotate",
                                   headers=bearer(ADMIN_TOKEN)).json()["key"])
    other = api.create_key(name="second")
    secrets.append(other["key"])
    api.client.delete(f"/api/v1/keys/{key['id']}", headers=bearer(ADMIN_TOKEN))

    entries = list(reversed(list_audit(api.db)))
    assert [(e["action"], e["target"]) for e in entries] == [
        ("key.create", key["id"]), ("key.update", key["id"]), ("key.update", key["id"]),
        ("key.update", key["id"]), ("key.rotate", key["id"]), ("key.create", other["id"]),
        ("key.delete", key["id"])]
    assert {e["actor"] for e in entries} == {"admin"}
    assert entries[1]["details"] == {"rpm_limit": 5}
    assert entries[2]["details"] == {"status": "disabled"}
    assert all(e["ts"] > 0 for e in entries)

    # Nowhere in the database: not the secrets, not the admin token, only their hashes.
    stored = _everything_stored(api.db)
    for secret in [*secrets, ADMIN_TOKEN]:
        assert secret not in stored
    assert hash_secret(secrets[-1]) in stored
    if api.db.is_sqlite:
        path = Path(api.db.engine.url.database or "")
        files = [p for p in path.parent.iterdir() if p.name.startswith(path.name)]
        assert path in files
        raw = b"".join(p.read_bytes() for p in files)  # the file and its WAL
        assert hash_secret(secrets[-1]).encode() in raw  # the bytes are really searched
        for secret in [*secrets, ADMIN_TOKEN]:
            assert secret.encode() not in raw
