"""``tallygate db upgrade|check|purge``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.progress import Progress
from rich.table import Table

from tallygate.cli.context import console, fail, state
from tallygate.ledger.maintenance import check_rollups, purge_expired
from tallygate.store.schema import TIER_BY_NAME

app = typer.Typer(help="The database: migrations, checks, retention.", no_args_is_help=True)


@app.command("upgrade")
def upgrade(ctx: typer.Context) -> None:
    """Create or upgrade the schema in place (safe to run again)."""
    cli = state(ctx)
    db = cli.database(cli.settings().database_url)
    try:
        before = db.current_revision()
        db.upgrade()
    except Exception as exc:  # the driver's message says what is wrong
        fail(f"cannot upgrade the database: {exc}")
    after = db.current_revision()
    if before == after:
        console.print(f"already at the newest schema ({after})")
    else:
        console.print(f"upgraded the schema from {before or 'nothing'} to {after}")


@app.command("check")
def check(ctx: typer.Context, repair: Annotated[bool, typer.Option(
        help="Replace rollup rows that differ with the ones rebuilt from raw records.")] = False,
          show: Annotated[int, typer.Option(help="Differences to list at most.")] = 20) -> None:
    """Rebuild the rollups from the raw records and report every difference."""
    ledger = state(ctx).ledger()
    with Progress(console=console, transient=True) as bar:
        task = bar.add_task("checking rollups", total=None)
        report = check_rollups(ledger, repair=repair, progress=lambda done, total: bar.update(
            task, completed=done, total=total))
    if report.checked_from_s is None:
        console.print("no raw call records: nothing to check")
        return
    console.print(f"compared {report.rows_compared:,} rollup rows")
    if report.ok:
        console.print("[green]rollups match the raw records[/green]")
        return
    table = Table(title=f"{len(report.differences)} differences")
    for column in ("table", "bucket", "key", "model", "category", "type", "stored", "rebuilt"):
        table.add_column(column)
    for diff in report.differences[:show]:
        values = dict(zip(("bucket", *TIER_BY_NAME[diff.table].dimensions), diff.key,
                          strict=True))
        key = [str(values.get(column, "(all)"))
               for column in ("bucket", "api_key_id", "model", "model_category", "call_type")]
        table.add_row(diff.table, *key,
                      "missing" if diff.stored is None else f"{diff.stored[0]} calls",
                      "none" if diff.rebuilt is None else f"{diff.rebuilt[0]} calls")
    console.print(table)
    if repair:
        console.print(f"repaired {report.repaired} rows")
    else:
        console.print("run again with --repair to rewrite them from the raw records")
        raise typer.Exit(1)


@app.command("purge")
def purge(ctx: typer.Context) -> None:
    """Delete raw records and minute rollups past their retention (the server does this
    hourly)."""
    ledger = state(ctx).ledger()
    result = purge_expired(ledger)
    console.print(f"deleted {result.raw_deleted:,} raw records and "
                  f"{result.minute_rows_deleted:,} minute rollup rows")
    floor_us = ledger.purge_floor_us()
    if floor_us:
        floor = datetime.fromtimestamp(floor_us / 1_000_000, UTC)
        console.print(f"purge floor: {floor:%Y-%m-%dT%H:%M:%SZ} (older records are refused)")
