"""``tallygate db upgrade|check|purge``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, func, select, update

from tallygate.domain.records import CallRecord
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tallygate.store.schema import rollup_1d, rollup_1m
from tests.api.support import recent_window, running_app, varied_records
from tests.cli.conftest import Run, runner_for


def test_upgrade_creates_the_schema_once_and_then_changes_nothing(tmp_path: Path) -> None:
    fresh = Database(f"sqlite:///{tmp_path / 'new' / 'fresh.db'}")
    try:
        cli = runner_for(fresh)
        first = cli("db", "upgrade")
        assert first.exit_code == 0, first.output
        assert f"from nothing to {fresh.head_revision()}" in first.stdout
        second = cli("db", "upgrade")
        assert second.exit_code == 0
        assert f"already at the newest schema ({fresh.head_revision()})" in second.stdout
        assert fresh.current_revision() == fresh.head_revision()
    finally:
        fresh.dispose()


def test_upgrade_on_a_current_database_keeps_its_data(db: Database, cli: Run) -> None:
    Ledger(db).store(varied_records(datetime.now(UTC), count=6))
    for _ in range(2):
        result = cli("db", "upgrade")
        assert result.exit_code == 0 and "already at the newest schema" in result.stdout
    assert cli("usage", "calls", "--period", "3d", "--json").stdout.count('"id"') == 6


def test_upgrade_reports_an_unreachable_database() -> None:
    cli = runner_for(Database("postgresql://nobody@127.0.0.1:1/none"))
    result = cli("db", "upgrade")
    assert result.exit_code != 0 and "cannot upgrade the database" in result.output


def test_check_finds_a_corrupted_rollup_and_repair_fixes_it(db: Database, cli: Run) -> None:
    now = datetime.now(UTC)
    Ledger(db).store(varied_records(now, count=40))
    window = recent_window(now)
    with running_app(db) as api:
        before = api.ok("/api/v1/usage/breakdown", {**window, "group_by": "api_key,model"})

    clean = cli("db", "check")
    assert clean.exit_code == 0, clean.output
    assert "rollups match the raw records" in clean.stdout

    # The daily tier is what a view of whole days reads.
    with db.write() as conn:
        first = conn.execute(select(func.min(rollup_1d.c.bucket))).scalar_one()
        changed = conn.execute(update(rollup_1d).where(rollup_1d.c.bucket == first)
                               .values(calls=rollup_1d.c.calls + 1,
                                       input_tokens=rollup_1d.c.input_tokens + 1000)).rowcount
        newest = conn.execute(select(func.max(rollup_1m.c.bucket))).scalar_one()
        missing = conn.execute(delete(rollup_1m).where(rollup_1m.c.bucket == newest)).rowcount
        conn.execute(rollup_1d.insert().values(
            bucket=first, api_key_id="ghost", model="m", model_category="chat",
            call_type="model", **{c.name: 1 for c in rollup_1d.columns
                                  if c.name not in ("bucket", "api_key_id", "model",
                                                    "model_category", "call_type")}))
    with running_app(db) as api:
        assert api.ok("/api/v1/usage/breakdown",
                      {**window, "group_by": "api_key,model"}) != before  # really corrupted

    found = cli("db", "check")
    assert found.exit_code == 1, found.output
    # Changed rows, missing rows and a row that should not exist.
    assert changed >= 1 and missing >= 1
    wrong = changed + missing + 1
    assert f"{wrong} differences" in found.stdout and "--repair" in found.stdout

    repaired = cli("db", "check", "--repair")
    assert repaired.exit_code == 0, repaired.output
    assert f"repaired {wrong} rows" in repaired.stdout

    again = cli("db", "check")
    assert again.exit_code == 0 and "rollups match the raw records" in again.stdout
    with running_app(db) as api:
        assert api.ok("/api/v1/usage/breakdown",
                      {**window, "group_by": "api_key,model"}) == before


def test_check_and_purge_on_an_empty_ledger(cli: Run) -> None:
    result = cli("db", "check")
    assert result.exit_code == 0 and "nothing to check" in result.stdout
    purged = cli("db", "purge")
    assert purged.exit_code == 0
    assert "deleted 0 raw records and 0 minute rollup rows" in purged.stdout


def test_purge_reports_the_floor_it_recorded(cli: Run, db: Database,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    now = time.time()
    Ledger(db).store([CallRecord(id=f"old-{i}", ts_us=int((now - 40 * 86400 - i) * 1e6),
                                 model="m", call_type="model") for i in range(3)])
    monkeypatch.setenv("TALLYGATE_RAW_RETENTION_DAYS", "30")
    purged = cli("db", "purge")
    assert purged.exit_code == 0, purged.output
    floor = datetime.fromtimestamp((int(now) - 30 * 86400) // 86400 * 86400, UTC)
    assert "deleted 3 raw records" in purged.stdout
    assert f"purge floor: {floor:%Y-%m-%dT%H:%M:%SZ} (older records are refused)" in purged.stdout
