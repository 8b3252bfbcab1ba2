"""Importing LiteLLM's ``LiteLLM_SpendLogs``: from its PostgreSQL table and a CSV export."""

from __future__ import annotations

from pathlib import Path

import pytest

from tallygate.importers import SourceError, import_history
from tallygate.importers.litellm import call_category, map_row
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tallygate.store.usage import CallFilter, iter_calls
from tests.ledger.importers.sources import (
    check_ledger,
    fill,
    litellm_rows,
    litellm_spendlogs,
    write_litellm_csv,
)


def _check_keys(db: Database) -> None:
    keys = KeyService(db).list()
    assert sorted(k.name for k in keys) == ["litellm key 77d2e977", "search-team"]
    assert all(k.status == "disabled" and "imported" in k.tags for k in keys)
    # The source's key hash is not written anywhere on the key.
    assert not any("a3f0c1a3f0c1" in tag for k in keys for tag in k.tags)


def _import_twice(ledger: Ledger, source: str, rows: int, expected: int,
                  skipped: dict[str, int]) -> None:
    first = import_history(ledger, "litellm", source, batch_size=29)
    assert (first.rows_read, first.imported, first.duplicates) == (rows, expected, 0)
    assert dict(first.skipped) == skipped and first.keys_created == 2
    again = import_history(ledger, "litellm", source)
    assert (again.imported, again.duplicates, again.keys_created) == (0, expected, 0)


def test_a_csv_export_imports_once(tmp_path: Path, ledger: Ledger) -> None:
    rows, expected, skipped = litellm_rows(150)
    path = tmp_path / "LiteLLM_SpendLogs.csv"
    write_litellm_csv(path, rows)
    _import_twice(ledger, str(path), len(rows), len(expected), skipped)
    check_ledger(ledger, expected)
    _check_keys(ledger.db)


@pytest.mark.postgres
def test_the_postgres_table_imports_once(source_postgres_url: str, sqlite_db: Database) -> None:
    rows, expected, skipped = litellm_rows(170, seed=5)
    fill(source_postgres_url, litellm_spendlogs, rows)
    ledger = Ledger(sqlite_db)
    _import_twice(ledger, source_postgres_url, len(rows), len(expected), skipped)
    check_ledger(ledger, expected)
    _check_keys(sqlite_db)


def test_call_types_map_onto_the_ledger_categories() -> None:
    assert call_category("acompletion") == ("chat", "/v1/chat/completions")
    assert call_category("completion")[0] == "chat"
    assert call_category("aembedding") == ("embedding", "/v1/embeddings")
    assert call_category("aimage_generation")[0] == "image"
    assert call_category("atranscription")[0] == "audio"
    assert call_category("aspeech")[0] == "audio"
    assert call_category("arerank")[0] == "rerank"
    assert call_category("atext_completion")[0] == "completion"
    assert call_category("pass_through_endpoint") == ("other", None)


def test_a_row_maps_field_by_field() -> None:
    rows, _, _ = litellm_rows(4)
    row = dict(rows[1], call_type="aembedding", completionStartTime=None)
    mapped = map_row(row)
    event = mapped.event
    assert event["id"] == "litellm-" + row["request_id"]
    assert event["model"] == "gpt-4o-2024-08-06" and event["model_category"] == "embedding"
    assert event["ts"].tzinfo is not None and event["ts"].replace(tzinfo=None) == row["startTime"]
    assert event["latency_ms"] == round((row["endTime"] - row["startTime"]).total_seconds()
                                        * 1000)
    assert event["metadata"]["model_group"] == "gpt-4o"
    assert mapped.key is not None and mapped.key.identity == row["api_key"]
    streamed = map_row(dict(row, completionStartTime=row["startTime"].replace(
        microsecond=0) + (row["endTime"] - row["startTime"]) / 2))
    assert 0 < streamed.event["ttft_ms"] < streamed.event["latency_ms"]


def test_a_missing_or_foreign_source_is_named(tmp_path: Path, sqlite_db: Database) -> None:
    ledger = Ledger(sqlite_db)
    with pytest.raises(SourceError, match="nowhere.csv"):
        import_history(ledger, "litellm", str(tmp_path / "nowhere.csv"))
    other = tmp_path / "calls.csv"
    other.write_text("id,ts,model\n1,2026-01-01T00:00:00Z,m\n")
    with pytest.raises(SourceError, match="no request_id column"):
        import_history(ledger, "litellm", str(other))
    with pytest.raises(SourceError, match="empty.db: no such SQLite file"):
        import_history(ledger, "litellm", f"sqlite:///{tmp_path / 'empty.db'}")
    with pytest.raises(SourceError, match="has no table LiteLLM_SpendLogs"):
        import_history(ledger, "litellm", sqlite_db.url)
    assert not list(iter_calls(sqlite_db, CallFilter(), 0, 2**62))
