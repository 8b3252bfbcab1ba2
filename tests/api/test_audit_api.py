"""GET /api/v1/audit: every change, newest first, filtered, a page at a time; admin only;
never a secret."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from tallygate.keys.schemas import KeyUpdate
from tallygate.keys.service import KeyService
from tallygate.store.database import Database
from tallygate.store.meta import write_audit
from tallygate.store.schema import audit_log
from tests.api.support import ADMIN_TOKEN, Api, bearer

US = 1_000_000
BASE_US = 1_767_225_600 * US  # 2026-01-01T00:00:00Z


def walk(api: Api, query: dict[str, Any], limit: int) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        params = {**query, "limit": limit, **({} if cursor is None else {"cursor": cursor})}
        page = api.ok("/api/v1/audit", params)
        assert set(page) == {"data", "has_more", "next_cursor"}
        seen += page["data"]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return seen
        assert len(page["data"]) == limit and page["next_cursor"]
        cursor = page["next_cursor"]
    raise AssertionError("the cursor never ended")


def _rfc3339(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us // US, UTC).replace(
        microsecond=ts_us % US).isoformat().replace("+00:00", "Z")


def _insert(db: Database, ts_us: int, actor: str, action: str, target: str | None) -> None:
    """An entry at a chosen instant (several share one), as write_audit would store it."""
    with db.write() as conn:
        conn.execute(audit_log.insert().values(ts=ts_us, actor=actor, action=action,
                                               target=target, details=None))


def _stored(db: Database) -> list[dict[str, Any]]:
    """Every stored entry, newest first by (ts, id): the brute-force answer."""
    with db.read() as conn:
        rows = conn.execute(audit_log.select()).all()
    return [{"id": r.id, "ts": r.ts, "actor": r.actor, "action": r.action, "target": r.target}
            for r in sorted(rows, key=lambda r: (r.ts, r.id), reverse=True)]


def _seed(api: Api) -> dict[str, str]:
    """Real changes through the API and the key service, and entries at fixed instants."""
    first = api.create_key(name="first")
    second = api.create_key(name="second")
    api.client.patch(f"/api/v1/keys/{first['id']}", json={"status": "disabled"},
                     headers=bearer(ADMIN_TOKEN))
    api.client.post(f"/api/v1/keys/{second['id']}/rotate", headers=bearer(ADMIN_TOKEN))
    response = api.client.post("/api/v1/pricing", headers=bearer(ADMIN_TOKEN), json={
        "model": first["id"], "input_per_million": "1", "output_per_million": "2"})
    assert response.status_code == 201, response.text
    KeyService(api.db).update(first["id"], KeyUpdate(rpm_limit=7), "cli")
    for i in range(12):  # four instants, three entries each: the id breaks the ties
        _insert(api.db, BASE_US + (i // 3) * 1000, ("cli", "admin", "key:x")[i % 3],
                ("key.update", "key.create", "price.set")[i % 3],
                (first["id"], second["id"], "gpt-x")[i % 3])
    return {"first": first["id"], "second": second["id"]}


def test_pages_walk_every_entry_once_newest_first_with_filters(api: Api) -> None:
    keys = _seed(api)
    stored = _stored(api.db)
    assert len(stored) == 6 + 12
    for limit in (1, 4, 17, 18, 1000):
        assert [e["id"] for e in walk(api, {}, limit)] == [e["id"] for e in stored], limit

    def expected(**want: Any) -> list[int]:
        return [e["id"] for e in stored if all(e[k] in v for k, v in want.items())]

    key_actions = {"key.create", "key.update", "key.rotate", "key.delete", "key.discount"}
    cases: list[tuple[dict[str, Any], list[int]]] = [
        ({"actor": "cli"}, expected(actor={"cli"})),
        ({"actor": "key:x"}, expected(actor={"key:x"})),
        ({"action": "key.update"}, expected(action={"key.update"})),
        ({"action": ["key.create", "price.set"]}, expected(action={"key.create", "price.set"})),
        # A key's own changes, not a price set for a model that happens to share its name.
        ({"api_key_id": keys["first"]}, expected(target={keys["first"]}, action=key_actions)),
        ({"api_key_id": keys["second"], "action": "key.rotate"},
         expected(target={keys["second"]}, action={"key.rotate"})),
        ({"actor": "admin", "api_key_id": keys["first"]},
         expected(actor={"admin"}, target={keys["first"]}, action=key_actions)),
        ({"actor": "nobody"}, []),
    ]
    for filters, ids in cases:
        assert ids or filters == {"actor": "nobody"}, filters
        for limit in (2, 1000):
            assert [e["id"] for e in walk(api, filters, limit)] == ids, (filters, limit)

    # [start, end) to the microsecond: the second and third instants of the fixed entries.
    window = {"start": _rfc3339(BASE_US + 1000), "end": _rfc3339(BASE_US + 3000)}
    shown = walk(api, window, 2)
    assert [e["id"] for e in shown] == [e["id"] for e in stored
                                        if BASE_US + 1000 <= e["ts"] < BASE_US + 3000]
    assert len(shown) == 6
    assert shown[0]["ts"] == "2026-01-01T00:00:00.002000Z"
    # A bare date is its first instant in UTC; an offset is honoured.
    assert len(walk(api, {"start": "2026-01-01", "end": "2026-01-02"}, 100)) == 12
    assert len(walk(api, {"end": "2026-01-01T08:00:00.001+08:00"}, 100)) == 3


def test_entries_say_which_key_and_show_their_details(api: Api) -> None:
    key = api.create_key(name="shown")
    api.client.patch(f"/api/v1/keys/{key['id']}", json={"status": "disabled"},
                     headers=bearer(ADMIN_TOKEN))
    entries = api.ok("/api/v1/audit")["data"]
    assert [(e["action"], e["api_key_id"], e["actor"], e["details"]) for e in entries] == [
        ("key.update", key["id"], "admin", {"status": "disabled"}),
        ("key.create", key["id"], "admin", {"name": "shown", "internal": False})]
    assert entries[0]["target"] == key["id"]
    assert datetime.fromisoformat(entries[0]["ts"].replace("Z", "+00:00")).tzinfo is not None


def test_no_secret_is_ever_shown(api: Api) -> None:
    key = api.create_key(name="secretive")
    rotated = api.client.post(f"/api/v1/keys/{key['id']}/rotate", headers=bearer(ADMIN_TOKEN))
    secrets = [key["key"], rotated.json()["key"], ADMIN_TOKEN]
    # A writer that slipped and stored a credential among the details.
    write_audit(api.db, "admin", "setting.change", "anomaly_webhook_secret",
                {"secret": "s3cr3t-value", "new_key": "tg-looks-like-a-key",
                 "key": "tg-another", "admin_token": "tga-x", "rpm_limit": 5})
    body = api.get("/api/v1/audit").text
    for secret in [*secrets, "s3cr3t-value", "tga-x"]:
        assert secret not in body
    slipped = api.ok("/api/v1/audit", {"action": "setting.change"})["data"][0]["details"]
    assert slipped == {"secret": "[redacted]", "new_key": "tg-looks-like-a-key",
                       "key": "[redacted]", "admin_token": "[redacted]", "rpm_limit": 5}
    rotation = api.ok("/api/v1/audit", {"action": "key.rotate"})["data"]
    assert [(e["api_key_id"], e["details"]) for e in rotation] == [(key["id"], None)]


def test_only_the_admin_may_read_it(api: Api) -> None:
    key = api.create_key(name="holder")
    for token, status in ((None, 401), ("wrong", 401), (key["key"], 403)):
        for params in ({}, {"api_key_id": key["id"]}):
            response = api.get("/api/v1/audit", params, token=token)
            assert response.status_code == status, (token, response.text)
    assert api.get("/api/v1/audit", token=key["key"]).json()["error"]["code"] == "admin_only"


def test_bad_parameters_are_named(api: Api) -> None:
    cases = [
        ({"start": "yesterday"}, "start"),
        ({"end": "2026-13-01"}, "end"),
        ({"start": "2026-01-02T00:00:00Z", "end": "2026-01-01T00:00:00Z"}, "end"),
        ({"cursor": "not-a-cursor"}, "cursor"),
        # A usage cursor (a call id) is not an audit position.
        ({"cursor": "MTIzOmFiYw"}, "cursor"),
        ({"limit": 0}, "limit"),
        ({"actor": ""}, "actor"),
        ({"api_key_id": "x" * 201}, "api_key_id"),
    ]
    for params, param in cases:
        response = api.get("/api/v1/audit", params)
        assert response.status_code == 400, (params, response.text)
        error = response.json()["error"]
        assert error["param"] == param, (params, error)
        assert param in error["message"]
