"""The demo's figures, through every endpoint, match its own call records."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tallygate.app import create_app
from tallygate.config import load_settings
from tallygate.demo.seed import seed_demo
from tallygate.domain.records import now_us
from tallygate.keys.service import KeyService
from tallygate.ledger.maintenance import check_rollups
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database

ADMIN = "demo-admin-token-xyz"


@pytest.fixture(scope="module")
def demo_api(tmp_path_factory: pytest.TempPathFactory) -> Any:
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    seed_demo(Ledger(db), KeyService(db), now_us=now_us(), days=10)
    db.dispose()
    app = create_app(load_settings(database_url=f"sqlite:///{path}", admin_token=ADMIN))
    with TestClient(app, headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        yield client, path


def all_calls(client: TestClient, params: dict[str, Any]) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = client.get("/api/v1/usage/calls", params={**params, "limit": 1000,
                                                        **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        body = page.json()
        calls.extend(body["data"])
        if not body["has_more"]:
            return calls
        cursor = body["next_cursor"]


@pytest.mark.parametrize("tz", ["Asia/Shanghai", "America/New_York", "Asia/Kathmandu"])
def test_summary_trend_and_breakdown_equal_the_call_records(demo_api: Any, tz: str) -> None:
    client, _ = demo_api
    params = {"period": "7d", "tz": tz}
    calls = all_calls(client, params)
    assert len(calls) > 1000
    summary = client.get("/api/v1/usage/summary", params=params).json()
    cards = summary["cards"]
    assert cards["model_calls"] == len(calls)
    assert cards["service_calls"] == sum(c["call_type"] == "service" for c in calls)
    assert cards["internal_calls"] == sum(c["call_type"] == "internal" for c in calls)
    for name in ("input_tokens", "output_tokens", "total_tokens", "cached_input_tokens"):
        assert cards[name] == sum(c[name] for c in calls), name
    assert Decimal(cards["cost"]["amount"]) == sum(Decimal(c["cost"]) for c in calls)
    assert cards["rate_limited_calls"] == sum(c["status_code"] == 429 for c in calls)

    trend = client.get("/api/v1/usage/trend", params={**params, "metric": "requests"}).json()
    per_model = Counter(c["model"] for c in calls)
    assert {s["name"]: s["total"] for s in trend["series"]} == dict(per_model)
    assert len(trend["buckets"]) == 7

    breakdown = client.get("/api/v1/usage/breakdown",
                           params={**params, "group_by": "api_key"}).json()
    per_key = Counter(c["api_key_id"] for c in calls)
    assert {row["api_key"]: row["calls"] for row in breakdown["rows"]} == dict(per_key)


def test_the_rollups_match_the_raw_records(demo_api: Any) -> None:
    _, path = demo_api
    db = Database(f"sqlite:///{path}")
    report = check_rollups(Ledger(db))
    db.dispose()
    assert report.ok and report.rows_compared > 0
