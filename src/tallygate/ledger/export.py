"""Exports: the same figures as the API, as CSV, XLSX, JSON or NDJSON.

Call records are streamed page by page, so an export of millions of rows runs in flat
memory; the other views are small tables.
"""

from __future__ import annotations

import csv
import io
import json
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

from tallygate.ledger.records import CallRecord

FORMATS = ("csv", "xlsx", "json", "ndjson")
VIEWS = ("summary", "trend", "breakdown", "calls")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "json": "application/json",
    "ndjson": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}
CALL_FIELDS = ("id", "ts", "api_key_id", "model", "model_category", "call_type", "endpoint",
               "status_code", "input_tokens", "output_tokens", "cached_input_tokens",
               "reasoning_tokens", "total_tokens", "cost", "latency_ms", "ttft_ms",
               "estimated", "metadata")


def summary_table(summary: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    rows = []
    for name, value in summary["cards"].items():
        rows.append([name, _plain(value), _plain(summary["previous"].get(name)),
                     summary["change"].get(name)])
    return ["card", "value", "previous", "change"], rows


def trend_table(trend: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    header = ["bucket", *(s.get("label") or s["name"] or "(none)" for s in trend["series"])]
    rows = [[bucket, *(s["values"][i] for s in trend["series"])]
            for i, bucket in enumerate(trend["buckets"])]
    return header, rows


def breakdown_table(breakdown: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    items = breakdown["rows"]
    header = list(items[0]) if items else [*breakdown["group_by"], "calls"]
    return header, [[_plain(item.get(column)) for column in header] for item in items]


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
    return csv_stream(header, table)


def calls_stream(fmt: str, records: Iterable[CallRecord]) -> Iterator[bytes]:
    """Call records in ``fmt``, streamed."""
    if fmt == "ndjson":
        return ndjson_stream(r.as_dict() for r in records)
    if fmt == "json":
        return json_array_stream(r.as_dict() for r in records)
    rows = (call_row(r) for r in records)
    if fmt == "xlsx":
        return xlsx_stream("calls", CALL_FIELDS, rows)
    return csv_stream(CALL_FIELDS, rows)
