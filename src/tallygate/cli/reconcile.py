"""``tallygate reconcile``: the ledger against a provider's own usage and cost report."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tallygate.cli.context import console, fail, state
from tallygate.ledger.timerange import BadParameter

# Exit codes, for scripts: 0 every row agrees (match or within tolerance), 1 a difference.
DIFFERENCE_EXIT = 1
_STYLE = {"match": "green", "within_tolerance": "yellow", "mismatch": "bold red",
          "missing_here": "red", "missing_there": "red"}
_SHORT = {"requests": "requests", "input_tokens": "input", "cached_input_tokens": "cached",
          "cache_write_tokens": "cache write", "output_tokens": "output", "cost": "cost"}


def reconcile(
    ctx: typer.Context,
    provider: Annotated[str, typer.Option(help="The [[providers]] entry to reconcile with.")],
    period: Annotated[str, typer.Option(
        help="Nd: the N whole UTC days before today (today is still filling).")] = "30d",
    every_row: Annotated[bool, typer.Option(
        "--all", help="Show matching rows too (by default only differences).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts): the "
                                                          "API's answer.")] = False,
) -> None:
    """Compare the ledger with a provider's usage and cost report, per UTC day x upstream
    model. Exits 1 when a row differs (mismatch, missing_here, missing_there), 0 otherwise.
    The result is stored: the page shows the last one."""
    # Here, not at the top: the HTTP client loads only for this command (start-up of others).
    from tallygate.ledger.reconciler import run_reconciliation
    from tallygate.providers import ProviderError

    cli = state(ctx)
    settings = cli.settings()
    ledger = cli.ledger(settings)
    try:
        result = asyncio.run(run_reconciliation(ledger, settings, provider, period))
    except BadParameter as exc:
        fail(f"--{exc.param}: {exc.message}")
    except ProviderError as exc:
        fail(str(exc))
    if as_json:
        print(json.dumps(result, indent=2, ensure_ascii=False))  # noqa: T201
    else:
        _print_table(result, every_row)
    if result["status"] == "mismatch":
        raise typer.Exit(DIFFERENCE_EXIT)


def _print_table(result: dict[str, Any], every_row: bool) -> None:
    """One line per compared figure (only those that differ, unless ``--all``): narrow
    enough for a terminal whatever the number of measures."""
    counts = ", ".join(f"{n} {status}" for status, n in result["counts"].items() if n)
    table = Table(title=f"{result['provider']} ({result['kind']}), UTC days {result['start']} "
                        f"to {result['end']} (exclusive): {counts or 'nothing on either side'}")
    for name in ("day", "upstream model", "measure", "status"):
        table.add_column(name, overflow="fold")
    for name in ("provider", "tallygate", "difference", "estimated"):
        table.add_column(name, justify="right", overflow="fold")
    shown = 0
    for row in result["rows"]:
        for measure, cell in row["cells"].items():
            if not every_row and cell["status"] == "match":
                continue
            shown += 1
            style = _STYLE[cell["status"]]
            table.add_row(row["day"], escape(row["upstream_model"]), _SHORT[measure],
                          f"[{style}]{cell['status']}[/{style}]", _shown(cell["provider"]),
                          _shown(cell["tallygate"]), _difference(cell["difference"]),
                          str(row["estimated_calls"] or ""))
    if shown:
        console.print(table)
    else:
        console.print(table.title)
        console.print(f"[green]{result['status']}[/green]: every row agrees.")


def _shown(value: Any) -> str:
    return "-" if value is None else str(value)


def _difference(value: int | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, int):
        return f"{value:+}"
    return value if value.startswith("-") else "+" + value
