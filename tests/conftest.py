"""Shared fixtures: real SQLite files and the real PostgreSQL server, the same tests on both.

PostgreSQL is found through ``TALLYGATE_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``), MariaDB/MySQL (the importers' sources) through
``TALLYGATE_TEST_MYSQL_URL`` (default ``mysql://root@127.0.0.1:3306/test``). Each test process
gets its own databases, created for the run and dropped after it. Without a server the
variants that need it skip with the reason shown; with ``CI=true`` they fail instead, so CI
never skips them silently.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text

from tallygate.ledger.service import Ledger
from tallygate.store.database import Database, engine_url
from tallygate.store.schema import metadata

POSTGRES_URL = os.environ.get("TALLYGATE_TEST_POSTGRES_URL",
                              "postgresql://postgres@127.0.0.1:5432/test")
MYSQL_URL = os.environ.get("TALLYGATE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def ping_redis_or_skip(client: Any, url: str) -> None:
    """Reach the test Redis through ``client``; without it, skip with the reason (closing the
    client), or fail in CI, where it must be there."""
    import redis

    try:
        client.ping()
    except redis.RedisError as exc:
        client.close()
        if IN_CI:
            pytest.fail(f"Redis is required in CI: {url}: {exc}")
        pytest.skip(f"Redis not available at {url}: {exc}")


def emptied_redis(url: str) -> Iterator[str]:
    """``url``'s tallygate keys deleted before and after the test (skipped without Redis,
    failed in CI). Give each test module that uses it a database of its own: another worker
    may be counting in a shared one."""
    import redis

    client = redis.Redis.from_url(url)
    ping_redis_or_skip(client, url)
    for name in client.scan_iter("tallygate:*"):
        client.delete(name)
    yield url
    for name in client.scan_iter("tallygate:*"):
        client.delete(name)
    client.close()


# The period a test queries for calls it has just made: "1d" (today) misses them when the
# test crosses midnight UTC between the call and the query; the last three days cannot.
RECENT = "3d"


def _unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL is required in CI: {reason}")
    pytest.skip(f"PostgreSQL not available: {reason}")


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on the PostgreSQL server for this test process."""
    admin = create_engine(engine_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    name = f"tallygate_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any failure to reach the server
        admin.dispose()
        _unavailable(f"{POSTGRES_URL}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
    base = POSTGRES_URL.rsplit("/", 1)[0]
    url = f"{base}/{name}"
    database = Database(url)
    database.upgrade()
    database.dispose()
    yield url
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def source_postgres_url() -> Iterator[str]:
    """Another database on the PostgreSQL server, for this test process: where an importer
    test puts another gateway's tables (each test creates its table afresh)."""
    admin = create_engine(engine_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    name = f"tallygate_source_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:  # any failure to reach the server
        admin.dispose()
        _unavailable(f"{POSTGRES_URL}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}")
    yield f"{POSTGRES_URL.rsplit('/', 1)[0]}/{name}"
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(scope="session")
def mysql_url() -> Iterator[str]:
    """A fresh database on the MariaDB/MySQL server for this test process (an importer's
    source)."""
    from tallygate.store.foreign import source_engine_url

    admin = create_engine(source_engine_url(MYSQL_URL))
    name = f"tallygate_source_{uuid.uuid4().hex[:10]}"
    try:
        with admin.begin() as conn:
            conn.execute(text(f"CREATE DATABASE `{name}`"))
    except Exception as exc:  # any failure to reach the server, or no driver
        admin.dispose()
        reason = f"{MYSQL_URL}: {exc.__class__.__name__}: {str(exc).splitlines()[0]}"
        if IN_CI:
            pytest.fail(f"MariaDB/MySQL is required in CI: {reason}")
        pytest.skip(f"MariaDB/MySQL not available: {reason}")
    yield f"{MYSQL_URL.rsplit('/', 1)[0]}/{name}"
    with admin.begin() as conn:
        conn.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
    admin.dispose()


def _empty_postgres(url: str) -> Database:
    database = Database(url)
    with database.write() as conn:
        names = ", ".join(table.name for table in metadata.sorted_tables)
        conn.execute(text(f"TRUNCATE {names}"))
    return database


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty, migrated database: a SQLite file, then the real PostgreSQL."""
    if request.param == "sqlite":
        database = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
        database.upgrade()
    else:
        database = _empty_postgres(request.getfixturevalue("postgres_url"))
    yield database
    database.dispose()


@pytest.fixture
def sqlite_db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'ledger.db'}")
    database.upgrade()
    yield database
    database.dispose()


@pytest.fixture
def ledger(db: Database) -> Ledger:
    return Ledger(db)
