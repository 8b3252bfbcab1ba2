"""POST /api/v1/usage/events: idempotent ingestion with per-item errors."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tallygate.domain.pricing import Price
from tallygate.ledger.maintenance import purge_expired
from tallygate.ledger.service import Ledger
from tallygate.store.prices import set_price
from tests.api.support import ADMIN_TOKEN, Api, bearer, recent_window, running_app

MODEL = "cltech/deepseek-r1-32b"


def event(call_id: str, ts: datetime, **fields: Any) -> dict[str, Any]:
    return {"id": call_id, "ts": ts.isoformat().replace("+00:00", "Z"), "model": MODEL,
            "input_tokens": 100, "output_tokens": 40, "cost": "0.0015", **fields}


def test_accepted_and_duplicates_are_counted_and_a_retried_batch_counts_once(
        api: Api) -> None:
    now = datetime.now(UTC)
    batch = [event(f"e{i}", now - timedelta(minutes=i + 1), api_key_id="k1") for i in range(5)]
    first = api.post_events(batch)
    assert first.status_code == 200
    assert first.json() == {"accepted": 5, "duplicates": 0, "rejected": 0, "refused": 0,
                            "errors": []}

    retried = api.post_events(batch)
    assert retried.json() == {"accepted": 0, "duplicates": 5, "rejected": 0, "refused": 0,
                              "errors": []}

    overlapping = batch[3:] + [event("e-new", now - timedelta(minutes=30))]
    assert api.post_events(overlapping).json()["accepted"] == 1
    assert api.post_events(overlapping).json()["duplicates"] == 3

    # The same id twice in one batch is one record.
    twice = [event("same", now - timedelta(minutes=2)), event("same", now - timedelta(minutes=2))]
    assert api.post_events(twice).json() == {"accepted": 1, "duplicates": 1, "rejected": 0,
                                             "refused": 0,
                                             "errors": []}

    window = recent_window(now)
    cards = api.ok("/api/v1/usage/summary", window)["cards"]
    assert cards["model_calls"] == 7
    assert cards["input_tokens"] == 700 and cards["output_tokens"] == 280
    assert cards["cost"] == {"amount": "0.0105", "currency": "USD"}
    ids = [r["id"] for r in api.ok("/api/v1/usage/calls", window)["data"]]
    assert sorted(ids) == sorted(["e0", "e1", "e2", "e3", "e4", "e-new", "same"])


def _bad_items(now: datetime) -> list[tuple[dict[str, Any] | Any, str | None]]:
    """Invalid items and the field each error must name."""
    ok = event("x", now - timedelta(minutes=5))
    return [
        ({**ok, "id": "naive-ts", "ts": "2026-11-01T10:00:00"}, "ts"),
        ({**ok, "id": "garbage-ts", "ts": "last tuesday"}, "ts"),
        ({**ok, "id": "null-ts", "ts": None}, "ts"),
        ({**ok, "id": "huge-ts", "ts": 1e30}, "ts"),
        ({**ok, "id": "future-ts", "ts": (now + timedelta(hours=1)).isoformat()}, "ts"),
        ({**ok, "id": "ancient-ts", "ts": "1999-12-31T23:59:59Z"}, "ts"),
        ({**ok, "id": "negative", "input_tokens": -1}, "input_tokens"),
        ({**ok, "id": "negative-out", "output_tokens": -5}, "output_tokens"),
        ({**ok, "id": "cached", "input_tokens": 10, "cached_input_tokens": 11},
         "cached_input_tokens"),
        ({**ok, "id": "reasoning", "output_tokens": 10, "reasoning_tokens": 11},
         "reasoning_tokens"),
        ({**ok, "id": "total", "total_tokens": 141}, "total_tokens"),
        ({**ok, "id": "unknown", "prompt_tokens": 3}, "prompt_tokens"),
        ({**ok, "id": "str-tokens", "input_tokens": "100"}, "input_tokens"),
        ({**ok, "id": "float-tokens", "input_tokens": 1.5}, "input_tokens"),
        ({**ok, "id": "bool-estimated", "estimated": "yes"}, "estimated"),
        ({**ok, "id": "status", "status_code": 99}, "status_code"),
        ({**ok, "id": "call-type", "call_type": "batch"}, "call_type"),
        ({**ok, "id": "category", "model_category": "video"}, "model_category"),
        ({**ok, "id": "cost", "cost": "-0.01"}, "cost"),
        ({**ok, "id": "cost-places", "cost": "0.0000000001"}, "cost"),
        ({**ok, "id": "cost-nan", "cost": "NaN"}, "cost"),
        ({**ok, "id": "no-model"} | {"model": ""}, "model"),
        ({**ok, "id": "nul-model", "model": "a\x00b"}, "model"),
        ({**ok, "id": "nul\x00id"}, "id"),
        ({**ok, "id": "nul-key", "api_key_id": "k\x00"}, "api_key_id"),
        ({**ok, "id": "metadata", "metadata": {"nested": {"a": 1}}}, "metadata"),
        ({**ok, "id": "metadata-nan", "metadata": {"score": float("nan")}}, "metadata"),
        ({**ok, "id": "metadata-inf", "metadata": {"score": float("inf")}}, "metadata"),
        ({key: value for key, value in ok.items() if key != "ts"} | {"id": "no-ts"}, "ts"),
        ({key: value for key, value in ok.items() if key != "id"}, "id"),
        (["not", "an", "object"], None),
        (42, None),
    ]


def test_invalid_items_are_reported_one_by_one_and_valid_ones_kept(api: Api) -> None:
    now = datetime.now(UTC)
    bad = _bad_items(now)
    good = [event(f"good-{i}", now - timedelta(minutes=10 + i), api_key_id="k1")
            for i in range(len(bad) + 1)]
    items: list[Any] = []
    for i, (item, _) in enumerate(bad):  # interleaved: good, bad, good, bad, ..., good
        items += [good[i], item]
    items.append(good[-1])
    # Python's json writes NaN and Infinity: other services' JSON libraries do too.
    response = api.client.post("/api/v1/usage/events", headers=bearer(ADMIN_TOKEN),
                               content=json.dumps({"events": items}).encode(),
                               params={}, )
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["accepted"] == len(good) and result["duplicates"] == 0
    assert result["rejected"] == len(bad)
    assert len(result["errors"]) == len(bad)
    for error, (item, field) in zip(result["errors"], bad, strict=True):
        assert items[error["index"]] is item or items[error["index"]] == item
        assert error["id"] == (item.get("id") if isinstance(item, dict) else None)
        assert error["field"] == field, error
        assert error["message"]

    window = recent_window(now)
    stored = api.ok("/api/v1/usage/calls", {**window, "limit": 1000})["data"]
    assert sorted(r["id"] for r in stored) == sorted(e["id"] for e in good)
    cards = api.ok("/api/v1/usage/summary", window)["cards"]
    assert cards["model_calls"] == len(good)
    assert cards["input_tokens"] == 100 * len(good)
    # What was stored can be exported as valid JSON, line by line.
    for line in api.get("/api/v1/usage/export", {**window, "format": "ndjson"}).text.splitlines():
        json.loads(line, parse_constant=lambda name: pytest.fail(f"{name} in an export"))


def test_an_event_older_than_the_purge_floor_is_refused_with_an_error_naming_ts(
        api: Api) -> None:
    now = datetime.now(UTC)
    old = [event(f"old-{i}", now - timedelta(days=40, minutes=i)) for i in range(3)]
    assert api.post_events(old).json()["accepted"] == 3
    purge_expired(Ledger(api.ledger.db, raw_retention_days=30))
    floor = datetime.fromtimestamp(api.ledger.purge_floor_us() / 1_000_000, UTC)

    fresh = event("fresh", now - timedelta(minutes=3))
    answer = api.post_events([old[0], fresh, old[2]]).json()
    message = (f"older than the ledger's purge floor {floor:%Y-%m-%dT%H:%M:%SZ}; raw records "
               "before it were purged, so this id cannot be checked for duplicates")
    assert answer == {"accepted": 1, "duplicates": 0, "rejected": 2, "refused": 2, "errors": [
        {"index": 0, "id": "old-0", "field": "ts", "message": message},
        {"index": 2, "id": "old-2", "field": "ts", "message": message}]}
    window = {"start": (now - timedelta(days=45)).date().isoformat(),
              "end": (now + timedelta(days=1)).date().isoformat()}
    assert api.ok("/api/v1/usage/summary", window)["cards"]["model_calls"] == 4


def test_limits_on_the_batch_and_the_body(db: Any) -> None:
    now = datetime.now(UTC)
    with running_app(db, ingest_max_events=3) as api:
        events = [event(f"b{i}", now - timedelta(minutes=1)) for i in range(4)]
        too_many = api.post_events(events)
        assert too_many.status_code == 413
        assert too_many.json()["error"]["param"] == "events"
        assert api.post_events(events[:3]).json()["accepted"] == 3

        # The byte limit is checked on the declared length and on what actually arrives.
        padding = {"id": "big", "ts": now.isoformat(), "model": "m",
                   "metadata": {"pad": "x" * 3000}}
        body = json.dumps({"events": [padding] * 3, "padding": "y" * 20_000}).encode()
        large = api.client.post("/api/v1/usage/events", content=body,
                                headers=bearer(ADMIN_TOKEN))
        assert large.status_code == 413
        assert large.json()["error"]["type"] == "request_too_large"

        def chunks() -> Any:
            for _ in range(10):
                yield b" " * 4096

        streamed = api.client.post("/api/v1/usage/events", content=chunks(),
                                   headers=bearer(ADMIN_TOKEN))
        assert streamed.status_code == 413

        for body_text, param in ((b"{not json", None), (b"\xff\xfe", None),
                                 (b"[]", "events"), (b'"events"', "events"),
                                 (b'{"events": {}}', "events"), (b'{"events": null}', "events"),
                                 (b"", None)):
            response = api.client.post("/api/v1/usage/events", content=body_text,
                                       headers=bearer(ADMIN_TOKEN))
            assert response.status_code == 400, body_text
            assert response.json()["error"]["param"] == param
        window = recent_window(now)
        assert api.ok("/api/v1/usage/summary", window)["cards"]["model_calls"] == 3


def test_an_event_without_cost_is_priced_from_the_price_table(db: Any) -> None:
    now = datetime.now(UTC)
    set_price(db, Price(model=MODEL, effective_from_us=0,
                        input_per_million=Decimal("0.50"), output_per_million=Decimal("2.00"),
                        cached_input_per_million=Decimal("0.10")))
    set_price(db, Price(model="rerank-svc", effective_from_us=0,
                        input_per_million=Decimal(0), output_per_million=Decimal(0),
                        per_call=Decimal("0.0003")))
    with running_app(db) as api:
        base = {"ts": (now - timedelta(minutes=3)).isoformat(), "model": MODEL}
        result = api.post_events([
            # (800 * 0.50 + 200 * 0.10 + 500 * 2.00) / 1e6 = 0.00142
            {**base, "id": "priced", "input_tokens": 1000, "cached_input_tokens": 200,
             "output_tokens": 500},
            # A reported cost wins over the table.
            {**base, "id": "reported", "input_tokens": 1000, "output_tokens": 500,
             "cost": "0.5"},
            # 1 token at 0.50 per million: exact, no float rounding.
            {**base, "id": "one-token", "input_tokens": 1},
            {**base, "id": "unpriced", "model": "no-price", "input_tokens": 10**6},
            {**base, "id": "service", "model": "rerank-svc", "call_type": "service"},
            # The per-call price is for calls that succeeded; tokens are charged regardless.
            {**base, "id": "service-failed", "model": "rerank-svc", "call_type": "service",
             "status_code": 503},
            {**base, "id": "failed", "input_tokens": 1000, "status_code": 500},
        ])
        assert result.json()["accepted"] == 7
        window = recent_window(now)
        costs = {r["id"]: r["cost"] for r in api.ok("/api/v1/usage/calls", window)["data"]}
        assert costs == {"one-token": "0.0000005", "priced": "0.00142", "reported": "0.50",
                         "unpriced": "0.00", "service": "0.0003", "service-failed": "0.00",
                         "failed": "0.0005"}
        summary = api.ok("/api/v1/usage/summary", window)
        assert summary["cards"]["cost"] == {"amount": "0.5022205", "currency": "USD"}


def test_a_tiny_cost_is_shown_as_a_plain_decimal(sqlite_db: Any) -> None:
    with running_app(sqlite_db) as api:
        api.post_events([event("tiny", datetime.now(UTC) - timedelta(minutes=1),
                               cost="0.00000002")])
        record = api.ok("/api/v1/usage/calls")["data"][0]
        assert record["cost"] == "0.00000002"


def test_cache_writes_units_and_upstream_models_flow_to_every_view(api: Api) -> None:
    """Ingested with the new fields, they come back in the records, the cards, the
    breakdown (by upstream model too), the trend and the filters."""
    now = datetime.now(UTC)
    window = {"start": (now - timedelta(hours=1)).isoformat(),
              "end": (now + timedelta(minutes=1)).isoformat()}
    ts = (now - timedelta(minutes=5)).isoformat()
    answer = api.post_events([
        {"id": "msg", "ts": ts, "model": "claude", "input_tokens": 100,
         "cached_input_tokens": 30, "cache_write_tokens": 50, "output_tokens": 5,
         "upstream_model": "claude-sonnet-4-5-20250929"},
        {"id": "img", "ts": ts, "model": "dall-e", "units": 3, "unit": "image",
         "call_type": "service", "upstream_model": "dall-e-3"},
        {"id": "tts", "ts": ts, "model": "tts", "units": 120, "unit": "character"},
        {"id": "bad", "ts": ts, "model": "m", "units": 1},
    ]).json()
    assert answer["accepted"] == 3
    assert [(e["id"], e["field"]) for e in answer["errors"]] == [("bad", "unit")]

    cards = api.ok("/api/v1/usage/summary", window)["cards"]
    assert cards["cache_write_tokens"] == 50
    assert cards["units"] == {"image": 3, "character": 120}

    rows = api.ok("/api/v1/usage/breakdown", {**window, "group_by": "upstream_model"})["rows"]
    by_upstream = {row["upstream_model"]: (row["calls"], row["cache_write_tokens"],
                                           row["units"]) for row in rows}
    assert by_upstream == {"claude-sonnet-4-5-20250929": (1, 50, {}),
                           "dall-e-3": (1, 0, {"image": 3}), None: (1, 0, {"character": 120})}

    filtered = api.ok("/api/v1/usage/summary", {**window, "upstream_model": "dall-e-3"})
    assert filtered["cards"]["model_calls"] == 1 and filtered["cards"]["units"] == {"image": 3}

    trend = api.ok("/api/v1/usage/trend", {**window, "metric": "units", "unit": "character",
                                           "granularity": "hour"})
    assert trend["unit"] == "character"
    assert [(s["name"], s["total"]) for s in trend["series"]] == [
        ("tts", 120), ("claude", 0), ("dall-e", 0)]  # a series per model with calls
    writes = api.ok("/api/v1/usage/trend", {**window, "metric": "cache_write_tokens"})
    assert [(s["name"], s["total"]) for s in writes["series"] if s["total"]] == [("claude", 50)]

    records = {r["id"]: r for r in api.ok("/api/v1/usage/calls", window)["data"]}
    assert (records["msg"]["cache_write_tokens"], records["msg"]["upstream_model"]) == (
        50, "claude-sonnet-4-5-20250929")
    assert (records["img"]["units"], records["img"]["unit"]) == (3, "image")
