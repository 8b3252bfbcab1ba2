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


def test_the_binding_migration_ends_unbound_admin_sessions_only(db: Database) -> None:
    from alembic import command
    from sqlalchemy import select, text

    from tallygate.store.schema import meta, sessions

    config = db._alembic_config()
    command.downgrade(config, "0004")
    with db.write() as conn:
        for token_hash, key_id in (("a" * 64, None), ("b" * 64, "key_1")):
            conn.execute(text("INSERT INTO sessions (token_hash, api_key_id, csrf_token, "
                              "created_at, expires_at) VALUES (:t, :k, 'csrf', 1, :e)"),
                         {"t": token_hash, "k": key_id, "e": 2**62})
        conn.execute(meta.insert().values(name="admin_sessions_token_fingerprint",
                                          value="0123456789ab"))
    command.upgrade(config, "head")
    with db.read() as conn:
        left = [(row.api_key_id, row.admin_binding) for row in conn.execute(select(sessions))]
        names = [row.name for row in conn.execute(select(meta.c.name))]
    assert left == [("key_1", None)]
    assert "admin_sessions_token_fingerprint" not in names
