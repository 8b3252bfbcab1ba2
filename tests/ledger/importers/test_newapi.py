"""Importing New API's and One API's ``logs`` table from SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Column, MetaData, Table

from tallygate.importers import import_history
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tallygate.store.usage import CallFilter, iter_calls
from tests.ledger.importers.sources import check_ledger, fill, newapi_logs, newapi_rows, oneapi_logs

SOURCE_KINDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres),
                pytest.param("mysql", marks=pytest.mark.mysql)]


@pytest.fixture(params=SOURCE_KINDS)
def source_db(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """(URL to create the source table at, SOURCE as a user gives it)."""
    if request.param == "sqlite":
        path = tmp_path / "one-api.db"
        return f"sqlite:///{path}", str(path)
    name = "source_postgres_url" if request.param == "postgres" else "mysql_url"
    url = request.getfixturevalue(name)
    return url, url


@pytest.mark.parametrize("kind", ["new-api", "one-api"])
def test_a_logs_table_imports_once_with_its_keys(kind: str, source_db: tuple[str, str],
                                                  sqlite_db: Database) -> None:
    url, source = source_db
    rows, expected, skipped = newapi_rows(kind, 260, batch_seed(kind))
    fill(url, newapi_logs if kind == "new-api" else oneapi_logs, rows)
    ledger = Ledger(sqlite_db)
    totals: list[int] = []
    seen: list[int] = []

    first = import_history(ledger, kind, source, batch_size=37, on_total=totals.append,
                           progress=seen.append)
    assert totals == [len(rows)] and seen[-1] == len(rows)
    assert (first.rows_read, first.imported, first.duplicates) == (len(rows), len(expected), 0)
    assert dict(first.skipped) == skipped and not first.rejected
    check_ledger(ledger, expected)

    keys = KeyService(sqlite_db).list()
    # New API names a token by its id, One API by its user's and its own name: three each.
    assert first.keys_created == 3 and len(keys) == 3
    assert sorted(k.name for k in keys) == ["batch", "prod", "prod"]
    assert sorted(k.owner or "" for k in keys) == ["alice", "alice", "bob"]
    assert all(k.status == "disabled" and "imported" in k.tags for k in keys)

    again = import_history(ledger, kind, source, batch_size=1000)
    assert (again.imported, again.duplicates, again.keys_created) == (0, len(expected), 0)
    assert len(KeyService(sqlite_db).list()) == 3
    check_ledger(ledger, expected)


def batch_seed(kind: str) -> int:
    return 3 if kind == "new-api" else 5


def test_quota_converts_with_the_quota_per_unit(tmp_path: Path, sqlite_db: Database) -> None:
    path = tmp_path / "new-api.db"
    rows, expected, _ = newapi_rows("new-api", 80, 9, quota_per_unit=1000)
    fill(f"sqlite:///{path}", newapi_logs, rows)
    ledger = Ledger(sqlite_db)
    import_history(ledger, "new-api", str(path), quota_per_unit=Decimal(1000))
    check_ledger(ledger, expected)


@pytest.mark.parametrize("kind", ["new-api", "one-api"])
def test_both_ledgers_take_the_import(kind: str, ledger: Ledger, tmp_path: Path) -> None:
    """The same import into a SQLite and a PostgreSQL ledger."""
    path = tmp_path / "logs.db"
    rows, expected, _ = newapi_rows(kind, 120, 13)
    fill(f"sqlite:///{path}", newapi_logs if kind == "new-api" else oneapi_logs, rows)
    assert import_history(ledger, kind, f"sqlite:///{path}").imported == len(expected)
    check_ledger(ledger, expected)


def test_two_installations_keep_their_ids_apart(tmp_path: Path, sqlite_db: Database) -> None:
    """Row ids repeat between two New API databases: --instance keeps both histories."""
    ledger = Ledger(sqlite_db)
    for name, seed in (("eu", 1), ("us", 2)):
        path = tmp_path / f"{name}.db"
        rows, expected, _ = newapi_rows("new-api", 30, seed)
        fill(f"sqlite:///{path}", newapi_logs, rows)
        result = import_history(ledger, "new-api", str(path), instance=name)
        assert result.imported == len(expected) and result.keys_created == 3
    assert len(KeyService(sqlite_db).list()) == 6


def test_an_older_schema_without_latency_columns_imports(tmp_path: Path,
                                                         sqlite_db: Database) -> None:
    """One API before elapsed_time: the latency is unknown, not 0."""

    def older(metadata: MetaData) -> Table:
        table = oneapi_logs(MetaData())
        return Table("logs", metadata, *[
            Column(c.name, c.type, primary_key=c.primary_key) for c in table.columns
            if c.name not in ("elapsed_time", "request_id")])

    path = tmp_path / "old.db"
    rows, expected, _ = newapi_rows("one-api", 40, 21)
    fill(f"sqlite:///{path}", older, [{k: v for k, v in row.items()
                                       if k not in ("elapsed_time", "request_id")}
                                      for row in rows])
    ledger = Ledger(sqlite_db)
    assert import_history(ledger, "one-api", str(path)).imported == len(expected)
    assert {r.latency_ms for r in iter_calls(sqlite_db, CallFilter(), 0, 2**62)} == {None}
