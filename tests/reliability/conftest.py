"""A fake upstream in this process, and the database the gateway under test writes to."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tallygate.fake_upstream import FakeSettings, FakeUpstream
from tallygate.store.database import Database
from tests.servers import serve_app


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_app(FakeUpstream(FakeSettings(chunks=4))) as url:
        yield url


@pytest.fixture
def database_url(db: Database) -> str:
    """An empty, migrated database (a SQLite file, then the real PostgreSQL)."""
    return db.url
