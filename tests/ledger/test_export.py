"""Export streams: the right bytes, and call records streamed in flat memory."""

from __future__ import annotations

import csv
import io
import itertools
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from openpyxl import load_workbook

from tallygate.domain.records import CallRecord
from tallygate.ledger.export import (
    CALL_FIELDS,
    FOCUS_MEDIA_TYPES,
    FORMATS,
    MEDIA_TYPES,
    VIEWS,
    calls_stream,
    csv_stream,
    json_array_stream,
    ndjson_stream,
    series_columns,
    view_stream,
)
from tallygate.ledger.focus import FILE_FORMATS as FOCUS_FILE_FORMATS
from tallygate.ledger.service import Ledger
from tallygate.store.export import stream_calls
from tallygate.store.usage import CallFilter, iter_calls

US = 1_000_000
START = int(datetime(2026, 5, 1, tzinfo=UTC).timestamp()) * US


def endless_records(consumed: list[int]) -> Iterator[CallRecord]:
    """Records for ever, counting how many were taken."""
    for i in itertools.count():
        consumed[0] = i + 1
        yield CallRecord(id=f"id-{i}", ts_us=START - i * 1000, model="m", call_type="model",
                         input_tokens=i, total_tokens=i, cost_nano=i,
                         metadata={"i": i} if i % 2 else None)


@pytest.mark.parametrize("fmt", ["csv", "ndjson", "json"])
def test_call_records_are_streamed_not_gathered(fmt: str) -> None:
    consumed = [0]
    stream = calls_stream(fmt, endless_records(consumed))
    first = b"".join(itertools.islice(stream, 3))
    assert first
    assert consumed[0] <= 3 * 2001  # a few chunks' worth, never everything


def test_every_format_and_view_has_a_media_type() -> None:
    assert set(FORMATS) == {"csv", "xlsx", "json", "ndjson", "parquet", "focus"}
    assert set(MEDIA_TYPES) == set(FORMATS) - {"focus"}
    # A FOCUS dataset is a file of its own format, named by focus_format.
    assert set(FOCUS_MEDIA_TYPES) == set(FOCUS_FILE_FORMATS) == {"csv", "parquet"}
    assert set(VIEWS) == {"summary", "trend", "breakdown", "calls"}


@pytest.mark.parametrize("count", [0, 1, 1999, 2000, 2001, 4500])
def test_every_stream_holds_every_record_across_chunk_boundaries(count: int) -> None:
    records = list(itertools.islice(endless_records([0]), count))
    dicts = [r.as_dict() for r in records]
    assert json.loads(b"".join(calls_stream("json", records))) == dicts
    lines = b"".join(calls_stream("ndjson", records)).decode().splitlines()
    assert [json.loads(line) for line in lines] == dicts
    rows = list(csv.reader(io.StringIO(b"".join(calls_stream("csv", records)).decode())))
    assert rows[0] == list(CALL_FIELDS) and len(rows) == count + 1
    for row, record in zip(rows[1:], dicts, strict=True):
        shown = dict(zip(CALL_FIELDS, row, strict=True))
        assert shown["id"] == record["id"] and shown["cost"] == record["cost"]
        expected = "" if record["metadata"] is None else json.dumps(record["metadata"],
                                                                   separators=(",", ":"))
        assert shown["metadata"] == expected


def test_small_streams_and_chunking() -> None:
    header = ["a", "b"]
    rows: list[list[Any]] = [[i, None if i % 2 else f"x,{i}"] for i in range(7)]
    chunks = list(csv_stream(header, rows, rows_per_chunk=3))
    assert len(chunks) == 3
    assert list(csv.reader(io.StringIO(b"".join(chunks).decode()))) == [
        ["a", "b"], *[[str(i), "" if i % 2 else f"x,{i}"] for i in range(7)]]
    assert list(ndjson_stream([])) == []
    assert b"".join(ndjson_stream([{"a": 1}, {"b": "\n"}], per_chunk=1)) == \
        b'{"a":1}\n{"b":"\\n"}\n'
    assert json.loads(b"".join(json_array_stream(iter([])))) == []


def _xlsx(body: bytes) -> list[tuple[Any, ...]]:
    workbook = load_workbook(io.BytesIO(body), read_only=True)
    try:
        return list(workbook.worksheets[0].iter_rows(values_only=True))
    finally:
        workbook.close()


