"""``tallygate pricing list|set|discount|recompute``: the price table and repricing."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

import typer
from rich.table import Table

from tallygate.cli.context import console, fail, state
from tallygate.cli.usage import AsJson, Categories, End, Keys, Models, Start, Types, build_query
from tallygate.domain.pricing import Price
from tallygate.domain.records import format_ts, now_us
from tallygate.keys.service import KeyNotFound, KeyService
from tallygate.ledger.reprice import reprice
from tallygate.ledger.timerange import to_us
from tallygate.store.meta import write_audit

app = typer.Typer(help="Prices per model over time, key discounts, and repricing.",
                  no_args_is_help=True)
ACTOR = "cli"

From = Annotated[str | None, typer.Option(
    "--from", help="When it takes effect: an RFC 3339 instant or YYYY-MM-DD (UTC midnight); "
                   "default now.")]


def _decimal(option: str, text: str | None) -> Decimal | None:
    if text is None:
        return None
    try:
        value = Decimal(text)
    except InvalidOperation:
        fail(f"{option}: {text!r} is not a decimal number")
    if not value.is_finite() or value < 0:
        fail(f"{option}: must be a non-negative decimal")
    return value


def _moment(option: str, text: str | None) -> int:
    if text is None:
        return now_us()
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        fail(f"{option}: {text!r} is neither RFC 3339 nor YYYY-MM-DD")
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return to_us(moment)


@app.command("list")
def list_prices(
    ctx: typer.Context,
    model: Models = None,
    current: Annotated[bool, typer.Option(help="Only the prices in force now.")] = False,
    as_json: AsJson = False,
) -> None:
    """Every model's prices over time (per million tokens; per call), and key discounts."""
    ledger = state(ctx).ledger()
    table, discounts, now = ledger.prices(), ledger.discounts(), now_us()
    rows: list[dict[str, Any]] = []
    for price in sorted(table.all_prices(), key=lambda p: (p.model, p.effective_from_us)):
        if model and price.model not in model:
            continue
        history = table.history(price.model)
        index = history.index(price)
        until = history[index + 1].effective_from_us if index + 1 < len(history) else None
        in_force = price.effective_from_us <= now and (until is None or now < until)
        if current and not in_force:
            continue
        rows.append({"model": price.model, "effective_from": format_ts(price.effective_from_us),
                     "effective_until": None if until is None else format_ts(until),
                     "in_force": in_force, "input_per_million": str(price.input_per_million),
                     "cached_input_per_million": None if price.cached_input_per_million is None
                     else str(price.cached_input_per_million),
                     "output_per_million": str(price.output_per_million),
                     "per_call": str(price.per_call), "currency": price.currency,
                     "cache_write_per_million": None if price.cache_write_per_million is None
                     else str(price.cache_write_per_million),
                     "per_unit": str(price.per_unit)})
    shown_discounts = [{"api_key_id": d.api_key_id, "percent": str(d.percent),
                        "effective_from": format_ts(d.effective_from_us)}
                       for d in discounts.all_discounts()]
    if as_json:
        print(json.dumps({"currency": ledger.currency, "data": rows,  # noqa: T201
                          "discounts": shown_discounts}, indent=2))
        return
    out = Table(title=f"Prices ({ledger.currency} per million tokens)")
    for column in ("model", "from", "until", "input", "cached input", "cache write", "output",
                   "per call", "per unit"):
        out.add_column(column, justify="left" if column in ("model", "from", "until")
                       else "right")
    for row in rows:
        style = None if row["in_force"] else "dim"
        out.add_row(row["model"], _short(row["effective_from"]),
                    _short(row["effective_until"] or ""),
                    row["input_per_million"], row["cached_input_per_million"] or "=input",
                    row["cache_write_per_million"] or "=input", row["output_per_million"],
                    row["per_call"], row["per_unit"], style=style)
    console.print(out)
    for d in shown_discounts:
        console.print(f"key {d['api_key_id']}: {d['percent']} % off from "
                      f"{d['effective_from'][:19]}")


def _short(ts: str) -> str:
    """``2026-11-01T00:00:00.000000Z`` as ``2026-11-01 00:00``."""
    return ts[:16].replace("T", " ")


