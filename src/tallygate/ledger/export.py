"""Exports: the same figures as the API, as CSV, XLSX, JSON, NDJSON or Parquet.

Call records are streamed page by page, so an export of millions of rows runs in flat
memory; the other views are small tables. XLSX and Parquet are written to a temporary file
(their formats need the whole file before its first byte can be final) and streamed from it.
Parquet needs pyarrow, an optional extra (``pip install 'tallygate[parquet]'``); its call
records have typed columns: ``ts`` a UTC timestamp, ``cost`` an exact decimal(38, 9).
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from tallygate.domain.categories import UNITS
from tallygate.domain.records import CallRecord

FORMATS = ("csv", "xlsx", "json", "ndjson", "parquet", "focus")
PARQUET_MISSING = ("parquet needs pyarrow, which is not installed: "
                   "pip install 'tallygate[parquet]'")
PARQUET_ROWS_PER_GROUP = 65_536
VIEWS = ("summary", "trend", "breakdown", "calls")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "parquet": "application/vnd.apache.parquet",
}
FOCUS_MEDIA_TYPES = {"csv": MEDIA_TYPES["csv"], "parquet": MEDIA_TYPES["parquet"]}
CALL_FIELDS = ("id", "ts", "api_key_id", "model", "model_category", "call_type", "endpoint",
               "status_code", "input_tokens", "output_tokens", "cached_input_tokens",
               "reasoning_tokens", "total_tokens", "cost", "latency_ms", "ttft_ms",
               "estimated", "metadata", "cache_write_tokens", "units", "unit",
               "upstream_model", "repeats")


def summary_table(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    rows = []
    for name, value in summary["cards"].items():
        previous = summary["previous"].get(name)
        if name == "units":
            rows.extend(_unit_rows(value, previous, summary["change"].get(name)))
            continue
        rows.append([name, _plain(value), _plain(previous), summary["change"].get(name)])
    return ["card", "value", "previous", "change"], rows


def _unit_rows(value: dict[str, int] | None, previous: dict[str, int] | None,
               change: dict[str, float | None] | None) -> list[list[Any]]:
    """The units card, one row per unit kind either period has: ``units_image``, ..."""
    kinds = [unit for unit in UNITS if unit in (value or {}) or unit in (previous or {})]
    return [[f"units_{unit}", None if value is None else value.get(unit, 0),
             None if previous is None else previous.get(unit, 0),
             (change or {}).get(unit)] for unit in kinds]


def series_columns(series: list[dict[str, Any]], fixed: tuple[str, ...] = ("bucket",)
                   ) -> list[str]:
    """One distinct column name per series, in order. Labels are display names (two keys
    may share one, and one may be called "bucket"): a label shared with another series or
    with a fixed column gets the series' own name after it, "label (name)", and if that is
    still taken, " #2", " #3", ... — so no format merges two series or overwrites a column."""
    labels = [s.get("label") or s["name"] or "(none)" for s in series]
    counts: dict[str, int] = {}
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
    taken = set(fixed)
    columns = []
    for label, item in zip(labels, series, strict=True):
        column = label
        if counts[label] > 1 or label in taken:
            name = item["name"]
            if name and name != label:
                column = f"{label} ({name})"
        base, number = column, 1
        while column in taken:
            number += 1
            column = f"{base} #{number}"
        taken.add(column)
        columns.append(column)
    return columns


def trend_table(trend: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["bucket", *series_columns(trend["series"])]
    rows = [[bucket, *(s["values"][i] for s in trend["series"])]
            for i, bucket in enumerate(trend["buckets"])]
    return header, rows


def breakdown_table(breakdown: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """One column per field; the ``units`` of each row become a column per unit kind some
    row has (``units_image``, ...), where a row without that kind has 0."""
    items = breakdown["rows"]
    fields = list(items[0]) if items else [*breakdown["group_by"], "calls"]
    kinds = [unit for unit in UNITS if any(unit in (item.get("units") or {}) for item in items)]
    header: list[str] = []
    for field in fields:
        header.extend([f"units_{unit}" for unit in kinds] if field == "units" else [field])
    rows = []
    for item in items:
        row: list[Any] = []
        for field in fields:
            if field == "units":
                row.extend((item.get("units") or {}).get(unit, 0) for unit in kinds)
            else:
                row.append(_plain(item.get(field)))
        rows.append(row)
    return header, rows


def call_row(record: CallRecord) -> list[Any]:
    shown = record.as_dict()
    if shown["metadata"] is not None:
        shown["metadata"] = json.dumps(shown["metadata"], separators=(",", ":"))
    return [shown[name] for name in CALL_FIELDS]


def _plain(value: Any) -> Any:
    """Cost cards are ``{"amount", "currency"}``: a table shows the amount."""
    return value["amount"] if isinstance(value, dict) and "amount" in value else value


def csv_stream(header: list[str] | tuple[str, ...], rows: Iterable[list[Any]],
               rows_per_chunk: int = 2000) -> Iterator[bytes]:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for count, row in enumerate(rows, 1):
        writer.writerow(["" if v is None else v for v in row])
        if count % rows_per_chunk == 0:
            yield buffer.getvalue().encode()
            buffer.seek(0)
            buffer.truncate()
    yield buffer.getvalue().encode()


def ndjson_stream(records: Iterable[dict[str, Any]], per_chunk: int = 2000) -> Iterator[bytes]:
    lines: list[str] = []
    for record in records:
        lines.append(json.dumps(record, separators=(",", ":")))
        if len(lines) >= per_chunk:
            yield ("\n".join(lines) + "\n").encode()
            lines = []
    if lines:
        yield ("\n".join(lines) + "\n").encode()


def json_array_stream(records: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    yield b"["
    first = True
    for chunk in ndjson_stream(records):
        lines = chunk.decode().rstrip("\n").split("\n")
        body = ",".join(lines)
        yield ((" " if first else ",") + body).encode()
        first = False
    yield b"]\n"


def _xlsx_value(worksheet: Any, value: Any) -> Any:
    """Text stays text. Model names, ids and tags come from whoever calls the gateway: one
    starting with "=" must not become a formula in the admin's spreadsheet, and control
    characters, which a worksheet cannot hold at all, must not break the export."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE

    if not isinstance(value, str):
        return value
    if ILLEGAL_CHARACTERS_RE.search(value):
        value = ILLEGAL_CHARACTERS_RE.sub("\ufffd", value)
    if value.startswith("="):
        cell = WriteOnlyCell(worksheet, value=value)
        cell.data_type = "s"
        return cell
    return value


