"""``tallygate usage ...``: the API's figures, for the same filters, and its refusals."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from tallygate.cli.usage import _change
from tallygate.store.database import Database
from tests.api.support import recent_window, running_app, varied_records
from tests.cli.conftest import Run

# (command, CLI filters, the API endpoint and the same query): every command, every filter.
CASES: list[tuple[list[str], list[str], str, dict[str, Any]]] = [
    (["summary"], [], "/api/v1/usage/summary", {}),
    (["summary"], ["--key", "KEY", "--tz", "Asia/Kolkata"], "/api/v1/usage/summary",
     {"api_key_id": "KEY", "tz": "Asia/Kolkata"}),
    (["trend"], ["--model", "bge-m3", "--model", "cltech/deepseek-r1-32b"],
     "/api/v1/usage/trend", {"model": ["bge-m3", "cltech/deepseek-r1-32b"]}),
    (["trend", "--metric", "cost", "--granularity", "hour", "--group-by", "api_key"],
     ["--tz", "America/New_York"], "/api/v1/usage/trend",
     {"metric": "cost", "granularity": "hour", "group_by": "api_key",
      "tz": "America/New_York"}),
    (["breakdown"], ["--call-type", "service", "--call-type", "internal"],
     "/api/v1/usage/breakdown", {"call_type": ["service", "internal"]}),
    (["breakdown", "--group-by", "api_key,call_type", "--sort", "-cost"],
     ["--category", "chat"], "/api/v1/usage/breakdown",
     {"group_by": "api_key,call_type", "sort": "-cost", "model_category": "chat"}),
    (["calls", "--limit", "25"], ["--key", "KEY", "--key", "key-b"], "/api/v1/usage/calls",
     {"limit": 25, "api_key_id": ["KEY", "key-b"]}),
    (["breakdown", "--group-by", "upstream_model"], ["--upstream-model", "bge-m3-2026"],
     "/api/v1/usage/breakdown", {"group_by": "upstream_model",
                                 "upstream_model": "bge-m3-2026"}),
    (["trend", "--metric", "units", "--unit", "image"], [], "/api/v1/usage/trend",
     {"metric": "units", "unit": "image"}),
    (["summary"], ["--upstream-model", "bge-m3-2026", "--upstream-model", "x"],
     "/api/v1/usage/summary", {"upstream_model": ["bge-m3-2026", "x"]}),
    (["calls"], ["--upstream-model", "bge-m3-2026"], "/api/v1/usage/calls",
     {"upstream_model": "bge-m3-2026"}),
]


def test_json_output_equals_the_api(db: Database, cli: Run) -> None:
    now = datetime.now(UTC)
    with running_app(db) as api:
        key = api.create_key(name="cli team")
        api.ledger.store(varied_records(now, keys=(key["id"], "key-b", None), count=45))
        window = recent_window(now)

        def named(value: Any) -> Any:
            if isinstance(value, list):
                return [named(v) for v in value]
            return key["id"] if value == "KEY" else value

        for command, filters, path, query in CASES:
            result = cli("usage", *command, *named(filters), "--start", window["start"],
                         "--end", window["end"], "--json")
            assert result.exit_code == 0, result.output
            from_cli = json.loads(result.stdout)
            from_api = api.ok(path, {**window, **{k: named(v) for k, v in query.items()}})
            if path.endswith("/calls"):
                from_api = from_api["data"]
            assert from_cli == from_api, (command, filters)
            assert from_cli != json.loads(cli("usage", *command, "--start", "2026-01-01",
                                              "--end", "2026-01-02", "--json").stdout)


def test_tables_for_people_show_the_figures(db: Database, cli: Run) -> None:
    now = datetime.now(UTC)
    with running_app(db) as api:
        api.ledger.store(varied_records(now, count=9))
        summary = api.ok("/api/v1/usage/summary", {"period": "3d"})
    result = cli("usage", "summary", "--period", "3d")
    assert result.exit_code == 0, result.output
    assert f"{summary['cards']['model_calls']:,}" in result.stdout
    assert summary["cards"]["cost"]["amount"] in result.stdout
    units = summary["cards"]["units"]
    assert units["image"] and units["second"]  # the records have both kinds
    assert f"{units['image']:,} image, {units['second']:,} second" in result.stdout
    assert "cache write tokens" in result.stdout
    for command, title in ((["trend", "--period", "3d", "--group-by", "api_key"],
                            "requests per day"),
                           (["breakdown", "--period", "3d", "--group-by", "api_key,model"],
                            "Breakdown by api_key, model"),
                           (["calls", "--period", "3d"], "9 newest calls")):
        result = cli("usage", *command)
        assert result.exit_code == 0, (command, result.output)
        assert title in result.stdout, command
    empty = cli("usage", "summary", "--start", "2026-01-01", "--end", "2026-01-02")
    assert empty.exit_code == 0 and "no data" in empty.stdout


@pytest.mark.parametrize(("args", "option"), [
    (["summary", "--period", "2d"], "--period"),
    (["summary", "--period", "7d", "--start", "2026-01-01"], "--period"),
    (["summary", "--start", "yesterday"], "--start"),
    (["summary", "--end", "2026-13-01"], "--end"),
    (["summary", "--start", "2026-02-01", "--end", "2026-01-01"], "--end"),
    (["summary", "--start", "0001-01-01", "--end", "0001-01-02"], "--start"),
    (["summary", "--tz", "Mars/Olympus_Mons"], "--tz"),
    (["summary", "--call-type", "batch"], "--call-type"),
    (["summary", "--category", "video"], "--category"),
    (["trend", "--metric", "calls"], "--metric"),
    (["trend", "--metric", "units"], "--unit"),
    (["trend", "--granularity", "week"], "--granularity"),
    (["trend", "--granularity", "minute", "--period", "30d"], "--granularity"),
    (["trend", "--group-by", "owner"], "--group-by"),
    (["breakdown", "--group-by", "owner"], "--group-by"),
    (["breakdown", "--group-by", "model,api_key,call_type"], "--group-by"),
    (["breakdown", "--sort", "name"], "--sort"),
    (["calls", "--limit", "0"], "--limit"),
    (["calls", "--tz", "Nowhere/Land"], "--tz"),
])
def test_bad_filters_exit_non_zero_naming_the_option(sqlite_cli: Run, args: list[str],
                                                      option: str) -> None:
    result = sqlite_cli("usage", *args, "--json")
    assert result.exit_code != 0
    assert result.exception is None or isinstance(result.exception, SystemExit), \
        result.exception
    assert option in result.output, result.output
    assert result.stdout == "" or "Usage:" in result.output  # no half-written JSON


@pytest.mark.parametrize(("name", "value", "shown"), [
    # Ties as the decimals the API writes, which Python's float formatting rounds down (the
    # nearest double is below them, or formats half to even): "+0.1%", "-0.11 pp", ...
    ("model_calls", 0.0015, "+0.2%"),
    ("model_calls", 0.0125, "+1.3%"),
    ("input_tokens", -0.0015, "-0.2%"),
    ("success_rate", -0.00115, "-0.12 pp"),
    ("cache_hit_rate", 0.00145, "+0.15 pp"),
    ("model_calls", 12.3456, "+1,234.6%"),
    ("total_tokens", -0.5, "-50.0%"),
])
def test_changes_are_rounded_like_the_page(name: str, value: float, shown: str) -> None:
    assert _change(name, value).split("]")[1].split("[")[0] == shown
