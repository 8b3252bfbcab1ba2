"""Reported events become records: validated one by one, priced, stored once per id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from tallygate.domain.pricing import Price
from tallygate.ledger.ingest import IngestResult, ingest_events, validate_events
from tallygate.ledger.service import Ledger
from tallygate.store import prices as price_store
from tallygate.store.usage import CallFilter, iter_calls

US = 1_000_000


def _stored(ledger: Ledger) -> dict[str, Any]:
    return {r.id: r for r in iter_calls(ledger.db, CallFilter(), 0, 2**62)}


def test_events_become_exact_records(ledger: Ledger) -> None:
    kathmandu = timezone(timedelta(hours=5, minutes=45))
    when = datetime(2026, 3, 1, 17, 45, 0, 654321, tzinfo=kathmandu)
    result = ingest_events(ledger, [
        {"id": "a", "ts": when.isoformat(), "model": "  m  ", "endpoint": "/v1/embeddings",
         "input_tokens": 7, "cost": "0.000000001", "latency_ms": 12, "ttft_ms": 3,
         "estimated": True, "metadata": {"team": "x", "n": 1, "ok": True, "none": None}},
        {"id": "b", "ts": 1772366400.25, "model": "m", "call_type": "internal",
         "model_category": "rerank", "endpoint": "/v1/embeddings", "status_code": 429,
         "input_tokens": 10, "cached_input_tokens": 10, "output_tokens": 4,
         "reasoning_tokens": 4, "total_tokens": 14, "api_key_id": "k1"},
    ])
    assert result.as_dict() == {"accepted": 2, "duplicates": 0, "rejected": 0, "refused": 0,
                                "errors": []}
    stored = _stored(ledger)
    a, b = stored["a"], stored["b"]
    assert a.ts_us == int(datetime(2026, 3, 1, 12, 0, tzinfo=UTC).timestamp()) * US + 654321
    assert a.model == "m" and a.model_category == "embedding"  # from the endpoint
    assert a.cost_nano == 1 and a.total_tokens == 7 and a.estimated is True
    assert (a.latency_ms, a.ttft_ms, a.call_type, a.api_key_id) == (12, 3, "model", None)
    assert a.metadata == {"team": "x", "n": 1, "ok": True, "none": None}
    assert b.ts_us == 1772366400 * US + 250000
    assert b.model_category == "rerank"  # said explicitly: wins over the endpoint
    assert (b.status_code, b.cached_input_tokens, b.reasoning_tokens) == (429, 10, 4)
    assert b.call_type == "internal" and b.api_key_id == "k1"


def test_prices_apply_as_they_were_when_the_call_was_made(ledger: Ledger) -> None:
    change = datetime(2026, 6, 1, tzinfo=UTC)
    for start, price in ((0, "1.00"), (int(change.timestamp()) * US, "3.00")):
        price_store.set_price(ledger.db, Price(
            model="m", effective_from_us=start, input_per_million=Decimal(price),
            output_per_million=Decimal(price), per_call=Decimal("0.01")))
    before, after = change - timedelta(microseconds=1), change
    records, errors = validate_events(ledger, [
        {"id": "before", "ts": before.isoformat(), "model": "m", "input_tokens": 500_000},
        {"id": "after", "ts": after.isoformat(), "model": "m", "input_tokens": 500_000},
        {"id": "after-failed", "ts": after.isoformat(), "model": "m", "input_tokens": 500_000,
         "status_code": 500},
        {"id": "given", "ts": after.isoformat(), "model": "m", "input_tokens": 500_000,
         "cost": "0"},
    ])
    assert errors == []
    costs = {r.id: r.cost_nano for r in records}
    assert costs == {"before": 510_000_000, "after": 1_510_000_000,
                     "after-failed": 1_500_000_000, "given": 0}


def test_errors_name_index_id_and_field_and_count_from_first_index(ledger: Ledger) -> None:
    now = datetime.now(UTC)
    items: list[Any] = [
        {"id": "ok", "ts": now.isoformat(), "model": "m"},
        {"id": "bad-ts", "ts": "2026-01-01 10:00", "model": "m"},
        {"id": 17, "ts": now.isoformat(), "model": "m"},
        None,
        {"id": "bad-meta", "ts": now.isoformat(), "model": "m", "metadata": {"x": [1]}},
        {"id": "big", "ts": now.isoformat(), "model": "m", "input_tokens": 10**10},
    ]
    result = ingest_events(ledger, items, first_index=100)
    assert (result.accepted, result.duplicates) == (1, 0)
    assert [(e.index, e.id, e.field) for e in result.errors] == [
        (101, "bad-ts", "ts"), (102, None, "id"), (103, None, None),
        (104, "bad-meta", "metadata"), (105, "big", "input_tokens")]
    assert all(e.message for e in result.errors)
    assert result.as_dict()["rejected"] == 5
    assert set(_stored(ledger)) == {"ok"}


def test_only_invalid_items_store_nothing_and_retries_count_once(ledger: Ledger) -> None:
    assert ingest_events(ledger, [{"id": "x"}, {"model": "m"}]).accepted == 0
    assert ingest_events(ledger, []).as_dict() == {"accepted": 0, "duplicates": 0,
                                                   "rejected": 0, "refused": 0, "errors": []}
    assert _stored(ledger) == {}

    now = datetime.now(UTC)
    batch = [{"id": f"e{i}", "ts": (now - timedelta(seconds=i)).isoformat(), "model": "m",
              "input_tokens": i} for i in range(50)]
    total = IngestResult()
    for _ in range(3):
        total.add(ingest_events(ledger, batch))
    assert (total.accepted, total.duplicates) == (50, 100)
    assert len(_stored(ledger)) == 50


def test_cache_writes_units_and_the_upstream_model_are_stored_and_priced(
        ledger: Ledger) -> None:
    # input 1 000 000 = 200 000 uncached + 300 000 cache reads + 500 000 cache writes.
    price_store.set_price(ledger.db, Price(
        model="claude", effective_from_us=0, input_per_million=Decimal("3"),
        cached_input_per_million=Decimal("0.3"), cache_write_per_million=Decimal("3.75"),
        output_per_million=Decimal("15"), per_unit=Decimal("0.000123457")))
    now = datetime.now(UTC).isoformat()
    result = ingest_events(ledger, [
        {"id": "cached", "ts": now, "model": "claude", "input_tokens": 1_000_000,
         "cached_input_tokens": 300_000, "cache_write_tokens": 500_000, "output_tokens": 1000,
         "upstream_model": "claude-sonnet-4-5-20250929"},
        {"id": "images", "ts": now, "model": "claude", "units": 7, "unit": "image"},
        {"id": "given", "ts": now, "model": "claude", "units": 3, "unit": "page",
         "cost": "0.5"},
    ])
    assert result.as_dict()["errors"] == [] and result.accepted == 3
    stored = _stored(ledger)
    cached = stored["cached"]
    assert (cached.cache_write_tokens, cached.units, cached.unit) == (500_000, 0, None)
    assert cached.upstream_model == "claude-sonnet-4-5-20250929"
    # 0.2 × 3 + 0.3 × 0.3 + 0.5 × 3.75 + 0.001 × 15 = 0.6 + 0.09 + 1.875 + 0.015
    assert cached.cost_nano == 2_580_000_000
    images = stored["images"]
    assert (images.units, images.unit, images.upstream_model) == (7, "image", None)
    assert images.cost_nano == 864_199  # 7 × 0.000123457 = 0.000864199
    assert stored["given"].cost_nano == 500_000_000 and stored["given"].unit == "page"
    shown = cached.as_dict()
    assert (shown["cache_write_tokens"], shown["units"], shown["unit"],
            shown["upstream_model"]) == (500_000, 0, None, "claude-sonnet-4-5-20250929")


def test_cache_writes_units_and_upstream_model_are_validated_by_field(ledger: Ledger) -> None:
    now = datetime.now(UTC).isoformat()
    base = {"ts": now, "model": "m", "input_tokens": 10}
    items: list[Any] = [
        {**base, "id": "writes-past-input", "cached_input_tokens": 4, "cache_write_tokens": 7},
        {**base, "id": "writes-negative", "cache_write_tokens": -1},
        {**base, "id": "writes-text", "cache_write_tokens": "3"},
        {**base, "id": "units-without-unit", "units": 2},
        {**base, "id": "bad-unit", "units": 2, "unit": "tokens"},
        {**base, "id": "units-negative", "units": -2, "unit": "image"},
        {**base, "id": "upstream-empty", "upstream_model": ""},
        {**base, "id": "upstream-long", "upstream_model": "x" * 201},
        {**base, "id": "upstream-nul", "upstream_model": "a\x00b"},
        {**base, "id": "ok", "cached_input_tokens": 4, "cache_write_tokens": 6, "units": 1,
         "unit": "request", "upstream_model": "m-2026"},
    ]
    result = ingest_events(ledger, items)
    assert [(e.id, e.field) for e in result.errors] == [
        ("writes-past-input", "cache_write_tokens"), ("writes-negative", "cache_write_tokens"),
        ("writes-text", "cache_write_tokens"), ("units-without-unit", "unit"),
        ("bad-unit", "unit"), ("units-negative", "units"),
        ("upstream-empty", "upstream_model"), ("upstream-long", "upstream_model"),
        ("upstream-nul", "upstream_model")]
    assert result.accepted == 1 and set(_stored(ledger)) == {"ok"}
