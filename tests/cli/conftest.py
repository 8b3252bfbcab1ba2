"""The ``tallygate`` command, run in-process against each test database."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import Result
from typer.testing import CliRunner

from tallygate.cli import app
from tallygate.store.database import Database
from tests.api.support import forget_tallygate_environment

Run = Callable[..., Result]


def runner_for(db: Database) -> Run:
    runner = CliRunner()

    def run(*args: str, input: str | None = None) -> Result:
        return runner.invoke(app, ["--database-url", db.url, *args], input=input)

    return run


@pytest.fixture(autouse=True)
def _no_settings_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    forget_tallygate_environment(monkeypatch)


@pytest.fixture
def cli(db: Database) -> Run:
    """``cli("usage", "summary", "--json")`` with ``--database-url`` of ``db`` (SQLite, then
    PostgreSQL)."""
    return runner_for(db)


@pytest.fixture
def sqlite_cli(sqlite_db: Database) -> Run:
    """The same on SQLite only, for refusals that never reach the database."""
    return runner_for(sqlite_db)
