from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tallygate.store.database import SCHEMA_REVISION, Database
from tallygate.store.schema import metadata


def test_upgrade_is_idempotent_and_matches_the_schema(db: Database) -> None:
    db.upgrade()  # a second run on a migrated database changes nothing
    assert db.current_revision() == db.head_revision() == SCHEMA_REVISION
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_ensure_current_refuses_an_unmigrated_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from tallygate.store.database import DatabaseUnavailable

    fresh = Database(f"sqlite:///{tmp_path / 'new.db'}")
    with pytest.raises(DatabaseUnavailable, match="tallygate db upgrade"):
        fresh.ensure_current()


def test_the_tier_migration_fills_the_new_tiers_from_stored_rollups(db: Database) -> None:
    # A ledger from before 0004 had only the quarter-hour and minute rollups: after the
    # upgrade every tier must hold what it would have held had it always been written.
    import time

    from alembic import command

    from tallygate.ledger.maintenance import check_rollups
    from tallygate.ledger.service import Ledger
    from tests.store.test_calls import make_record

    now_us = int(time.time() * 1_000_000)
    records = [make_record(n, ts_us=now_us - n * 37_000_000_000) for n in range(400)]
    ledger = Ledger(db)
    ledger.store(records)
    config = db._alembic_config()
    command.downgrade(config, "0003")
    assert "rollup_1h" not in db.table_names()
    command.upgrade(config, "head")
    report = check_rollups(ledger)
    assert report.ok, report.differences[:5]
    assert report.rows_compared > 0
