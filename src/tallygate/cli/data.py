"""``tallygate import`` and ``tallygate export``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, DownloadColumn, Progress, TimeRemainingColumn

from tallygate.cli.context import console, fail, state
from tallygate.cli.usage import Categories, End, Keys, Models, Period, Start, Types, Tz, build_query
from tallygate.ledger import export as exports
from tallygate.ledger.focus import SubAccount, focus_export
from tallygate.ledger.importer import FILE_FORMATS, import_file
from tallygate.ledger.statistics import usage_breakdown, usage_summary, usage_trend
from tallygate.ledger.timerange import BadParameter
from tallygate.store.export import stream_calls


def import_records(
    ctx: typer.Context,
    file: Annotated[Path, typer.Argument(exists=True, dir_okay=False,
                                         help="NDJSON or CSV file of call records.")],
    format: Annotated[str | None, typer.Option(
        help="ndjson or csv (default: from the file name)")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 5000,
) -> None:
    """Import call records (idempotent: records already stored count as duplicates).

    A row without an `id` gets one from its content and its occurrence in the file: three
    identical rows are three calls, and importing the same file again adds none of them.
    """
    if format is not None and format not in FILE_FORMATS:
        fail(f"--format: must be one of {', '.join(FILE_FORMATS)}")
    ledger = state(ctx).ledger()
    size = file.stat().st_size
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(f"importing {file.name}", total=size)
        result = import_file(ledger, file, format, batch_size=batch_size,
                             progress=lambda done: bar.update(task, completed=done))
    console.print(f"accepted {result.accepted:,}, duplicates {result.duplicates:,}, "
                  f"rejected {len(result.errors):,}")
    for error in result.errors[:20]:
        field = f" {error.field}:" if error.field else ""
        console.print(f"  line {error.index}:{field} {error.message}", highlight=False)
    if len(result.errors) > 20:
        console.print(f"  … and {len(result.errors) - 20:,} more")
    if result.errors:
        raise typer.Exit(1)


def export_records(
    ctx: typer.Context,
    what: Annotated[str, typer.Option(help="summary, trend, breakdown or calls")] = "calls",
    format: Annotated[str, typer.Option(
        help="csv, xlsx, json, ndjson, parquet (parquet needs the `parquet` extra) or focus "
             "(a FinOps FOCUS 1.2 dataset; --what is ignored)")] = "csv",
    focus_format: Annotated[str, typer.Option(
        help="With --format focus: csv or parquet")] = "csv",
    output: Annotated[Path | None, typer.Option(
        "--output", "-o", help="File to write (default: standard output; xlsx and parquet "
                               "need a file)")] = None,
    metric: str = "requests", granularity: str = "day",
    group_by: Annotated[str, typer.Option(help="For trend and breakdown")] = "model",
    key: Keys = None, model: Models = None, call_type: Types = None,
    category: Categories = None, period: Period = None, start: Start = None, end: End = None,
    tz: Tz = "UTC",
) -> None:
    """Write the same exports as GET /api/v1/usage/export."""
    if format not in exports.FORMATS:
        fail(f"--format: must be one of {', '.join(exports.FORMATS)}")
    if what not in exports.VIEWS:
        fail(f"--what: must be one of {', '.join(exports.VIEWS)}")
    if format == "parquet" and not exports.parquet_available():
        fail(f"--format: {exports.PARQUET_MISSING}")
    binary = format in ("xlsx", "parquet") or (format == "focus" and focus_format == "parquet")
    if binary and output is None:
        fail(f"--output: a{'n' if format == 'xlsx' else ''} "
             f"{'parquet' if format == 'focus' else format} export needs a file")
    query = build_query(key, model, call_type, category, period, start, end, tz)
    ledger = state(ctx).ledger()
    groups = [g.strip() for g in group_by.split(",") if g.strip()]
    try:
        if format == "focus":
            accounts = {k.id: SubAccount(k.name, tuple(k.tags)) for k in state(ctx).keys().list()}
            chunks = focus_export(ledger, query, accounts, focus_format)
        elif what == "calls":
            chunks = exports.calls_stream(format, stream_calls(
                ledger.db, query.filter, query.range.start_us, query.range.end_us))
        else:
            chunks = exports.view_stream(
                what, format,
                usage_summary(ledger, query) if what == "summary" else
                usage_trend(ledger, query, metric, granularity, groups[0]) if what == "trend"
                else usage_breakdown(ledger, query, groups))
    except BadParameter as exc:
        fail(f"--{exc.param.replace('_', '-')}: {exc.message}")
    if output is None:
        for chunk in chunks:
            sys.stdout.buffer.write(chunk)
        return
    with output.open("wb") as handle:
        for chunk in chunks:
            handle.write(chunk)
    console.print(f"wrote {output}")
