"""Parquet exports (the ``parquet`` extra): the same records and views, with typed columns."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow.parquet as pq
import pytest

from tallygate.ledger.export import CALL_FIELDS
from tests.api.support import Api, recent_window, varied_records


@pytest.fixture
def seeded(api: Api) -> tuple[Api, dict[str, str]]:
    now = datetime.now(UTC)
    key = api.create_key(name="parquet team")
    api.ledger.store(varied_records(now, keys=(key["id"], "key-b", None), count=45))
    return api, recent_window(now)


def _parquet(api: Api, query: dict[str, Any]) -> list[dict[str, Any]]:
    response = api.get("/api/v1/usage/export", {**query, "format": "parquet"})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    assert response.headers["content-disposition"].endswith('.parquet"')
    rows: list[dict[str, Any]] = pq.read_table(io.BytesIO(response.content)).to_pylist()
    return rows


def test_call_records_as_parquet(seeded: tuple[Api, dict[str, str]]) -> None:
    api, window = seeded
    for filters in ({}, {"model": "bge-m3", "call_type": ["model", "internal"]}):
        query = {**window, **filters}
        records = api.ok("/api/v1/usage/calls", {**query, "limit": 1000})["data"]
        rows = _parquet(api, {**query, "what": "calls"})
        assert records and len(rows) == len(records)
        for row, record in zip(rows, records, strict=True):
            assert list(row) == list(CALL_FIELDS)
            assert row["ts"].strftime("%Y-%m-%dT%H:%M:%S.%fZ") == record["ts"]
            assert row["cost"] == Decimal(record["cost"])  # exact, decimal(38, 9)
            assert (None if row["metadata"] is None else json.loads(row["metadata"])) == \
                record["metadata"]
            for name in CALL_FIELDS:
                if name not in ("ts", "cost", "metadata"):
                    assert row[name] == record[name], name
    schema = pq.read_schema(io.BytesIO(api.get("/api/v1/usage/export", {
        **window, "format": "parquet", "what": "calls"}).content))
    assert str(schema.field("cost").type) == "decimal128(38, 9)"
    assert str(schema.field("ts").type) == "timestamp[us, tz=UTC]"
    empty = _parquet(api, {"start": "2026-01-01", "end": "2026-01-02", "what": "calls"})
    assert empty == []


def test_views_as_parquet(seeded: tuple[Api, dict[str, str]]) -> None:
    api, window = seeded
    breakdown = api.ok("/api/v1/usage/breakdown", {**window, "group_by": "model"})
    rows = _parquet(api, {**window, "what": "breakdown", "group_by": "model"})
    assert [r["model"] for r in rows] == [r["model"] for r in breakdown["rows"]]
    assert [r["calls"] for r in rows] == [r["calls"] for r in breakdown["rows"]]
    assert [r["cost"] for r in rows] == [r["cost"]["amount"] for r in breakdown["rows"]]
    trend = api.ok("/api/v1/usage/trend", {**window, "metric": "cost"})
    rows = _parquet(api, {**window, "what": "trend", "metric": "cost"})
    assert [r["bucket"] for r in rows] == trend["buckets"]
    summary = _parquet(api, {**window, "what": "summary"})
    cards = {r["card"]: r["value"] for r in summary}
    assert cards["model_calls"] == str(api.ok("/api/v1/usage/summary", window)["cards"][
        "model_calls"])


def test_without_pyarrow_parquet_is_a_clear_400(api: Api,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if it were not installed
    response = api.get("/api/v1/usage/export", {"format": "parquet"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "format" and "pip install 'tallygate[parquet]'" in error["message"]
