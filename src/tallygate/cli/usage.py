"""``tallygate usage summary|trend|breakdown|calls``: the API's figures in the terminal."""

from __future__ import annotations

import json
from decimal import ROUND_HALF_UP, Decimal
from typing import Annotated, Any

import typer
from rich.table import Table

from tallygate.cli.context import console, fail, state
from tallygate.domain.categories import CALL_TYPES, MODEL_CATEGORIES
from tallygate.ledger.statistics import UsageQuery, usage_breakdown, usage_summary, usage_trend
from tallygate.ledger.timerange import BadParameter, checked_range
from tallygate.store.usage import CallFilter, iter_calls

app = typer.Typer(help="Usage statistics (the same figures as the API and the page).",
                  no_args_is_help=True)

Keys = Annotated[list[str] | None, typer.Option("--key", help="API key id (repeatable).")]
Models = Annotated[list[str] | None, typer.Option("--model", help="Model (repeatable).")]
Types = Annotated[list[str] | None, typer.Option(
    "--call-type", help=f"One of {', '.join(CALL_TYPES)} (repeatable).")]
Categories = Annotated[list[str] | None, typer.Option(
    "--category", help=f"One of {', '.join(MODEL_CATEGORIES)} (repeatable).")]
Upstreams = Annotated[list[str] | None, typer.Option(
    "--upstream-model", help="The model the upstream reported running (repeatable).")]
Period = Annotated[str | None, typer.Option(help="1d, 3d, 7d or 30d (default 7d).")]
Start = Annotated[str | None, typer.Option(help="RFC 3339 instant or YYYY-MM-DD.")]
End = Annotated[str | None, typer.Option(help="Exclusive; RFC 3339 instant or YYYY-MM-DD.")]
Tz = Annotated[str, typer.Option(help="IANA time zone for days and hours.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts).")]


def build_query(keys: list[str] | None, models: list[str] | None, types: list[str] | None,
                categories: list[str] | None, period: str | None, start: str | None,
                end: str | None, tz: str, upstream_models: list[str] | None = None
                ) -> UsageQuery:
    for value, allowed, name in ((types, CALL_TYPES, "--call-type"),
                                 (categories, MODEL_CATEGORIES, "--category")):
        for item in value or []:
            if item not in allowed:
                fail(f"{name}: {item!r} is not one of {', '.join(allowed)}")
    try:
        time_range = checked_range(period, start, end, tz)
    except BadParameter as exc:
        fail(f"--{exc.param}: {exc.message}")
    return UsageQuery(CallFilter(tuple(keys or ()), tuple(models or ()), tuple(types or ()),
                                 tuple(categories or ()), tuple(upstream_models or ())),
                      time_range)


def _percent(ratio: float, places: str) -> Decimal:
    """``ratio`` in percent, rounded as the page rounds it: from the decimal the API wrote
    (the float's shortest text), half away from zero, so 0.00115 gives 0.12, not the 0.11
    of the nearest double."""
    return (Decimal(repr(ratio)) * 100).quantize(Decimal(places), ROUND_HALF_UP)


def _show(value: Any) -> str:
    if value is None:
        return "[dim]no data[/dim]"
    if isinstance(value, dict) and "amount" in value:
        return f"{value['amount']} {value['currency']}"
    if isinstance(value, dict):  # units per kind
        return ", ".join(f"{n:,} {unit}" for unit, n in value.items()) or "–"
    if isinstance(value, float):
        return f"{_percent(value, '0.01')}%"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _change(name: str, value: float | dict[str, float | None] | None) -> str:
    """Counts change relatively (+8.0%); rates by their difference, in percentage points
    (+0.46 pp): the page's places. Units change per kind."""
    if isinstance(value, dict):
        return ", ".join(f"{_change(unit, v)} {unit}" for unit, v in value.items())
    if value is None:
        return "[dim]–[/dim]"
    colour = "green" if value >= 0 else "red"
    if name.endswith("_rate"):
        shown = f"{_percent(value, '0.01'):+,} pp"
    else:
        shown = f"{_percent(value, '0.1'):+,}%"
    return f"[{colour}]{shown}[/{colour}]"


def _when(text: str) -> str:
    """An ISO time without its fractions of a second, for titles."""
    return text.split(".")[0] + (text[-6:] if "." in text and text[-6] in "+-" else "")


def _print_json(data: Any) -> None:
    print(json.dumps(data, indent=2, ensure_ascii=False))  # noqa: T201 - for scripts


@app.command("summary")
def summary(ctx: typer.Context, key: Keys = None, model: Models = None, call_type: Types = None,
            category: Categories = None, period: Period = None, start: Start = None,
            end: End = None, tz: Tz = "UTC", as_json: AsJson = False,
            upstream_model: Upstreams = None) -> None:
    """The indicator cards, with the change against the previous period."""
    query = build_query(key, model, call_type, category, period, start, end, tz,
                        upstream_model)
    data = usage_summary(state(ctx).ledger(), query)
    if as_json:
        _print_json(data)
        return
    table = Table(title=f"Usage {_when(data['start'])} → {_when(data['end'])} ({data['tz']})")
    table.add_column("card")
    table.add_column("value", justify="right")
    table.add_column("previous", justify="right")
    table.add_column("change", justify="right")
    for name, value in data["cards"].items():
        previous = _show(data["previous"][name]) if name in data["previous"] else ""
        table.add_row(name.replace("_", " "), _show(value), previous,
                      _change(name, data["change"].get(name)))
    console.print(table)


