"""``tallygate import`` and ``tallygate export``."""

from __future__ import annotations

import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
)

from tallygate.cli.context import console, fail, state
from tallygate.cli.usage import Categories, End, Keys, Models, Period, Start, Types, Tz, build_query
from tallygate.importers import (
    DEFAULT_QUOTA_PER_UNIT,
    SOURCES,
    ImportSummary,
    SourceError,
    import_history,
)
from tallygate.ledger import export as exports
from tallygate.ledger.focus import SubAccount, focus_export
from tallygate.ledger.importer import FILE_FORMATS, import_file
from tallygate.ledger.statistics import usage_breakdown, usage_summary, usage_trend
from tallygate.ledger.timerange import BadParameter
from tallygate.store.export import stream_calls


def import_records(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(
        metavar="FILE|SOURCE",
        help="NDJSON or CSV file of call records; with --from, where the other gateway's "
             "history is: a PostgreSQL URL or a CSV export (litellm), a SQLite file, a "
             "PostgreSQL URL or a MySQL/MariaDB URL (new-api, one-api).")],
    format: Annotated[str | None, typer.Option(
        help="ndjson or csv (default: from the file name)")] = None,
    from_: Annotated[str | None, typer.Option(
        "--from", help="Import another gateway's history: litellm, new-api or one-api "
                       "(see docs/ingest.md).")] = None,
    quota_per_unit: Annotated[str, typer.Option(
        help="With --from new-api/one-api: quota per US dollar (both ship 500000).")
    ] = str(DEFAULT_QUOTA_PER_UNIT),
    instance: Annotated[str | None, typer.Option(
        help="With --from: a name for this installation of the gateway, part of every "
             "record id and key identity, when histories of two installations are "
             "imported (their row ids repeat).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, max=100_000)] = 5000,
) -> None:
    """Import call records (idempotent: records already stored count as duplicates).

    A row without an `id` gets one from its content and its occurrence in the file: three
    identical rows are three calls, and importing the same file again adds none of them.

    With `--from`, the history of LiteLLM (LiteLLM_SpendLogs), New API or One API (their
    logs table): ids come from the source's own, so a re-import adds nothing; keys the
    source names are created disabled and tagged `imported`.
    """
    if from_ is not None:
        if format is not None:
            fail("--format: only for call-record files; --from reads the source's own format")
        _import_history(ctx, from_, file, quota_per_unit, instance, batch_size)
        return
    if format is not None and format not in FILE_FORMATS:
        fail(f"--format: must be one of {', '.join(FILE_FORMATS)}")
    path = Path(file)
    if not path.is_file():
        fail(f"FILE: {file} does not exist or is not a file")
    ledger = state(ctx).ledger()
    size = path.stat().st_size
    with Progress("[progress.description]{task.description}", BarColumn(), DownloadColumn(),
                  TimeRemainingColumn(), console=console, transient=True) as bar:
        task = bar.add_task(f"importing {path.name}", total=size)
        result = import_file(ledger, path, format, batch_size=batch_size,
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


def _import_history(ctx: typer.Context, kind: str, source: str, quota_per_unit: str,
                    instance: str | None, batch_size: int) -> None:
    if kind not in SOURCES:
        fail(f"--from: must be one of {', '.join(SOURCES)}")
    try:
        per_unit = Decimal(quota_per_unit)
    except InvalidOperation:
        per_unit = Decimal(0)
    if not per_unit.is_finite() or per_unit <= 0:
        fail("--quota-per-unit: must be a number greater than 0")
    ledger = state(ctx).ledger()
    with Progress("[progress.description]{task.description}", BarColumn(),
                  MofNCompleteColumn(), TextColumn("rows"), TimeRemainingColumn(),
                  console=console, transient=True) as bar:
        task = bar.add_task(f"importing {kind} history", total=None)
        try:
            summary = import_history(
                ledger, kind, source, quota_per_unit=per_unit, instance=instance,
                batch_size=batch_size,
                on_total=lambda total: bar.update(task, total=total),
                progress=lambda done: bar.update(task, completed=done))
        except SourceError as exc:
            fail(f"SOURCE: {exc}")
    print_summary(summary)
    if summary.rejected:
        raise typer.Exit(1)


def print_summary(summary: ImportSummary) -> None:
    skipped = sum(summary.skipped.values())
    console.print(f"rows read {summary.rows_read:,}, imported {summary.imported:,}, "
                  f"duplicates {summary.duplicates:,}, skipped {skipped:,}, "
                  f"rejected {len(summary.rejected):,}", highlight=False)
    for reason, count in summary.skipped.most_common():
        console.print(f"  skipped {count:,}: {reason}", highlight=False)
    if summary.keys_created:
        console.print(f"keys created {summary.keys_created:,} (disabled, tagged imported)",
                      highlight=False)
    for error in summary.rejected[:20]:
        field = f" {error.field}:" if error.field else ""
        console.print(f"  rejected {error.id}:{field} {error.message}", highlight=False)
    if len(summary.rejected) > 20:
        console.print(f"  … and {len(summary.rejected) - 20:,} more rejected")


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
