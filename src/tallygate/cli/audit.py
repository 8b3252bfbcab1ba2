"""``tallygate audit``: who changed which key, price or setting, and when."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from tallygate.api.cursor import decode_int_cursor, encode_cursor
from tallygate.cli.context import console, fail, state
from tallygate.keys.audit import audit_filter, read_audit
from tallygate.ledger.timerange import BadParameter

_OPTION_OF = {"api_key_id": "--key"}


def _details(details: dict[str, Any] | None) -> str:
    if not details:
        return ""
    # One per line: a narrow terminal wraps between details, not inside one.
    return "\n".join(f"{name}={json.dumps(value, ensure_ascii=False)}"
                     for name, value in details.items())


def audit(
    ctx: typer.Context,
    actor: Annotated[str | None, typer.Option(
        help="Only changes by this actor: admin, cli, or key:ID.")] = None,
    action: Annotated[list[str] | None, typer.Option(
        help="Only this action, e.g. key.create, key.update, key.rotate, key.delete, "
             "price.set (repeatable).")] = None,
    key: Annotated[str | None, typer.Option(
        "--key", help="Only the changes of this API key id.")] = None,
    start: Annotated[str | None, typer.Option(
        help="RFC 3339 instant (inclusive); a bare date is its first instant in UTC.")] = None,
    end: Annotated[str | None, typer.Option(
        help="RFC 3339 instant (exclusive), after --start.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="Entries to show.")] = 50,
    cursor: Annotated[str | None, typer.Option(
        help="next_cursor of a previous --json page: continue after it.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON (for scripts): the "
                                                          "API's page.")] = False,
) -> None:
    """The audit log, newest first: every key, price and setting change."""
    try:
        f = audit_filter(actor=actor, actions=action, api_key_id=key, start=start, end=end)
        before = None if cursor is None else decode_int_cursor(cursor)
    except BadParameter as exc:
        fail(f"{_OPTION_OF.get(exc.param, '--' + exc.param.replace('_', '-'))}: "
             f"{exc.message}")
    page = read_audit(state(ctx).ledger().db, f, before=before, limit=limit)
    next_cursor = None if page.next_position is None else encode_cursor(*page.next_position)
    if as_json:
        print(json.dumps({"data": page.entries, "has_more": next_cursor is not None,  # noqa: T201
                          "next_cursor": next_cursor}, indent=2, ensure_ascii=False))
        return
    more = " (more: --cursor " + next_cursor + ")" if next_cursor else ""
    table = Table(title=f"{len(page.entries)} newest audit entries{more}")
    table.add_column("time (UTC)", no_wrap=True)
    table.add_column("actor")
    table.add_column("action", no_wrap=True)
    table.add_column("target", no_wrap=True)
    table.add_column("details", overflow="fold")
    for entry in page.entries:
        # To the second in the table; --json has the microseconds.
        table.add_row(entry["ts"][:19].replace("T", " "), escape(entry["actor"]),
                      entry["action"],
                      escape(entry["target"] or ""), escape(_details(entry["details"])))
    console.print(table)