@app.command("set")
def set_price(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="The public model name.")],
    input: Annotated[str, typer.Option("--input", help="Per million input tokens.")] = "0",
    output: Annotated[str, typer.Option("--output", help="Per million output tokens.")] = "0",
    cached_input: Annotated[str | None, typer.Option(
        "--cached-input", help="Per million cached input tokens (default: the input "
                               "price).")] = None,
    per_call: Annotated[str, typer.Option("--per-call", help="Per successful call.")] = "0",
    cache_write: Annotated[str | None, typer.Option(
        "--cache-write-per-million", help="Per million input tokens written to a prompt "
                                          "cache (default: the input price).")] = None,
    per_unit: Annotated[str, typer.Option(
        "--per-unit", help="Per unit a call is billed by (image, second, character, "
                           "search unit, page, request).")] = "0",
    effective_from: From = None,
) -> None:
    """Set a model's price from a moment on. Calls already stored keep their cost: run
    `pricing recompute` over the range a correction covers."""
    ledger = state(ctx).ledger()
    price = Price(model=model, effective_from_us=_moment("--from", effective_from),
                  input_per_million=_decimal("--input", input) or Decimal(0),
                  output_per_million=_decimal("--output", output) or Decimal(0),
                  cached_input_per_million=_decimal("--cached-input", cached_input),
                  per_call=_decimal("--per-call", per_call) or Decimal(0),
                  currency=ledger.currency,
                  cache_write_per_million=_decimal("--cache-write-per-million", cache_write),
                  per_unit=_decimal("--per-unit", per_unit) or Decimal(0))
    try:
        ledger.set_price(price)
    except ValueError as exc:
        fail(str(exc))
    write_audit(ledger.db, ACTOR, "price.set", model,
                {"effective_from": price.effective_from_us, "input_per_million": input,
                 "output_per_million": output, "cached_input_per_million": cached_input,
                 "per_call": per_call, "cache_write_per_million": cache_write,
                 "per_unit": per_unit})
    console.print(f"{model}: {input} in, {cached_input or input} cached, "
                  f"{cache_write or input} cache write, {output} out per million, "
                  f"{per_call} per call, {per_unit} per unit ({ledger.currency}) from "
                  f"{format_ts(price.effective_from_us)[:19]}Z")


@app.command("discount")
def set_discount(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The API key's id.")],
    percent: Annotated[str, typer.Argument(help="Percent off the price table, 0-100.")],
    effective_from: From = None,
) -> None:
    """Give a key a discount on its calls from a moment on (0 ends it)."""
    value = _decimal("PERCENT", percent)
    assert value is not None
    if value > 100:
        fail("PERCENT: must be between 0 and 100")
    start = _moment("--from", effective_from)
    ledger = state(ctx).ledger()
    try:
        KeyService(ledger.db).set_discount(key_id, value, ACTOR, start)
    except KeyNotFound:
        fail(f"no API key with id {key_id!r}")
    console.print(f"key {key_id}: {value} % off from {format_ts(start)[:19]}Z")


@app.command("recompute")
def recompute(
    ctx: typer.Context,
    start: Start = None, end: End = None,
    key: Keys = None, model: Models = None, call_type: Types = None,
    category: Categories = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Only report what would "
                                                           "change.")] = False,
    as_json: AsJson = False,
) -> None:
    """Reprice the stored calls of a range from the price table and discounts as they are
    now, and fix the rollups in the same transaction. --start is required."""
    if start is None:
        fail("--start: give the beginning of the range to reprice")
    query = build_query(key, model, call_type, category, None, start, end, "UTC")
    ledger = state(ctx).ledger()
    with console.status("repricing…"):
        report = reprice(ledger, query.range.start_us, query.range.end_us, query.filter,
                         dry_run=dry_run)
    shown = report.as_dict(ledger.currency)
    if not dry_run and report.changed:
        write_audit(ledger.db, ACTOR, "price.recompute", None,
                    {k: shown[k] for k in ("start", "end", "changed", "before", "after")})
    if as_json:
        print(json.dumps(shown, indent=2))  # noqa: T201 - for scripts
        return
    verb = "would change" if dry_run else "changed"
    sign = "" if shown["difference"].startswith("-") else "+"
    say = console.print
    say(f"{shown['start']} – {shown['end']}: {report.examined:,} calls examined, "
        f"{report.changed:,} {verb}; total {shown['before']} → {shown['after']} "
        f"{ledger.currency} ({sign}{shown['difference']})", soft_wrap=True)
    for row in shown["models"]:
        say(f"  {row['model']}: {row['changed']:,} calls, {row['before']} → {row['after']}",
            soft_wrap=True)
    if report.unpriced:
        say(f"{report.unpriced:,} calls of models without a price kept their cost",
            soft_wrap=True)
    if shown["raw_records_from"]:
        say(f"raw records only exist from {shown['raw_records_from']}: earlier calls (in the "
            "rollups only) kept their cost", soft_wrap=True)
