"""What every command needs: the settings (env < --config < flags) and the ledger they name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import typer
from rich.console import Console

from tallygate.config import ConfigError, Settings, load_settings
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database, DatabaseUnavailable

console = Console()
errors = Console(stderr=True)


@dataclass
class CliState:
    config_file: Path | None = None
    database_url: str | None = None
    opened: list[Database] = field(default_factory=list)

    def settings(self, **flags: Any) -> Settings:
        try:
            return load_settings(self.config_file, database_url=self.database_url, **flags)
        except ConfigError as exc:
            fail(str(exc))

    def ledger(self, settings: Settings | None = None, *, migrate: bool = False) -> Ledger:
        settings = settings or self.settings()
        db = self.database(settings.database_url)
        try:
            if migrate or is_empty(db):
                db.upgrade()
            db.ensure_current()
        except DatabaseUnavailable as exc:
            fail(str(exc))
        return Ledger.from_settings(db, settings)

    def keys(self) -> KeyService:
        return KeyService(self.ledger().db)

    def database(self, url: str) -> Database:
        db = Database(url)
        self.opened.append(db)
        return db

    def close(self) -> None:
        """Close every connection the command opened: the process may live on (a script,
        a test runner), and a PostgreSQL connection left to the garbage collector warns."""
        for db in self.opened:
            db.dispose()
        self.opened.clear()


def is_empty(db: Database) -> bool:
    """A database without any tables yet: safe to create the schema in without asking."""
    try:
        return not db.table_names()
    except Exception as exc:  # the driver says why it cannot connect
        fail(f"cannot open the database: {exc}")


def state(ctx: typer.Context) -> CliState:
    found = ctx.find_object(CliState)
    assert found is not None
    return found


def fail(message: str, code: int = 2) -> NoReturn:
    # soft_wrap: a message naming a file or a value must not be cut into lines.
    errors.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
