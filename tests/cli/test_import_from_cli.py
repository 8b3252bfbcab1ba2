"""``tallygate import --from KIND SOURCE``: other gateways' histories from the command line."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.cli.conftest import Run
from tests.ledger.importers.sources import fill, newapi_logs, newapi_rows, oneapi_logs


def test_the_summary_counts_rows_imports_and_skips(sqlite_cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "one-api.db"
    rows, expected, skipped = newapi_rows("one-api", 90, 4)
    future = dict(rows[-1], id=len(rows) + 1, type=2, model_name="gpt-4o",
                  created_at=int(time.time()) + 7 * 86400)
    fill(f"sqlite:///{path}", oneapi_logs, [*rows, future])

    first = sqlite_cli("import", "--from", "one-api", str(path))
    assert first.exit_code == 1, first.output  # the ledger refused one record
    out = first.stdout
    assert (f"rows read {len(rows) + 1}, imported {len(expected)}, duplicates 0, "
            f"skipped {sum(skipped.values())}, rejected 1") in out
    for reason, count in skipped.items():
        assert f"skipped {count}: {reason}" in out
    assert "keys created 3 (disabled, tagged imported)" in out
    assert f"rejected one-api-{len(rows) + 1}: ts: is in the future" in out

    fill(f"sqlite:///{path}", oneapi_logs, rows)
    again = sqlite_cli("import", "--from", "one-api", str(path))
    assert again.exit_code == 0, again.output
    assert f"imported 0, duplicates {len(expected)}," in again.stdout
    assert "keys created" not in again.stdout

    listed = sqlite_cli("keys", "list").stdout
    assert "3 API keys" in listed  # made once; disabled and tagged: tests/ledger/importers


def test_quota_per_unit_and_latency_units_from_the_cli(sqlite_cli: Run, tmp_path: Path) -> None:
    path = tmp_path / "new-api.db"
    fill(f"sqlite:///{path}", newapi_logs, [{
        "id": 1, "created_at": int(time.time()) - 60, "type": 2, "token_name": "t",
        "token_id": 4, "model_name": "gpt-4o", "quota": 1234, "prompt_tokens": 10,
        "completion_tokens": 5, "use_time": 3, "other": "{}"}])
    result = sqlite_cli("import", "--from", "new-api", "--quota-per-unit", "1000", str(path))
    assert result.exit_code == 0, result.output
    calls = json.loads(sqlite_cli("usage", "calls", "--json", "--period", "1d").stdout)
    call = calls["data"][0] if isinstance(calls, dict) else calls[0]
    assert call["id"] == "new-api-1" and call["cost"] == "1.234"
    assert call["latency_ms"] == 3000  # New API's use_time is in seconds


@pytest.mark.parametrize(("args", "message"), [
    (["--from", "portkey", "x.db"], "--from: must be one of litellm, new-api, one-api"),
    (["--from", "new-api", "--quota-per-unit", "0", "x.db"], "--quota-per-unit:"),
    (["--from", "new-api", "--quota-per-unit", "lots", "x.db"], "--quota-per-unit:"),
    (["--from", "new-api", "missing.db"], "SOURCE: missing.db: no such file"),
    (["--from", "new-api", "--format", "csv", "x.db"], "--format: only for call-record"),
    (["--from", "litellm", "missing.csv"], "SOURCE: missing.csv: no such file"),
    (["--from", "one-api", "oracle://db/x"], "not a PostgreSQL, MySQL/MariaDB or SQLite"),
])
def test_bad_arguments_are_named(sqlite_cli: Run, args: list[str], message: str) -> None:
    result = sqlite_cli("import", *args)
    assert result.exit_code == 2 and message in result.output, result.output


@pytest.mark.postgres
def test_an_unreachable_database_is_named_without_its_password(
        sqlite_cli: Run, source_postgres_url: str) -> None:
    url = source_postgres_url.replace("postgres@", "postgres:hunter2@") + "_nope"
    result = sqlite_cli("import", "--from", "new-api", url)
    assert result.exit_code == 2 and "SOURCE: postgresql://postgres:***@" in result.output
    assert "hunter2" not in result.output


@pytest.mark.mysql
def test_a_database_without_the_table_is_named(sqlite_cli: Run, mysql_url: str) -> None:
    fill(mysql_url, oneapi_logs, [])
    result = sqlite_cli("import", "--from", "litellm", mysql_url)
    assert result.exit_code == 2 and "has no table LiteLLM_SpendLogs" in result.output
