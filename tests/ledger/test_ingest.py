"""Reported events become records: validated one by one, priced, stored once per id."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any

from tallygate.ledger.ingest import IngestResult, ingest_events, validate_events
from tallygate.ledger.pricing import Price
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
