"""The app on each test database, with an admin token; see ``support.py`` for the helpers."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tallygate.store.database import Database
from tests.api.support import Api, forget_tallygate_environment, running_app


@pytest.fixture(autouse=True)
def _no_settings_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    forget_tallygate_environment(monkeypatch)


@pytest.fixture
def api(db: Database) -> Iterator[Api]:
    """The app on an empty database (SQLite file, then PostgreSQL)."""
    with running_app(db) as running:
        yield running


@pytest.fixture(scope="module",
                params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def shared_api(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """One app per module and database, for tests that only read and never depend on what
    is stored (parameter checking): starting an app per case would dominate the run."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path_factory.mktemp('shared') / 'ledger.db'}")
        database.upgrade()
    else:
        database = Database(request.getfixturevalue("postgres_url"))
    try:
        # Set up before any function's fixture: it forgets the machine's settings itself.
        with pytest.MonkeyPatch.context() as monkeypatch:
            forget_tallygate_environment(monkeypatch)
            with running_app(database) as running:
                yield running
    finally:
        database.dispose()
