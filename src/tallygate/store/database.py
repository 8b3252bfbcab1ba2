"""Connections, transactions and migrations for SQLite and PostgreSQL.

Everything dialect-specific about *connecting* lives here; the SQL of each resource lives in
its own module of this package and takes a :class:`Database`.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, inspect, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from tallygate.redact import redact_urls

_MIGRATIONS = Path(__file__).parent / "migrations"


# The newest migration in store/migrations/versions: what this code's queries expect.
# tests/store/test_migrations.py checks it against Alembic's head.
SCHEMA_REVISION = "0011"


class DatabaseUnavailable(RuntimeError):
    """The database cannot be reached or opened; the message says which and why."""


def engine_url(database_url: str) -> str:
    """``postgresql://`` means psycopg 3; SQLite URLs pass through."""
    if database_url.startswith("postgresql://"):
        return "postgresql+psycopg://" + database_url.removeprefix("postgresql://")
    return database_url


class Database:
    """One database: an engine plus the knowledge of which dialect it speaks."""

    def __init__(self, database_url: str, *, pool_size: int = 8) -> None:
        self.url = engine_url(database_url)
        parsed = make_url(self.url)
        self.is_sqlite = parsed.get_backend_name() == "sqlite"
        self._write_lock = threading.Lock()
        if self.is_sqlite:
            path = parsed.database
            if path and path != ":memory:":
                Path(path).expanduser().parent.mkdir(parents=True, exist_ok=True)
            self.engine: Engine = create_engine(
                self.url, connect_args={"check_same_thread": False, "timeout": 30},
                pool_size=pool_size, max_overflow=pool_size,
            ) if path and path != ":memory:" else create_engine(self.url, poolclass=NullPool)
            event.listen(self.engine, "connect", _sqlite_on_connect)
            event.listen(self.engine, "begin", _sqlite_on_begin)
        else:
            self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=pool_size,
                                        pool_pre_ping=True)

    @property
    def paramstyle(self) -> str:
        """``?`` for SQLite, ``%s`` for psycopg: for the few hand-written bulk statements."""
        return "?" if self.is_sqlite else "%s"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            yield conn

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction. On SQLite it takes the write lock up front (BEGIN
        IMMEDIATE), so concurrent writers queue instead of failing half-way."""
        if self.is_sqlite:
            with self._write_lock, self.engine.connect() as conn:
                conn = conn.execution_options(tallygate_write=True)
                with conn.begin():
                    yield conn
        else:
            with self.engine.begin() as conn:
                yield conn

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        from alembic import command

        command.upgrade(self._alembic_config(), "head")

    def current_revision(self) -> str | None:
        """The schema's migration, read with plain SQL: a server starts without loading
        Alembic (a fifth of its start-up)."""
        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def head_revision(self) -> str:
        from alembic.script import ScriptDirectory

        head = ScriptDirectory.from_config(self._alembic_config()).get_current_head()
        assert head is not None
        return head

    def ensure_current(self) -> None:
        """Refuse to serve from a database whose schema is not the one this code expects."""
        try:
            current = self.current_revision()
        except Exception as exc:  # the driver's own error says what is wrong
            raise DatabaseUnavailable(
                f"cannot open the database: {redact_urls(str(exc))}") from exc
        if current != SCHEMA_REVISION:
            raise DatabaseUnavailable(
                f"the database schema is at {current or 'nothing'}, this tallygate needs "
                f"{SCHEMA_REVISION}: run `tallygate db upgrade`"
            )

    def table_names(self) -> list[str]:
        return inspect(self.engine).get_table_names()

    def dispose(self) -> None:
        self.engine.dispose()

    def _alembic_config(self) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(_MIGRATIONS))
        config.attributes["engine"] = self.engine
        return config


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Take transaction control from the sqlite3 module so BEGIN IMMEDIATE is possible.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in ("journal_mode=WAL", "synchronous=NORMAL", "busy_timeout=30000",
                   "cache_size=-131072", "temp_store=MEMORY"):
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _sqlite_on_begin(conn: Connection) -> None:
    immediate = conn.get_execution_options().get("tallygate_write", False)
    conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
