"""A flood of refused calls cannot fill the ledger, and every refusal is still counted
(PRODUCT.md §15; docs/gateway.md, "Refused calls")."""

from __future__ import annotations

from typing import Any

import httpx
import orjson
import pytest
from sqlalchemy import func, select

from tallygate.app import create_app
from tallygate.domain.records import CallRecord
from tallygate.fake_upstream import FakeUpstream
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.ledger.maintenance import check_rollups
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tallygate.store.schema import calls
from tallygate.store.usage import record_from_row
from tests.gateway.conftest import CHAT, GatewayUnderTest, _settings
from tests.gateway.test_anthropic import ask, serve_gateway
from tests.servers import serve_app

FLOOD = 500
# About a kilobyte of tags, the most X-Tallygate-Tags may carry.
BIG_TAGS = orjson.dumps({f"tag{n}": "x" * 40 for n in range(19)}).decode()
assert 900 < len(BIG_TAGS) <= 1024
SMALL_TAGS = "team=search"


def _stored(db: Database, key_id: str) -> tuple[int, int]:
    """Rows of the key, and the bytes of their tags."""
    with db.read() as conn:
        rows, tag_bytes = conn.execute(
            select(func.count(), func.coalesce(func.sum(func.length(calls.c.metadata)), 0))
            .where(calls.c.api_key_id == key_id)).one()
    return int(rows), int(tag_bytes)


def _flood(url: str, key: str, count: int, tags: str) -> list[int]:
    headers = {"Authorization": f"Bearer {key}", "X-Tallygate-Tags": tags}
    with httpx.Client(base_url=url, headers=headers, timeout=30) as client:
        return [client.post("/v1/chat/completions",
                            json={"model": CHAT, "messages": []}).status_code
                for _ in range(count)]


def _flooded(db: Database, upstream: tuple[str, FakeUpstream], limits: dict[str, Any],
             tags: str, *, disabled: bool = False, **settings: Any,
             ) -> tuple[str, list[int], tuple[int, int]]:
    """A key flooding a gateway that then stops (its lifespan ends, as on shutdown): the
    key's id, the statuses it got, and its rows and tag bytes while the gateway ran."""
    keys = KeyService(db)
    with serve_app(create_app(_settings(db, upstream[0], **settings))) as url:
        gateway = GatewayUnderTest(url, db, keys)
        key_id, key = gateway.new_key(**limits)
        if disabled:
            keys.set_status(key_id, "disabled", "test")
        statuses = _flood(url, key, FLOOD, tags)
        while_running = _stored(db, key_id)
    return key_id, statuses, while_running


def test_a_disabled_keys_flood_writes_few_rows_and_every_refusal_is_counted(
        db: Database, upstream: tuple[str, FakeUpstream], make_gateway: Any) -> None:
    key_id, statuses, (rows, tag_bytes) = _flooded(db, upstream, {}, BIG_TAGS, disabled=True)
    assert statuses == [403] * FLOOD
    # At most 10 one by one and one aggregate per minute the flood spanned (two at most).
    assert rows <= 2 * (10 + 1), rows
    # A refusal keeps its tags only when they are small: a kilobyte each is never stored.
    assert tag_bytes <= rows * 100, tag_bytes
    # The gateway has stopped: the minute under way was written on the way out.
    after, _ = _stored(db, key_id)
    assert after <= 2 * (10 + 1)
    reader = make_gateway()
    cards = reader.summary(api_key_id=key_id)["cards"]
    assert cards["model_calls"] == FLOOD and cards["failed_calls"] == FLOOD
    assert cards["success_calls"] == 0 and cards["rate_limited_calls"] == 0
    listed = reader.calls(api_key_id=key_id)
    assert len(listed) == after and sum(c["repeats"] for c in listed) == FLOOD
    assert {c["status_code"] for c in listed} == {403}
    with reader.admin() as client:
        (row,) = client.get("/api/v1/usage/breakdown", params={
            "period": "1d", "group_by": "api_key", "api_key_id": key_id}).json()["rows"]
        exported = client.get("/api/v1/usage/export", params={
            "period": "1d", "what": "calls", "format": "json", "api_key_id": key_id}).json()
    assert row["calls"] == row["failed_calls"] == FLOOD
    assert sum(c["repeats"] for c in exported) == FLOOD
    assert check_rollups(Ledger(db)).ok


def test_a_rate_limited_flood_counts_every_429(
        db: Database, upstream: tuple[str, FakeUpstream], make_gateway: Any) -> None:
    key_id, statuses, (rows, _) = _flooded(db, upstream, {"rpm_limit": 5}, SMALL_TAGS)
    assert statuses.count(200) >= 5 and statuses.count(429) >= FLOOD - 10
    assert set(statuses) == {200, 429}
    assert rows <= statuses.count(200) + 2 * (10 + 1)
    cards = make_gateway().summary(api_key_id=key_id)["cards"]
    assert cards["model_calls"] == FLOOD
    assert cards["rate_limited_calls"] == statuses.count(429)
    assert cards["success_calls"] == statuses.count(200) and cards["failed_calls"] == 0
    # Small tags stay on the refusals recorded one by one.
    tagged = [c for c in make_gateway().calls(api_key_id=key_id)
              if c["status_code"] == 429 and c["repeats"] == 1]
    assert tagged and all(c["metadata"]["team"] == "search" for c in tagged)


def test_refusals_recorded_one_by_one_follow_the_setting(
        db: Database, upstream: tuple[str, FakeUpstream], make_gateway: Any) -> None:
    key_id, _, (rows, _) = _flooded(db, upstream, {}, SMALL_TAGS, disabled=True,
                                    refusal_records_per_minute=0)
    # None one by one: only the minutes' aggregates, written at the latest on shutdown.
    assert rows <= 1
    listed = make_gateway().calls(api_key_id=key_id)
    assert 1 <= len(listed) <= 2 and sum(c["repeats"] for c in listed) == FLOOD
    assert all(c["latency_ms"] is None and c["metadata"] is None for c in listed)


def test_anthropic_messages_refusals_are_aggregated_too(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    # Refused before any upstream is asked: the route's upstream need not be there.
    with serve_gateway(db, "http://127.0.0.1:9", monkeypatch,
                       refusal_records_per_minute=3) as served:
        keys = KeyService(db)
        created = keys.create(KeyCreate(name="claude"), "test")
        keys.set_status(created.id, "disabled", "test")
        headers = {"x-api-key": created.key, "anthropic-version": "2023-06-01",
                   "X-Tallygate-Tags": BIG_TAGS}
        with httpx.Client(base_url=served.url, headers=headers, timeout=30) as client:
            statuses = [client.post("/v1/messages", json=ask()).status_code
                        for _ in range(100)]
        assert statuses == [403] * 100
        rows, tag_bytes = _stored(db, created.id)
        assert rows <= 2 * (3 + 1) and tag_bytes <= rows * 100
    listed = _records(db, created.id)
    assert len(listed) <= 2 * (3 + 1) and sum(r.repeats for r in listed) == 100
    assert {r.endpoint for r in listed} == {"/v1/messages"}


def _records(db: Database, key_id: str) -> list[CallRecord]:
    with db.read() as conn:
        return [record_from_row(row) for row in conn.execute(
            select(calls).where(calls.c.api_key_id == key_id))]
