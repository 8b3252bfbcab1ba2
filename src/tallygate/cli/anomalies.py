"""``tallygate anomalies list|deliveries``: what detection finds, and what the webhook sent."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.table import Table

from tallygate.cli.context import console, fail, state
from tallygate.cli.usage import (
    AsJson,
    Categories,
    End,
    Keys,
    Models,
    Period,
    Start,
    Types,
    Tz,
    build_query,
)
from tallygate.ledger.anomalies import (
    GRANULARITIES,
    KINDS,
    SCOPES,
    AnomalyParams,
    anomalies_answer,
    find_anomalies,
    parse_choices,
)
from tallygate.ledger.timerange import BadParameter
from tallygate.store.webhooks import describe, list_deliveries

app = typer.Typer(help="Spikes, error bursts and first uses of a model.", no_args_is_help=True)


@app.command("list")
def list_anomalies(
    ctx: typer.Context,
    key: Keys = None, model: Models = None, call_type: Types = None,
    category: Categories = None, period: Period = None, start: Start = None, end: End = None,
    tz: Tz = "UTC",
    kind: Annotated[list[str] | None, typer.Option(
        help=f"One of {', '.join(KINDS)} (repeatable; default all).")] = None,
    granularity: Annotated[list[str] | None, typer.Option(
        help=f"One of {', '.join(GRANULARITIES)} (repeatable; default both).")] = None,
    scope: Annotated[list[str] | None, typer.Option(
        help=f"One of {', '.join(SCOPES)} (repeatable; default both).")] = None,
    as_json: AsJson = False,
) -> None:
    """The same answer as GET /api/v1/anomalies."""
    query = build_query(key, model, call_type, category, period, start, end, tz)
    settings = state(ctx).settings()
    ledger = state(ctx).ledger(settings)
    params = AnomalyParams(threshold=settings.anomaly_threshold,
                           hour_seasonality=settings.anomaly_hour_seasonality)
    try:
        found = find_anomalies(ledger, query, params,
                               kinds=parse_choices(kind, KINDS, "kind"),
                               granularities=parse_choices(granularity, GRANULARITIES,
                                                           "granularity"),
                               scopes=parse_choices(scope, SCOPES, "scope"))
    except BadParameter as exc:
        fail(f"--{exc.param.replace('_', '-')}: {exc.message}")
    answer = anomalies_answer(ledger, query, found, params)
    if as_json:
        print(json.dumps(answer, indent=2, ensure_ascii=False))  # noqa: T201 - for scripts
        return
    if not answer["data"]:
        console.print(f"no anomalies from {answer['start']} to {answer['end']}")
        return
    table = Table(title=f"Anomalies ({answer['tz']})")
    for column in ("when", "kind", "what", "score"):
        table.add_column(column, justify="right" if column == "score" else "left")
    for item in answer["data"]:
        when = item["start"][:16] + (f" ({item['granularity']})" if item["granularity"] else "")
        table.add_row(when, item["kind"], item["message"],
                      "" if item["score"] is None else f"{item['score']:.1f}")
    console.print(table)


@app.command("deliveries")
def deliveries(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 50,
    as_json: AsJson = False,
) -> None:
    """The webhook's delivery log, newest first."""
    ledger = state(ctx).ledger()
    rows = [describe(d) for d in list_deliveries(ledger.db, limit)]
    if as_json:
        print(json.dumps({"data": rows}, indent=2))  # noqa: T201 - for scripts
        return
    table = Table(title="Webhook deliveries")
    for column in ("created", "event", "status", "attempts", "answer", "message"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["created_at"][:19], row["event"], row["status"],
                      str(row["attempts"]),
                      str(row["response_status"] or row["last_error"] or ""),
                      row["payload"]["anomaly"].get("message", ""))
    console.print(table)
