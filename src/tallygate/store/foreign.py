"""Reading another application's table (an importer's source), in keyset batches.

The only SQL tallygate runs against a database it does not own: SQLAlchemy Core, parameterised,
read-only. A source is a PostgreSQL URL (psycopg), a MySQL/MariaDB URL (PyMySQL) or a SQLite file
(a path or a ``sqlite:///`` URL). Rows are read ``batch_size`` at a time ordered by the table's
own key (``WHERE key > :last ORDER BY key LIMIT :n``), so a table of any size is read with flat
memory and without a long-lived cursor.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, Table, create_engine, func, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, NoSuchModuleError, NoSuchTableError, SQLAlchemyError
from sqlalchemy.pool import NullPool

from tallygate.redact import redact_urls

MYSQL_MISSING = ("reading MySQL/MariaDB needs the PyMySQL driver: "
                 "pip install 'tallygate[mysql]'")


class SourceError(RuntimeError):
    """The source cannot be opened or read; the message names it and says why."""


def is_database_url(source: str) -> bool:
    return "://" in source


def source_engine_url(source: str) -> str:
    """The SQLAlchemy URL for a source: ``postgres(ql)://`` means psycopg 3,
    ``mysql://`` and ``mariadb://`` PyMySQL; a path is a SQLite file."""
    for prefix, driver in (("postgresql://", "postgresql+psycopg://"),
                           ("postgres://", "postgresql+psycopg://"),
                           ("mysql://", "mysql+pymysql://"),
                           ("mariadb://", "mysql+pymysql://")):
        if source.startswith(prefix):
            return driver + source.removeprefix(prefix)
    if is_database_url(source):
        return source
    path = Path(source).expanduser()
    if not path.is_file():
        raise SourceError(f"{source}: no such file (give a SQLite file or a database URL)")
    return f"sqlite:///{path.resolve()}"


class ForeignTable:
    """One table of a source database, reflected: which of the wanted columns it has."""

    def __init__(self, source: str, table_name: str) -> None:
        self.source = source
        self.shown = redact_urls(source)  # as it may be shown: without its password
        url = source_engine_url(source)
        try:
            backend = make_url(url).get_backend_name()
        except ArgumentError as exc:
            raise SourceError(f"{self.shown}: not a database URL ({exc})") from None
        if backend not in ("postgresql", "mysql", "sqlite"):
            raise SourceError(f"{self.shown}: not a PostgreSQL, MySQL/MariaDB or SQLite source")
        if backend == "sqlite":
            path = make_url(url).database or ""
            if not Path(path).is_file():
                raise SourceError(f"{self.shown}: no such SQLite file")
            # Read-only: an importer never writes to the history it reads.
            url = f"sqlite:///file:{path}?mode=ro&uri=true"
        try:
            self.engine: Engine = create_engine(url, poolclass=NullPool)
        except (NoSuchModuleError, ModuleNotFoundError) as exc:
            if backend == "mysql":
                raise SourceError(f"{self.shown}: {MYSQL_MISSING}") from None
            raise SourceError(f"{self.shown}: {exc}") from None
        try:
            self.table = Table(table_name, MetaData(), autoload_with=self.engine)
        except NoSuchTableError:
            self.engine.dispose()
            raise SourceError(f"{self.shown}: has no table {table_name}") from None
        except SQLAlchemyError as exc:
            self.engine.dispose()
            first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
            raise SourceError(f"{self.shown}: cannot open it: "
                              f"{first[0] if first else type(exc).__name__}") from None

    @property
    def columns(self) -> set[str]:
        return {column.name for column in self.table.columns}

    def count(self) -> int:
        try:
            with self.engine.connect() as conn:
                return int(conn.execute(select(func.count()).select_from(self.table))
                           .scalar_one())
        except SQLAlchemyError as exc:
            raise SourceError(f"{self.shown}: cannot count the rows: {exc}") from None

    def batches(self, key: str, wanted: Sequence[str], batch_size: int
                ) -> Iterator[list[dict[str, Any]]]:
        """Every row's ``wanted`` columns that the table has, ``batch_size`` rows at a time,
        in the order of ``key`` (unique)."""
        key_column = self.table.c[key]
        chosen = [self.table.c[name] for name in wanted if name in self.table.c]
        query = select(*chosen).order_by(key_column).limit(batch_size)
        last: Any = None
        while True:
            page = query if last is None else query.where(key_column > last)
            try:
                with self.engine.connect() as conn:
                    rows = [dict(row._mapping) for row in conn.execute(page)]
            except SQLAlchemyError as exc:
                raise SourceError(f"{self.shown}: reading failed: {exc}") from None
            if not rows:
                return
            yield rows
            if len(rows) < batch_size:
                return
            last = rows[-1][key]

    def close(self) -> None:
        self.engine.dispose()
