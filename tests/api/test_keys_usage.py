"""Keys carry their live figures: usage in the current period, forecast, flags, discount."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from tallygate.domain.pricing import Price
from tallygate.domain.records import CallRecord
from tallygate.store.meta import list_audit
from tests.api.support import ADMIN_TOKEN, Api, bearer
from tests.conftest import RECENT

US = 1_000_000


def _patch(api: Api, key_id: str, body: dict[str, Any]) -> Any:
    return api.client.patch(f"/api/v1/keys/{key_id}", json=body, headers=bearer(ADMIN_TOKEN))


def test_live_figures_forecast_and_flags(api: Api) -> None:
    now = datetime.now(UTC)
    heavy = api.create_key(name="heavy", quota_tokens=100_000, budget="10")
    expiring = api.create_key(name="expiring",
                              expires_at=(now + timedelta(days=3)).isoformat())
    idle = api.create_key(name="idle", quota_tokens=10**9, quota_period="daily")
    # heavy: 9 000 tokens and 0.9 an hour over the last 10 hours.
    start = now - timedelta(hours=10)
    api.ledger.store([CallRecord(
        id=f"h{i}", ts_us=int((start + timedelta(hours=i)).timestamp()) * US, model="m",
        call_type="model", api_key_id=heavy["id"], input_tokens=9000, total_tokens=9000,
        cost_nano=900_000_000) for i in range(10)])

    one = api.ok(f"/api/v1/keys/{heavy['id']}")
    usage = one["usage"]
    assert usage["period"] == "total" and usage["period_start"] is None
    assert usage["tokens"] == 90_000 and usage["cost"] == "9.00"
    assert usage["quota_used"] == 0.9 and usage["budget_used"] == 0.9
    assert usage["tokens_per_hour"] == 3750.0 and usage["cost_per_hour"] == "0.375"
    # 10 000 tokens left at 3 750 an hour; 1.00 left at 0.375 an hour: the budget first.
    assert usage["runs_out_of"] == "budget" and not usage["exhausted"]
    runs_out = datetime.fromisoformat(usage["runs_out_at"])
    assert timedelta(hours=2.6) < runs_out - now < timedelta(hours=2.7)
    assert one["near_limit"] and not one["near_expiry"]
    assert set(one["warnings"]) == {"quota_near", "budget_near", "runs_out_soon"}

    listed = {k["name"]: k for k in api.ok("/api/v1/keys")["data"]}
    assert listed["heavy"]["usage"]["tokens"] == 90_000
    assert listed["expiring"]["near_expiry"] and listed["expiring"]["warnings"] == [
        "expires_soon"]
    assert listed["idle"]["usage"]["period"] == "daily"
    assert listed["idle"]["usage"]["period_end"] is not None and not listed["idle"]["near_limit"]
    flagged = api.ok("/api/v1/keys", {"flagged": "true"})["data"]
    assert {k["name"] for k in flagged} == {"heavy", "expiring"}
    assert expiring["id"] and idle["id"]


def test_a_discount_prices_the_keys_calls_from_when_it_is_set(api: Api) -> None:
    api.ledger.set_price(Price("m", 0, Decimal(1), Decimal(0)))
    key = api.create_key(name="partner")
    assert key["discount_percent"] is None
    changed = _patch(api, key["id"], {"discount_percent": "20"})
    assert changed.status_code == 200 and changed.json()["discount_percent"] == "20"
    now = datetime.now(UTC)
    response = api.post_events([{"id": "e1", "ts": now.isoformat(), "model": "m",
                                 "api_key_id": key["id"], "input_tokens": 1_000_000}])
    assert response.json()["accepted"] == 1
    (record,) = api.ok("/api/v1/usage/calls", {"period": RECENT})["data"]
    assert record["cost"] == "0.80"
    cleared = _patch(api, key["id"], {"discount_percent": None})
    assert cleared.json()["discount_percent"] == "0"
    bad = _patch(api, key["id"], {"discount_percent": "101"})
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "discount_percent"
    audit = [e for e in list_audit(api.db) if e["action"] == "key.discount"]
    assert [e["details"]["discount_percent"] for e in audit] == ["0", "20"]  # newest first
