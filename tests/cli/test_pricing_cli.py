"""``tallygate pricing``, ``tallygate anomalies`` and the Parquet export from the CLI."""

from __future__ import annotations

import io
import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tallygate.domain.records import CallRecord
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tests.cli.conftest import Run
from tests.conftest import RECENT

US = 1_000_000


def test_set_list_and_recompute(db: Database, cli: Run) -> None:
    now = datetime.now(UTC).replace(microsecond=0)
    ledger = Ledger(db)
    key = KeyService(db).create(KeyCreate(name="partner"), "test")
    ledger.store([CallRecord(id=f"c{i}", ts_us=int((now - timedelta(hours=i)).timestamp()) * US,
                             model="chat", call_type="model", api_key_id=key.id,
                             input_tokens=1_000_000, total_tokens=1_000_000, cost_nano=0)
                  for i in range(1, 5)])

    result = cli("pricing", "set", "chat", "--input", "0.50", "--output", "2",
                 "--from", "2020-01-01")
    assert result.exit_code == 0, result.output
    assert "chat: 0.50 in" in result.output
    assert cli("pricing", "set", "chat", "--input", "abc").exit_code == 2
    listed = json.loads(cli("pricing", "list", "--json").output)
    assert [(p["model"], p["input_per_million"], p["in_force"]) for p in listed["data"]] == [
        ("chat", "0.50", True)]
    assert "chat" in cli("pricing", "list").output

    # Every call was stored at cost 0: recomputing prices them at 0.50 per million input.
    start = (now - timedelta(days=1)).isoformat()
    dry = json.loads(cli("pricing", "recompute", "--start", start, "--dry-run",
                         "--json").output)
    assert dry["changed"] == 4 and dry["written"] is False and dry["after"] == "2.00"
    assert cli("pricing", "discount", key.id, "50", "--from", "2020-01-01").exit_code == 0
    report = cli("pricing", "recompute", "--start", start)
    assert report.exit_code == 0, report.output
    assert "4 calls examined, 4 changed; total 0.00 → 1.00 USD" in report.output
    with db.read() as conn:
        total = conn.exec_driver_sql("SELECT sum(cost_nano) FROM rollup_15m").scalar()
    assert total == 1_000_000_000
    again = json.loads(cli("pricing", "recompute", "--start", start, "--json").output)
    assert again["changed"] == 0 and again["before"] == again["after"] == "1.00"
    assert cli("pricing", "recompute").exit_code == 2  # --start is required
    assert cli("pricing", "discount", "nobody", "5").exit_code == 2
    assert cli("pricing", "discount", key.id, "150").exit_code == 2
    assert cli("pricing", "set", "ocr", "--per-unit", "-1").exit_code == 2
    extra = cli("pricing", "set", "ocr", "--per-unit", "0.0015", "--cache-write-per-million",
                "3.75", "--from", "2020-01-01")
    assert extra.exit_code == 0, extra.output
    assert "3.75 cache write" in extra.output and "0.0015 per" in extra.output
    shown = json.loads(cli("pricing", "list", "--json", "--model", "ocr").output)["data"]
    assert [(p["cache_write_per_million"], p["per_unit"]) for p in shown] == [
        ("3.75", "0.0015")]


def test_anomalies_list(db: Database, cli: Run) -> None:
    now = datetime.now(UTC)
    ledger = Ledger(db)
    hour = 3600 * US
    start = int((now - timedelta(days=3)).timestamp()) * US
    ledger.store([CallRecord(id=f"c{i}", ts_us=start + i * hour, model="m", call_type="model",
                             api_key_id="k") for i in range(60)]
                 + [CallRecord(id="n", ts_us=int(now.timestamp()) * US - hour, model="m2",
                               call_type="model", api_key_id="k")])
    # The last two hours, not "today": near midnight UTC today has not lasted an hour yet.
    window = ("--start", (now - timedelta(hours=2)).isoformat(),
              "--end", (now + timedelta(minutes=1)).isoformat())
    out = json.loads(cli("anomalies", "list", *window, "--json").output)
    assert [(a["kind"], a["model"]) for a in out["data"]] == [("new_model", "m2")]
    table = cli("anomalies", "list", "--period", "3d", "--kind", "new_model")
    assert table.exit_code == 0 and "first time" in table.output
    assert cli("anomalies", "list", "--kind", "meteor").exit_code == 2
    assert json.loads(cli("anomalies", "deliveries", "--json").output) == {"data": []}


def test_export_parquet(db: Database, cli: Run, tmp_path: Path,
                        monkeypatch: pytest.MonkeyPatch) -> None:
    now = datetime.now(UTC)
    Ledger(db).store([CallRecord(id="p1", ts_us=int(now.timestamp()) * US, model="m",
                                 call_type="model", cost_nano=1_234_567_891)])
    path = tmp_path / "calls.parquet"
    result = cli("export", "--format", "parquet", "--period", RECENT, "-o", str(path))
    assert result.exit_code == 0, result.output
    (row,) = pq.read_table(io.BytesIO(path.read_bytes())).to_pylist()
    assert row["id"] == "p1" and str(row["cost"]) == "1.234567891"
    assert cli("export", "--format", "parquet").exit_code == 2  # needs a file
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    missing = cli("export", "--format", "parquet", "-o", str(path))
    assert missing.exit_code == 2 and "pip install" in missing.output
