"""What every command needs: the settings (env < --config < flags) and the ledger they name."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console

from tallygate.config import ConfigError, Settings, load_settings
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.redact import redact_urls
from tallygate.store.database import Database, DatabaseUnavailable

console = Console()
errors = Console(stderr=True)

CONFIG_HELP = "TOML settings file (overrides the environment)."
# ``tallygate serve --config FILE`` takes the same option as ``tallygate --config FILE
# serve``; only the global one also reads TALLYGATE_CONFIG.
CommandConfig = Annotated[Path | None, typer.Option(
    "--config", help=CONFIG_HELP + " The same as the global --config.", exists=True,
    dir_okay=False)]


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


def use_command_config(ctx: typer.Context, config: Path | None) -> None:
    """Honour a command's own ``--config``: it means what the global one means. Given in
    both places it must name the same file; it beats a TALLYGATE_CONFIG from the
    environment, as every flag does."""
    if config is None:
        return
    cli = state(ctx)
    # By name: typer carries its own copy of click, whose enum is not click's.
    source = ctx.find_root().get_parameter_source("config")
    global_flag = source is not None and source.name == "COMMANDLINE"
    if (global_flag and cli.config_file is not None
            and cli.config_file.resolve() != config.resolve()):
        fail(f"--config names two files: {cli.config_file} (before the command) and "
             f"{config} (after it); give one")
    cli.config_file = config


def fail(message: str, code: int = 2) -> NoReturn:
    # soft_wrap: a message naming a file or a value must not be cut into lines.
    errors.print(f"[red]error:[/red] {redact_urls(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)
