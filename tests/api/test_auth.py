"""Who may call /api/v1: the admin everywhere; a key holder its own usage only."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from tests.api.support import ADMIN_TOKEN, Api, bearer, recent_window, varied_records

ENDPOINTS = [
    ("GET", "/api/v1/usage/summary"),
    ("GET", "/api/v1/usage/trend"),
    ("GET", "/api/v1/usage/breakdown"),
    ("GET", "/api/v1/usage/calls"),
    ("GET", "/api/v1/usage/export"),
    ("POST", "/api/v1/usage/events"),
    ("GET", "/api/v1/keys"),
    ("POST", "/api/v1/keys"),
    ("GET", "/api/v1/keys/some-id"),
    ("PATCH", "/api/v1/keys/some-id"),
    ("DELETE", "/api/v1/keys/some-id"),
    ("POST", "/api/v1/keys/some-id/rotate"),
    ("GET", "/api/v1/audit"),
]
NOT_CREDENTIALS = [None, "", "Bearer", "Bearer ", "Basic " + ADMIN_TOKEN, ADMIN_TOKEN,
                   "Bearer wrong-token", "Bearer " + ADMIN_TOKEN + "x",
                   "Bearer tg-" + "a" * 40]


def test_without_a_valid_credential_everything_is_401(shared_api: Api) -> None:
    for method, path in ENDPOINTS:
        for header in NOT_CREDENTIALS:
            headers = {} if header is None else {"Authorization": header}
            response = shared_api.client.request(method, path, headers=headers,
                                                 json={"events": []})
            assert response.status_code == 401, (method, path, header, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            error = response.json()["error"]
            assert error["type"] == "authentication_error"
            assert set(error) == {"message", "type", "code", "param"}
            presented = (header or "").split()[-1:]
            if presented and len(presented[0]) > 8:
                assert presented[0] not in response.text  # a credential is never echoed


def test_the_admin_token_opens_every_endpoint(shared_api: Api) -> None:
    assert shared_api.get("/api/v1/usage/summary").status_code == 200
    assert shared_api.get("/api/v1/keys").status_code == 200
    assert shared_api.post_events([]).json()["accepted"] == 0
    # The scheme is case-insensitive, as HTTP says.
    response = shared_api.client.get("/api/v1/keys",
                                     headers={"Authorization": f"bearer {ADMIN_TOKEN}"})
    assert response.status_code == 200


def test_a_key_holder_sees_only_its_own_usage(api: Api) -> None:
    key_a = api.create_key(name="team a")
    key_b = api.create_key(name="team b")
    now = datetime.now(UTC)
    api.ledger.store(varied_records(now, keys=(key_a["id"], key_b["id"], None)))
    window = recent_window(now)
    own = {**window, "api_key_id": key_a["id"]}

    summary = api.ok("/api/v1/usage/summary", window, token=key_a["key"])
    assert summary == api.ok("/api/v1/usage/summary", own)
    assert summary["cards"]["model_calls"] == 20
    assert summary["cards"] != api.ok("/api/v1/usage/summary", window)["cards"]
    # Naming its own key changes nothing.
    assert api.ok("/api/v1/usage/summary", own, token=key_a["key"]) == summary

    for path, extra in (("/api/v1/usage/trend", {"group_by": "api_key"}),
                        ("/api/v1/usage/breakdown", {"group_by": "api_key,model"}),
                        ("/api/v1/usage/calls", {"limit": 1000})):
        mine = api.ok(path, {**window, **extra}, token=key_a["key"])
        assert mine == api.ok(path, {**own, **extra}), path
    rows = api.ok("/api/v1/usage/breakdown", {**window, "group_by": "api_key"},
                  token=key_a["key"])["rows"]
    assert [row["api_key"] for row in rows] == [key_a["id"]]
    records = api.ok("/api/v1/usage/calls", {**window, "limit": 1000}, token=key_a["key"])
    assert {r["api_key_id"] for r in records["data"]} == {key_a["id"]}
    exported = api.get("/api/v1/usage/export", {**window, "format": "ndjson"},
                       token=key_a["key"]).text.splitlines()
    assert len(exported) == 20 and all(key_a["id"] in line for line in exported)


@pytest.mark.parametrize("others", [["B"], ["A", "B"], ["no-such-key"]])
def test_a_key_holder_asking_for_another_key_is_refused(api: Api, others: list[str]) -> None:
    key_a = api.create_key(name="team a")
    key_b = api.create_key(name="team b")
    ids = {"A": key_a["id"], "B": key_b["id"]}
    asked = [ids.get(name, name) for name in others]
    for path in ("/api/v1/usage/summary", "/api/v1/usage/trend", "/api/v1/usage/breakdown",
                 "/api/v1/usage/calls", "/api/v1/usage/export"):
        response = api.get(path, {"api_key_id": asked}, token=key_a["key"])
        assert response.status_code == 403, (path, response.text)
        error = response.json()["error"]
        assert error["type"] == "permission_error" and error["param"] == "api_key_id"


def test_a_key_holder_cannot_manage_keys_or_report_events(api: Api) -> None:
    key = api.create_key(name="holder")
    token = bearer(key["key"])
    client = api.client
    refused = [
        client.get("/api/v1/keys", headers=token),
        client.post("/api/v1/keys", json={"name": "mine now"}, headers=token),
        client.get(f"/api/v1/keys/{key['id']}", headers=token),
        client.patch(f"/api/v1/keys/{key['id']}", json={"rpm_limit": 10**9}, headers=token),
        client.post(f"/api/v1/keys/{key['id']}/rotate", headers=token),
        client.delete(f"/api/v1/keys/{key['id']}", headers=token),
        client.post("/api/v1/usage/events", headers=token, json={"events": [
            {"id": "forged", "ts": datetime.now(UTC).isoformat(), "model": "m"}]}),
    ]
    for response in refused:
        assert response.status_code == 403, response.text
        assert response.json()["error"]["type"] == "permission_error"
    # Nothing changed: same key, same limits, still one key, no forged record.
    assert api.ok(f"/api/v1/keys/{key['id']}")["rpm_limit"] is None
    assert len(api.ok("/api/v1/keys")["data"]) == 1
    assert api.ok("/api/v1/usage/calls")["data"] == []


def test_a_disabled_or_expired_key_is_refused_with_403(api: Api) -> None:
    key = api.create_key(name="soon off")
    token = key["key"]
    assert api.get("/api/v1/usage/summary", token=token).status_code == 200

    api.client.patch(f"/api/v1/keys/{key['id']}", json={"status": "disabled"},
                     headers=bearer(ADMIN_TOKEN))
    response = api.get("/api/v1/usage/summary", token=token)
    assert response.status_code == 403
    assert "disabled" in response.json()["error"]["message"]

    api.client.patch(f"/api/v1/keys/{key['id']}", json={"status": "active"},
                     headers=bearer(ADMIN_TOKEN))
    assert api.get("/api/v1/usage/summary", token=token).status_code == 200

    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    expired = api.create_key(name="expired", expires_at=past)
    assert expired["status"] == "expired"
    response = api.get("/api/v1/usage/summary", token=expired["key"])
    assert response.status_code == 403
    assert "expired" in response.json()["error"]["message"]

    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    later = api.create_key(name="expires tomorrow", expires_at=future)
    assert api.get("/api/v1/usage/summary", token=later["key"]).status_code == 200


def test_a_deleted_key_is_unknown(api: Api) -> None:
    key = api.create_key(name="gone")
    api.client.delete(f"/api/v1/keys/{key['id']}", headers=bearer(ADMIN_TOKEN))
    response = api.get("/api/v1/usage/summary", token=key["key"])
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
