from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from tallygate.store.database import Database
from tallygate.store.schema import metadata


def test_upgrade_is_idempotent_and_matches_the_schema(db: Database) -> None:
    db.upgrade()  # a second run on a migrated database changes nothing
    assert db.current_revision() == db.head_revision()
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_ensure_current_refuses_an_unmigrated_database(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import pytest

    from tallygate.store.database import DatabaseUnavailable

    fresh = Database(f"sqlite:///{tmp_path / 'new.db'}")
    with pytest.raises(DatabaseUnavailable, match="tallygate db upgrade"):
        fresh.ensure_current()