@app.command("trend")
def trend(ctx: typer.Context, metric: Annotated[str, typer.Option(
              help="requests, total_tokens, input_tokens, output_tokens, cost, "
                   "cache_write_tokens or units (with --unit)")] = "requests",
          granularity: Annotated[str, typer.Option(help="day, hour or minute")] = "day",
          group_by: Annotated[str, typer.Option(
              help="model, api_key, call_type, model_category or upstream_model")] = "model",
          unit: Annotated[str | None, typer.Option(
              help="With --metric units: image, second, character, search_unit, page or "
                   "request")] = None,
          key: Keys = None, model: Models = None, call_type: Types = None,
          category: Categories = None, period: Period = None, start: Start = None,
          end: End = None, tz: Tz = "UTC", as_json: AsJson = False,
          upstream_model: Upstreams = None) -> None:
    """One column per model (or group), one row per bucket."""
    query = build_query(key, model, call_type, category, period, start, end, tz,
                        upstream_model)
    try:
        data = usage_trend(state(ctx).ledger(), query, metric, granularity, group_by, unit)
    except BadParameter as exc:
        fail(f"--{exc.param.replace('_', '-')}: {exc.message}")
    if as_json:
        _print_json(data)
        return
    table = Table(title=f"{metric} per {granularity} ({data['tz']})")
    table.add_column("bucket")
    for series in data["series"]:
        table.add_column(series["label"], justify="right")
    for i, bucket in enumerate(data["buckets"]):
        table.add_row(bucket, *(_show(s["values"][i]) for s in data["series"]))
    console.print(table)


@app.command("breakdown")
def breakdown(ctx: typer.Context, group_by: Annotated[str, typer.Option(
                  help="One or two of api_key, model, call_type, model_category, "
                       "upstream_model (comma-separated)")] = "model",
              sort: Annotated[str, typer.Option(help="Column; - for descending")] = "-calls",
              key: Keys = None, model: Models = None, call_type: Types = None,
              category: Categories = None, period: Period = None, start: Start = None,
              end: End = None, tz: Tz = "UTC", as_json: AsJson = False,
              percentiles: Annotated[bool, typer.Option(
                  help="Add p50/p95 latency and time to first token (exact, from raw "
                       "records)")] = False,
              upstream_model: Upstreams = None) -> None:
    """Calls, tokens, cost and rates per key, model, call type, category or upstream model."""
    query = build_query(key, model, call_type, category, period, start, end, tz,
                        upstream_model)
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    try:
        data = usage_breakdown(state(ctx).ledger(), query, groups, sort,
                               with_percentiles=percentiles)
    except BadParameter as exc:
        fail(f"--{exc.param.replace('_', '-')}: {exc.message}")
    if as_json:
        _print_json(data)
        return
    columns = [*groups, "calls", "success_calls", "failed_calls", "rate_limited_calls",
               "input_tokens", "output_tokens", "cache_write_tokens", "units", "cost",
               "cache_hit_rate", "peak_rpm", "share"]
    if "percentiles" in data:
        columns += ["p50_latency_ms", "p95_latency_ms", "p50_ttft_ms", "p95_ttft_ms"]
    table = Table(title=f"Breakdown by {', '.join(groups)} ({data['tz']})")
    for column in columns:
        table.add_column(column.replace("_", " "), justify="left" if column in groups else "right")
    for row in data["rows"]:
        shown = [row.get("api_key_name") or row.get(c) if c == "api_key" else row.get(c)
                 for c in columns]
        table.add_row(*(("" if v is None else str(v)) if c in groups else _show(v)
                        for c, v in zip(columns, shown, strict=True)))
    console.print(table)


@app.command("calls")
def calls(ctx: typer.Context, limit: Annotated[int, typer.Option(min=1, max=100_000)] = 20,
          key: Keys = None, model: Models = None, call_type: Types = None,
          category: Categories = None, period: Period = None, start: Start = None,
          end: End = None, tz: Tz = "UTC", as_json: AsJson = False,
          upstream_model: Upstreams = None) -> None:
    """The newest call records."""
    query = build_query(key, model, call_type, category, period, start, end, tz,
                        upstream_model)
    records = [r.as_dict() for r in iter_calls(state(ctx).ledger().db, query.filter,
                                               query.range.start_us, query.range.end_us,
                                               limit=limit)]
    if as_json:
        _print_json(records)
        return
    columns = ["ts", "api_key_id", "model", "upstream_model", "call_type", "status_code",
               "repeats", "input_tokens", "output_tokens", "cache_write_tokens", "units", "cost",
               "latency_ms"]
    table = Table(title=f"{len(records)} newest calls")
    for column in columns:
        table.add_column(column.replace("_", " "))
    for record in records:
        shown = dict(record, units=f"{record['units']} {record['unit']}" if record["unit"]
                     else None)
        table.add_row(*("" if shown[c] is None else str(shown[c]) for c in columns))
    console.print(table)
