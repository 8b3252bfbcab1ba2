"""``GET /api/v1/usage/export?format=focus``: a FOCUS 1.2 dataset that passes the column
rules and whose BilledCost adds up to the ledger's cost for the range exactly."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from tallygate.domain.pricing import Price
from tallygate.ledger.focus import COLUMNS
from tests.api.support import Api, recent_window, record, varied_records
from tests.ledger.focus_rules import check_focus_rows


@pytest.fixture
def seeded(api: Api) -> tuple[Api, dict[str, str], str]:
    now = datetime.now(UTC)
    key = api.create_key(name="team key", tags=["team:alpha", "prod"])
    api.ledger.set_price(Price("gpt-4o-mini", 0, Decimal("0.15"), Decimal("0.6"),
                               Decimal("0.075")))
    records = varied_records(now, keys=(key["id"], "key-b", None), count=45)
    records.append(record("img", now - timedelta(hours=1), key=key["id"], model="img-m",
                          input_tokens=0, output_tokens=0, units=2, unit="image",
                          cost_nano=80_000_000))
    api.ledger.store(records)
    return api, recent_window(now), key["id"]


def _focus_csv(api: Api, query: dict[str, Any], token: str | None = None) -> list[dict[str, str]]:
    params = {**query, "format": "focus"}
    response = api.get("/api/v1/usage/export", params) if token is None else \
        api.get("/api/v1/usage/export", params, token=token)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/csv")
    assert response.headers["content-disposition"].endswith('tallygate-focus.csv"')
    reader = csv.DictReader(io.StringIO(response.text))
    assert tuple(reader.fieldnames or ()) == COLUMNS
    return list(reader)


def test_focus_csv_passes_the_rules_and_adds_up(seeded: tuple[Api, dict[str, str], str]
                                                 ) -> None:
    api, window, key_id = seeded
    rows = _focus_csv(api, window)
    check_focus_rows(rows)
    summary = api.ok("/api/v1/usage/summary", window)
    assert sum(Decimal(r["BilledCost"]) for r in rows) == \
        Decimal(summary["cards"]["cost"]["amount"])
    tagged = [r for r in rows if r["SubAccountId"] == key_id]
    assert tagged and {r["Tags"] for r in tagged} == {'{"team":"alpha","prod":true}'}
    assert {r["SubAccountName"] for r in tagged} == {"team key"}
    images = [r for r in tagged if r["ServiceName"] == "img-m"]
    assert [(r["ConsumedQuantity"], r["BilledCost"]) for r in images] == [("2", "0.08")]
    # Filters apply as to every export; a key's own rows are the filtered ones.
    only = _focus_csv(api, {**window, "api_key_id": key_id})
    assert only and {r["SubAccountId"] for r in only} == {key_id}
    assert sum(Decimal(r["BilledCost"]) for r in only) == sum(
        Decimal(r["BilledCost"]) for r in tagged)


def test_focus_parquet_has_typed_columns(seeded: tuple[Api, dict[str, str], str]) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    api, window, _ = seeded
    response = api.get("/api/v1/usage/export", {**window, "format": "focus",
                                                "focus_format": "parquet"})
    assert response.status_code == 200, response.text
    table = pq.read_table(io.BytesIO(response.content))
    assert tuple(table.schema.names) == COLUMNS
    assert str(table.schema.field("BilledCost").type) == "decimal128(38, 20)"
    # Parquet has no seconds unit: whole seconds are stored as milliseconds.
    assert str(table.schema.field("ChargePeriodStart").type) == "timestamp[ms, tz=UTC]"
    rows = table.to_pylist()
    csv_rows = _focus_csv(api, window)
    assert len(rows) == len(csv_rows)
    assert sum(r["BilledCost"] for r in rows) == sum(Decimal(r["BilledCost"]) for r in csv_rows)


def test_focus_parameters_are_checked(api: Api) -> None:
    response = api.get("/api/v1/usage/export", {"format": "focus", "focus_format": "xlsx"})
    assert response.status_code == 400 and "focus_format" in response.text
    empty = _focus_csv(api, {"start": "2026-01-01", "end": "2026-01-02"})
    assert empty == []


def test_a_range_before_raw_retention_is_refused(db: Any) -> None:
    from tests.api.support import running_app

    with running_app(db, raw_retention_days=3) as api:
        response = api.get("/api/v1/usage/export", {"format": "focus", "period": "30d"})
        assert response.status_code == 400 and "start" in response.text
        assert api.get("/api/v1/usage/export", {"format": "focus", "period": "1d"}
                       ).status_code == 200