def xlsx_stream(sheet: str, header: list[str] | tuple[str, ...],
                rows: Iterable[list[Any]]) -> Iterator[bytes]:
    """Write-only workbook in a temporary file (openpyxl keeps only one row in memory)."""
    from openpyxl import Workbook

    workbook = Workbook(write_only=True)
    worksheet = workbook.create_sheet(sheet)
    worksheet.append(list(header))
    for row in rows:
        worksheet.append([_xlsx_value(worksheet, value) for value in row])
    with tempfile.TemporaryFile() as handle:
        workbook.save(handle)
        handle.seek(0)
        while chunk := handle.read(1 << 16):
            yield chunk


def parquet_available() -> bool:
    try:
        import pyarrow  # noqa: F401
        import pyarrow.parquet  # noqa: F401
    except ImportError:
        return False
    return True


def _file_chunks(handle: Any) -> Iterator[bytes]:
    handle.seek(0)
    while chunk := handle.read(1 << 16):
        yield chunk


def _call_schema() -> Any:
    import pyarrow as pa

    text, count = pa.string(), pa.int64()
    return pa.schema([
        ("id", text), ("ts", pa.timestamp("us", tz="UTC")), ("api_key_id", text),
        ("model", text), ("model_category", text), ("call_type", text), ("endpoint", text),
        ("status_code", pa.int32()), ("input_tokens", count), ("output_tokens", count),
        ("cached_input_tokens", count), ("reasoning_tokens", count), ("total_tokens", count),
        ("cost", pa.decimal128(38, 9)), ("latency_ms", pa.int64()), ("ttft_ms", pa.int64()),
        ("estimated", pa.bool_()), ("metadata", text), ("cache_write_tokens", count),
        ("units", count), ("unit", text), ("upstream_model", text), ("repeats", count),
    ])


_NANO_EXPONENT = Decimal("1e-9")


def _call_columns(records: list[CallRecord]) -> dict[str, list[Any]]:
    return {
        "id": [r.id for r in records], "ts": [r.ts_us for r in records],
        "api_key_id": [r.api_key_id for r in records], "model": [r.model for r in records],
        "model_category": [r.model_category for r in records],
        "call_type": [r.call_type for r in records], "endpoint": [r.endpoint for r in records],
        "status_code": [r.status_code for r in records],
        "input_tokens": [r.input_tokens for r in records],
        "output_tokens": [r.output_tokens for r in records],
        "cached_input_tokens": [r.cached_input_tokens for r in records],
        "reasoning_tokens": [r.reasoning_tokens for r in records],
        "total_tokens": [r.total_tokens for r in records],
        "cost": [Decimal(r.cost_nano).scaleb(-9) for r in records],
        "latency_ms": [r.latency_ms for r in records], "ttft_ms": [r.ttft_ms for r in records],
        "estimated": [r.estimated for r in records],
        "metadata": [None if r.metadata is None
                     else json.dumps(r.metadata, separators=(",", ":")) for r in records],
        "cache_write_tokens": [r.cache_write_tokens for r in records],
        "units": [r.units for r in records], "unit": [r.unit for r in records],
        "upstream_model": [r.upstream_model for r in records],
        "repeats": [r.repeats for r in records],
    }


