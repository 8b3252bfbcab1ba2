"""GET /api/v1/anomalies: the common filters, its own parameters, and who sees what."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from tallygate.domain.records import CallRecord
from tests.api.support import Api

US = 1_000_000


def _seed(api: Api, key: str, other: str) -> datetime:
    """Two keys calling steadily for two weeks; then ``key`` bursts and tries a new model."""
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    start = now - timedelta(days=15)
    records = []
    for h in range(15 * 24):
        at = start + timedelta(hours=h)
        for n in range(6):
            for owner in (key, other):
                records.append(CallRecord(
                    id=f"{owner}-{h}-{n}", ts_us=int(at.timestamp()) * US + n * 60 * US,
                    model="m", call_type="model", api_key_id=owner, input_tokens=100,
                    total_tokens=100))
    burst_hour = now - timedelta(hours=3)
    records += [CallRecord(id=f"burst-{n}", ts_us=int(burst_hour.timestamp()) * US + n * US,
                           model="m", call_type="model", api_key_id=key, input_tokens=100,
                           total_tokens=100) for n in range(200)]
    records.append(CallRecord(id="first-of-m2", ts_us=int((now - timedelta(hours=1))
                                                          .timestamp()) * US,
                              model="m2", call_type="model", api_key_id=key))
    api.ledger.store(records)
    return burst_hour


def test_anomalies_with_filters_and_scopes(api: Api) -> None:
    key, other = api.create_key(name="bursty"), api.create_key(name="calm")
    burst = _seed(api, key["id"], other["id"])
    body = api.ok("/api/v1/anomalies", {"period": "1d"} if burst.date() == datetime.now(
        UTC).date() else {"period": "3d"})
    assert body["parameters"]["threshold"] == 5.0 and body["tz"] == "UTC"
    kinds = {(a["kind"], a["scope"], a["metric"]) for a in body["data"]}
    assert ("spike", "api_key", "requests") in kinds and ("spike", "model", "requests") in kinds
    assert ("new_model", "api_key", None) in kinds
    spike = next(a for a in body["data"] if a["kind"] == "spike" and a["scope"] == "api_key"
                 and a["metric"] == "requests" and a["granularity"] == "hour")
    assert spike["api_key_id"] == key["id"] and spike["api_key_name"] == "bursty"
    assert spike["start"] == burst.isoformat() and spike["value"] == 206
    assert spike["message"].startswith("key bursty: 206 calls in one hour")

    window = {"start": (burst - timedelta(days=1)).isoformat(),
              "end": (burst + timedelta(hours=4)).isoformat()}
    only_model = api.ok("/api/v1/anomalies", {**window, "scope": "model", "kind": "spike",
                                              "granularity": "hour", "metric": "requests"})
    assert [(a["scope"], a["model"]) for a in only_model["data"]] == [("model", "m")]
    calm = api.ok("/api/v1/anomalies", {**window, "api_key_id": other["id"]})
    assert calm["data"] == []
    shanghai = api.ok("/api/v1/anomalies", {**window, "tz": "Asia/Shanghai",
                                            "kind": "spike", "scope": "api_key",
                                            "granularity": "hour", "metric": "requests"})
    assert [a["start"] for a in shanghai["data"]] == [
        burst.astimezone(ZoneInfo("Asia/Shanghai")).isoformat()]

    # A key holder sees only its own key's anomalies.
    own = api.ok("/api/v1/anomalies", window, token=other["key"])
    assert own["data"] == []
    mine = api.ok("/api/v1/anomalies", window, token=key["key"])
    assert mine["data"] and {a["api_key_id"] for a in mine["data"] if a["scope"] == "api_key"
                             } == {key["id"]}
    assert api.get("/api/v1/anomalies", {**window, "api_key_id": other["id"]},
                   token=key["key"]).status_code == 403


def test_bad_parameters_are_named(shared_api: Api) -> None:
    for params, param in (({"kind": "meteor"}, "kind"), ({"granularity": "minute"},
                                                          "granularity"),
                          ({"scope": "team"}, "scope"), ({"metric": "cost"}, "metric"),
                          ({"period": "5d"}, "period"),
                          ({"start": "2020-01-01", "end": "2020-12-31", "granularity": "hour"},
                           "granularity")):
        response = shared_api.get("/api/v1/anomalies", params)
        assert response.status_code == 400, (params, response.text)
        assert response.json()["error"]["param"] == param


def test_the_delivery_log_is_for_the_admin(api: Api) -> None:
    assert api.ok("/api/v1/anomalies/deliveries") == {"data": []}
    key = api.create_key(name="k")
    assert api.get("/api/v1/anomalies/deliveries", token=key["key"]).status_code == 403
