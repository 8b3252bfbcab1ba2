"""``tallygate import`` and ``tallygate export``."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tests.api.support import recent_window, running_app, varied_records
from tests.cli.conftest import Run


def _ts(minutes_ago: int) -> str:
    return (datetime.now(UTC) - timedelta(minutes=minutes_ago)).isoformat()


def _calls(db: Database) -> dict[str, dict[str, Any]]:
    with running_app(db) as api:
        data = api.ok("/api/v1/usage/calls", {"period": "3d", "limit": 1000})["data"]
    return {record["id"]: record for record in data}


def test_import_ndjson_is_idempotent_and_reports_bad_lines(db: Database, cli: Run,
                                                           tmp_path: Path) -> None:
    lines = [
        json.dumps({"id": "n1", "ts": _ts(5), "model": "m", "input_tokens": 10,
                    "cost": "0.25", "metadata": {"team": "a"}}),
        json.dumps({"id": "n2", "ts": _ts(6), "model": "m", "output_tokens": 3}),
        "{this is not json",
        "",
        json.dumps({"id": "n3", "ts": _ts(7), "model": "m", "input_tokens": -1}),
        json.dumps({"ts": _ts(8), "model": "no-id", "input_tokens": 1}),  # id from content
        json.dumps(["an", "array"]),
        json.dumps({"id": "n4", "ts": "2026-11-01T10:00:00", "model": "m"}),
    ]
    path = tmp_path / "calls.ndjson"
    path.write_text("\n".join(lines) + "\n")

    first = cli("import", str(path))
    assert first.exit_code == 1, first.output
    assert "accepted 3, duplicates 0, rejected 4" in first.stdout
    assert "line 3: not valid JSON" in first.stdout
    assert "line 5: input_tokens:" in first.stdout
    assert "line 7:" in first.stdout
    assert "line 8: ts:" in first.stdout

    again = cli("import", str(path))
    assert again.exit_code == 1
    assert "accepted 0, duplicates 3, rejected 4" in again.stdout

    stored = _calls(db)
    assert set(stored) - {"n1", "n2"} == {next(i for i in stored if i.startswith("import-"))}
    assert stored["n1"]["cost"] == "0.25" and stored["n1"]["metadata"] == {"team": "a"}

    clean = tmp_path / "clean.jsonl"
    clean.write_text(lines[0] + "\n" + lines[1] + "\n")
    result = cli("import", str(clean))
    assert result.exit_code == 0 and "accepted 0, duplicates 2, rejected 0" in result.stdout


def test_import_csv_is_idempotent_and_reports_bad_lines(db: Database, cli: Run,
                                                        tmp_path: Path) -> None:
    path = tmp_path / "calls.csv"
    # Written by a spreadsheet: a byte-order mark, CRLF line ends, columns in any order,
    # empty cells, no ids.
    rows = [
        "model,ts,input_tokens,output_tokens,call_type,estimated,metadata,cost",
        f"m,{_ts(5)},10,2,model,false,,",
        f"m,{_ts(6)},20,4,service,TRUE,\"{{\"\"team\"\": \"\"b\"\"}}\",0.5",
        f"m,{_ts(7)},abc,4,model,false,,",
        f"m,{_ts(8)},1,1,batch,false,,",
        f"m,{_ts(9)},30,6,internal,0,,",
    ]
    path.write_bytes(("\ufeff" + "\r\n".join(rows) + "\r\n").encode())

    first = cli("import", str(path))
    assert first.exit_code == 1, first.output
    assert "accepted 3, duplicates 0, rejected 2" in first.stdout
    assert "line 4: input_tokens:" in first.stdout
    assert "line 5: call_type:" in first.stdout
    again = cli("import", str(path))
    assert again.exit_code == 1 and "accepted 0, duplicates 3, rejected 2" in again.stdout

    stored = sorted(_calls(db).values(), key=lambda r: r["input_tokens"])
    assert [(r["input_tokens"], r["call_type"], r["estimated"]) for r in stored] == [
        (10, "model", False), (20, "service", True), (30, "internal", False)]
    assert stored[1]["metadata"] == {"team": "b"} and stored[1]["cost"] == "0.50"

    forced = tmp_path / "calls.txt"
    forced.write_bytes(path.read_bytes())
    assert "duplicates 3" in cli("import", "--format", "csv", str(forced)).stdout
    refused = cli("import", "--format", "xml", str(forced))
    assert refused.exit_code != 0 and "--format" in refused.output
    missing = cli("import", "no-such-file.ndjson")  # short: the message fits on a line
    assert missing.exit_code != 0 and "no-such-file.ndjson" in missing.output


def test_export_writes_what_the_api_exports(db: Database, cli: Run, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    Ledger(db).store(varied_records(now, count=30))
    window = recent_window(now)
    with running_app(db) as api:
        for what, fmt, extra_cli, extra_api in (
                ("calls", "csv", [], {}),
                ("calls", "ndjson", ["--model", "bge-m3"], {"model": "bge-m3"}),
                ("calls", "json", ["--call-type", "service"], {"call_type": "service"}),
                ("summary", "csv", ["--tz", "Asia/Shanghai"], {"tz": "Asia/Shanghai"}),
                ("trend", "csv", ["--metric", "cost", "--granularity", "hour"],
                 {"metric": "cost", "granularity": "hour"}),
                ("breakdown", "ndjson", ["--group-by", "api_key,model"],
                 {"group_by": "api_key,model"})):
            out = tmp_path / f"{what}.{fmt}"
            result = cli("export", "--what", what, "--format", fmt, "-o", str(out),
                         "--start", window["start"], "--end", window["end"], *extra_cli)
            assert result.exit_code == 0, result.output
            expected = api.get("/api/v1/usage/export", {**window, "what": what, "format": fmt,
                                                        **extra_api})
            assert out.read_bytes() == expected.content, (what, fmt)
            assert len(out.read_bytes()) > 100

        out = tmp_path / "calls.xlsx"
        result = cli("export", "--format", "xlsx", "-o", str(out), "--start", window["start"],
                     "--end", window["end"])
        assert result.exit_code == 0
        workbook = load_workbook(io.BytesIO(out.read_bytes()), read_only=True)
        rows = list(workbook.worksheets[0].iter_rows(values_only=True))
        workbook.close()
        ids = [r["id"] for r in api.ok("/api/v1/usage/calls", {**window, "limit": 1000})["data"]]
        assert [row[0] for row in rows[1:]] == ids

    # Without -o, to standard output.
    result = cli("export", "--what", "calls", "--format", "ndjson", "--start",
                 window["start"], "--end", window["end"])
    assert result.exit_code == 0 and len(result.stdout.splitlines()) == 30


@pytest.mark.parametrize(("args", "option"), [
    (["--format", "pdf"], "--format"),
    (["--what", "everything"], "--what"),
    (["--format", "xlsx"], "--output"),
    (["--what", "trend", "--metric", "calls"], "--metric"),
    (["--what", "trend", "--granularity", "week"], "--granularity"),
    (["--what", "breakdown", "--group-by", "owner"], "--group-by"),
    (["--period", "2d"], "--period"),
    (["--tz", "Nowhere/Land"], "--tz"),
])
def test_export_refuses_bad_options_naming_them(sqlite_cli: Run, tmp_path: Path,
                                                args: list[str], option: str) -> None:
    result = sqlite_cli("export", *args)
    assert result.exit_code != 0
    assert option in result.output, result.output


def test_export_focus_is_the_api_dataset(db: Database, cli: Run, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    Ledger(db).store(varied_records(now, count=30))
    window = recent_window(now)
    out = tmp_path / "focus.csv"
    result = cli("export", "--format", "focus", "-o", str(out), "--start", window["start"],
                 "--end", window["end"])
    assert result.exit_code == 0, result.output
    with running_app(db) as api:
        served = api.get("/api/v1/usage/export", {**window, "format": "focus"})
    assert served.status_code == 200
    assert out.read_text() == served.text and served.text.count("\n") > 1
    refused = cli("export", "--format", "focus", "--focus-format", "parquet")
    assert refused.exit_code != 0 and "--output" in refused.output