def parquet_calls_stream(records: Iterable[CallRecord]) -> Iterator[bytes]:
    """Call records as Parquet, a row group at a time (memory: one group)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = _call_schema()
    with tempfile.TemporaryFile() as handle:
        with pq.ParquetWriter(handle, schema, compression="zstd") as writer:
            group: list[CallRecord] = []
            for record in records:
                group.append(record)
                if len(group) == PARQUET_ROWS_PER_GROUP:
                    writer.write_table(pa.table(_call_columns(group), schema=schema))
                    group = []
            if group:
                writer.write_table(pa.table(_call_columns(group), schema=schema))
        yield from _file_chunks(handle)


def parquet_table_stream(header: list[str] | tuple[str, ...],
                         rows: Iterable[list[Any]]) -> Iterator[bytes]:
    """A small table (summary, trend, breakdown) as Parquet; money stays a decimal string."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table_rows = list(rows)
    columns = {name: [row[i] for row in table_rows] for i, name in enumerate(header)}
    arrays = {}
    for name, values in columns.items():
        kind = _column_type(values)
        if kind == pa.string():
            values = [None if v is None else str(v) for v in values]
        arrays[name] = pa.array(values, type=kind)
    table = pa.table(arrays)
    with tempfile.TemporaryFile() as handle:
        pq.write_table(table, handle, compression="zstd")
        yield from _file_chunks(handle)


def _column_type(values: list[Any]) -> Any:
    """Integers stay integers, ratios floats; a column mixing them (a summary's values)
    becomes text, exactly as the CSV shows it."""
    import pyarrow as pa

    kinds = {type(v) for v in values if v is not None}
    if kinds <= {bool}:
        return pa.bool_()
    if kinds <= {int}:
        return pa.int64()
    if kinds <= {int, float} and float in kinds:
        return pa.float64()
    return pa.string()


def view_stream(what: str, fmt: str, view: dict[str, Any]) -> Iterator[bytes]:
    """A summary, trend or breakdown (as the API returns it) in ``fmt``."""
    tables = {"summary": summary_table, "trend": trend_table, "breakdown": breakdown_table}
    header, table = tables[what](view)
    if fmt == "json":
        return iter([json.dumps(view, indent=1).encode()])
    if fmt == "ndjson":
        return ndjson_stream(dict(zip(header, row, strict=True)) for row in table)
    if fmt == "xlsx":
        return xlsx_stream(what, header, table)
    if fmt == "parquet":
        return parquet_table_stream(header, table)
    return csv_stream(header, table)


def calls_stream(fmt: str, records: Iterable[CallRecord]) -> Iterator[bytes]:
    """Call records in ``fmt``, streamed."""
    if fmt == "ndjson":
        return ndjson_stream(r.as_dict() for r in records)
    if fmt == "json":
        return json_array_stream(r.as_dict() for r in records)
    if fmt == "parquet":
        return parquet_calls_stream(records)
    rows = (call_row(r) for r in records)
    if fmt == "xlsx":
        return xlsx_stream("calls", CALL_FIELDS, rows)
    return csv_stream(CALL_FIELDS, rows)


FOCUS_DECIMAL_SCALE = 20  # Parquet decimal128(38, 20): nano costs, per-million prices


def focus_stream(file_format: str, rows: Iterable[dict[str, Any]]) -> Iterator[bytes]:
    """FOCUS rows (``focus.focus_rows``) as CSV or as Parquet with typed columns: decimals
    exact decimal128(38, 20), date-times UTC timestamps, the rest text."""
    from tallygate.ledger import focus

    if file_format == "parquet":
        return _focus_parquet(list(rows))
    return csv_stream(focus.COLUMNS, ([row[name] for name in focus.COLUMNS] for row in rows))


def _focus_parquet(rows: list[dict[str, Any]]) -> Iterator[bytes]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tallygate.ledger import focus

    def typed(name: str) -> Any:
        if name in focus.DECIMAL_COLUMNS:
            return pa.decimal128(38, FOCUS_DECIMAL_SCALE)
        if name in focus.DATETIME_COLUMNS:
            return pa.timestamp("s", tz="UTC")
        return pa.string()

    def value(name: str, text: str | None) -> Any:
        if text is None:
            return None
        if name in focus.DECIMAL_COLUMNS:
            return Decimal(text)
        if name in focus.DATETIME_COLUMNS:
            return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        return text

    schema = pa.schema([(name, typed(name)) for name in focus.COLUMNS])
    table = pa.table({name: [value(name, row[name]) for row in rows]
                      for name in focus.COLUMNS}, schema=schema)
    with tempfile.TemporaryFile() as handle:
        pq.write_table(table, handle, compression="zstd")
        yield from _file_chunks(handle)
