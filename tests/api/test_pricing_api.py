"""GET/POST /api/v1/pricing: the price table over time, discounts, who may read and write."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tallygate.store.meta import list_audit
from tests.api.support import ADMIN_TOKEN, Api, bearer


def _post(api: Api, body: dict[str, Any], token: str = ADMIN_TOKEN) -> Any:
    return api.client.post("/api/v1/pricing", json=body, headers=bearer(token))


def test_prices_over_time_and_in_force(api: Api) -> None:
    now = datetime.now(UTC)
    first = _post(api, {"model": "chat", "input_per_million": "0.50",
                        "output_per_million": "2.00", "cached_input_per_million": "0.10",
                        "effective_from": (now - timedelta(days=10)).isoformat()})
    assert first.status_code == 201, first.text
    assert first.json()["in_force"] is True and first.json()["effective_until"] is None
    second = _post(api, {"model": "chat", "input_per_million": "0.6",
                         "output_per_million": "2.4"})
    assert second.status_code == 201
    _post(api, {"model": "ocr", "per_call": "0.0015",
                "effective_from": (now - timedelta(days=1)).isoformat()})
    body = api.ok("/api/v1/pricing")
    assert body["currency"] == "USD"
    chat = [row for row in body["data"] if row["model"] == "chat"]
    assert [row["input_per_million"] for row in chat] == ["0.50", "0.6"]
    assert chat[0]["effective_until"] == chat[1]["effective_from"]
    assert [row["in_force"] for row in chat] == [False, True]
    assert chat[0]["cached_input_per_million"] == "0.10"
    assert chat[1]["cached_input_per_million"] is None  # the input price applies
    current = api.ok("/api/v1/pricing", {"current": "true"})["data"]
    assert {(r["model"], r["input_per_million"]) for r in current} == {("chat", "0.6"),
                                                                       ("ocr", "0")}
    assert [r["model"] for r in api.ok("/api/v1/pricing", {"model": "ocr"})["data"]] == ["ocr"]
    actions = [entry["action"] for entry in list_audit(api.db)]
    assert actions.count("price.set") == 3


def test_bad_prices_name_their_parameter(api: Api) -> None:
    for body, param in (({"model": "m", "input_per_million": "-1"}, "input_per_million"),
                        ({"model": "m", "output_per_million": "NaN"}, "output_per_million"),
                        ({"model": "m", "currency": "EUR"}, "currency"),
                        ({"model": "m", "effective_from": "2026-01-01T00:00:00"},
                         "effective_from"),
                        ({"input_per_million": "1"}, "model"),
                        ({"model": "m", "surprise": 1}, "surprise")):
        response = _post(api, body)
        assert response.status_code == 400, (body, response.text)
        assert response.json()["error"]["param"] == param, response.text


def test_a_key_holder_reads_its_models_and_discount_but_writes_nothing(api: Api) -> None:
    for model in ("chat", "embed", "secret-model"):
        assert _post(api, {"model": model, "input_per_million": "1"}).status_code == 201
    limited = api.create_key(name="limited", allowed_models=["chat", "embed"],
                             discount_percent="15")
    other = api.create_key(name="other", discount_percent="5")
    body = api.ok("/api/v1/pricing", token=limited["key"])
    assert {row["model"] for row in body["data"]} == {"chat", "embed"}
    assert [(d["api_key_id"], d["percent"]) for d in body["discounts"]] == [
        (limited["id"], "15")]
    admin = api.ok("/api/v1/pricing")
    assert {(d["api_key_name"], d["percent"]) for d in admin["discounts"]} == {
        ("limited", "15"), ("other", "5")}
    assert _post(api, {"model": "chat"}, token=limited["key"]).status_code == 403
    assert api.get("/api/v1/pricing", token=None).status_code == 401
    assert other["discount_percent"] == "5"