def test_views_in_every_format() -> None:
    summary = {"cards": {"model_calls": 3, "cost": {"amount": "0.50", "currency": "USD"},
                         "success_rate": 0.5, "peak_rpm": None},
               "previous": {"model_calls": None, "cost": None, "success_rate": None},
               "change": {"model_calls": None, "cost": None, "success_rate": None}}
    table = [["card", "value", "previous", "change"], ["model_calls", "3", "", ""],
             ["cost", "0.50", "", ""], ["success_rate", "0.5", "", ""],
             ["peak_rpm", "", "", ""]]
    assert list(csv.reader(io.StringIO(b"".join(view_stream("summary", "csv", summary))
                                       .decode()))) == table
    assert json.loads(b"".join(view_stream("summary", "json", summary))) == summary
    lines = b"".join(view_stream("summary", "ndjson", summary)).decode().splitlines()
    assert json.loads(lines[1]) == {"card": "cost", "value": "0.50", "previous": None,
                                    "change": None}
    rows = _xlsx(b"".join(view_stream("summary", "xlsx", summary)))
    assert rows[0] == tuple(table[0]) and rows[1][:2] == ("model_calls", 3)
    assert rows[3][:2] == ("success_rate", 0.5)

    trend = {"buckets": ["2026-05-01", "2026-05-02"],
             "series": [{"name": "m1", "values": [1, None]}, {"name": "m2", "values": [None, 4]}]}
    assert list(csv.reader(io.StringIO(b"".join(view_stream("trend", "csv", trend))
                                       .decode()))) == [["bucket", "m1", "m2"],
                                                        ["2026-05-01", "1", ""],
                                                        ["2026-05-02", "", "4"]]

    empty = {"group_by": ["api_key", "model"], "rows": []}
    assert b"".join(view_stream("breakdown", "csv", empty)) == b"api_key,model,calls\n"
    assert _xlsx(b"".join(view_stream("breakdown", "xlsx", empty))) == [
        ("api_key", "model", "calls")]


def test_series_columns_are_distinct_and_deterministic() -> None:
    series = [{"name": "k1", "label": "team"}, {"name": "k2", "label": "team"},
              {"name": "k3", "label": "bucket"}, {"name": "k4", "label": "team (k1)"},
              {"name": None, "label": None}, {"name": "solo", "label": "solo"},
              {"name": "bucket", "label": None}]
    assert series_columns(series) == ["team (k1)", "team (k2)", "bucket (k3)",
                                      "team (k1) (k4)", "(none)", "solo", "bucket #2"]
    trend = {"buckets": ["2026-05-01"],
             "series": [{**s, "values": [i]} for i, s in enumerate(series[:3])]}
    for fmt in ("ndjson", "parquet"):
        body = b"".join(view_stream("trend", fmt, trend))
        if fmt == "ndjson":
            assert json.loads(body) == {"bucket": "2026-05-01", "team (k1)": 0,
                                        "team (k2)": 1, "bucket (k3)": 2}
        else:
            pq = pytest.importorskip("pyarrow.parquet")
            assert pq.read_table(io.BytesIO(body)).to_pylist() == [
                {"bucket": "2026-05-01", "team (k1)": 0, "team (k2)": 1, "bucket (k3)": 2}]


def _stored_records(count: int, offset: int = 0) -> list[CallRecord]:
    # Four records share each timestamp: pages end in the middle of a tie.
    return [CallRecord(id=f"s-{(i * 7919) % 1000:03d}-{i + offset}",
                       ts_us=START + (i // 4) * 1000, model=("m", "n")[i % 2],
                       call_type="model", input_tokens=i, total_tokens=i, cost_nano=i)
            for i in range(offset, offset + count)]


@pytest.mark.parametrize("batch_size", [1, 3, 4, 5000])
def test_stream_calls_pages_keep_the_order_and_every_record(ledger: Ledger,
                                                            batch_size: int) -> None:
    ledger.store(_stored_records(41))
    every = sorted(iter_calls(ledger.db, CallFilter(), 0, 2**62),
                   key=lambda r: (r.ts_us, r.id), reverse=True)
    for f, lo, hi in ((CallFilter(), 0, 2**62), (CallFilter(models=("n",)), 0, 2**62),
                      (CallFilter(), START + 2000, START + 7000)):
        streamed = list(stream_calls(ledger.db, f, lo, hi, batch_size=batch_size))
        assert streamed == [r for r in every if lo <= r.ts_us < hi
                            and (not f.models or r.model in f.models)]


def test_a_slow_export_holds_no_transaction_between_pages(ledger: Ledger) -> None:
    """A download that stalls after its first page leaves nothing open: SQLite's WAL can be
    checkpointed to the end, and PostgreSQL shows no session idle in a transaction."""
    ledger.store(_stored_records(30))
    stream = stream_calls(ledger.db, CallFilter(), 0, 2**62, batch_size=10)
    first = next(stream)  # the export has started and waits for its reader
    ledger.store(_stored_records(5, offset=100))  # writes after it started
    with ledger.db.read() as conn:
        if ledger.db.is_sqlite:
            busy, log_frames, checkpointed = conn.exec_driver_sql(
                "PRAGMA wal_checkpoint(TRUNCATE)").one()
            assert (busy, log_frames, checkpointed) == (0, 0, 0)
        else:
            waiting = conn.exec_driver_sql(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND state LIKE 'idle in transaction%%'").scalar_one()
            assert waiting == 0
    # The export goes on where it stopped (the later records are newer than its first page).
    assert [first, *stream] == sorted(_stored_records(30), key=lambda r: (r.ts_us, r.id),
                                      reverse=True)
