"""Importing NDJSON and CSV files: idempotent, in batches, errors by line, exports round-trip."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tallygate.domain.records import CallRecord
from tallygate.ledger import export
from tallygate.ledger.importer import detect_format, import_file, read_items
from tallygate.ledger.ingest import ItemError
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tallygate.store.usage import CallFilter, iter_calls

US = 1_000_000


def _records(ledger: Ledger) -> list[CallRecord]:
    return list(iter_calls(ledger.db, CallFilter(), 0, 2**62))


def _varied(now: datetime, count: int) -> list[CallRecord]:
    out = []
    for i in range(count):
        ts = now - timedelta(minutes=i * 7, microseconds=i * 31)
        out.append(CallRecord(
            id=f"rec-{i:03d}", ts_us=int(ts.timestamp()) * US + ts.microsecond,
            model=("m-a", "m-b", "weird, \"quoted\" model")[i % 3],
            call_type=("model", "service", "internal")[i % 3],
            api_key_id=None if i % 4 == 0 else f"key-{i % 3}",
            model_category=("chat", "embedding", "other")[i % 3],
            endpoint=None if i % 5 == 0 else "/v1/chat/completions",
            status_code=(200, 500, 429, 201)[i % 4], input_tokens=i * 11,
            output_tokens=i * 3, cached_input_tokens=i * 11 // 2, reasoning_tokens=i,
            total_tokens=i * 14, cost_nano=(0, 7, 1_234_567_891, 500)[i % 4],
            latency_ms=None if i % 6 == 0 else i * 13, ttft_ms=None if i % 2 else i,
            estimated=i % 7 == 0,
            metadata=None if i % 3 else {"team": "search", "n": i, "note": "a,b\nc"},
            cache_write_tokens=i * 11 // 4, units=i % 4 and i * 5,
            unit=("request", "image", "second", "page")[i % 4] if i % 4 else None,
            upstream_model=None if i % 5 == 1 else f"up-{i % 3}"))
    return out


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_an_export_imports_back_to_the_same_records(ledger: Ledger, tmp_path: Path,
                                                    fmt: str) -> None:
    """Export from one ledger, import into another: every field survives."""
    source = Database(f"sqlite:///{tmp_path / 'source.db'}")
    source.upgrade()
    try:
        records = _varied(datetime.now(UTC), 40)
        Ledger(source).store(records)
        path = tmp_path / f"calls.{fmt}"
        exported = iter_calls(source, CallFilter(), 0, 2**62)
        path.write_bytes(b"".join(export.calls_stream(fmt, exported)))
    finally:
        source.dispose()

    result = import_file(ledger, path)
    assert (result.accepted, result.duplicates, result.errors) == (40, 0, [])
    assert [r.as_dict() for r in _records(ledger)] == [
        r.as_dict() for r in sorted(records, key=lambda r: (r.ts_us, r.id), reverse=True)]
    again = import_file(ledger, path, batch_size=7)
    assert (again.accepted, again.duplicates, again.errors) == (0, 40, [])


def test_errors_carry_the_file_line_across_batches(ledger: Ledger, tmp_path: Path) -> None:
    now = datetime.now(UTC)
    lines = []
    bad_lines = set()
    for i in range(1, 31):
        if i % 7 == 0:
            lines.append(json.dumps({"id": f"e{i}", "ts": now.isoformat(), "model": "m",
                                     "output_tokens": -i}))
            bad_lines.add(i)
        elif i % 11 == 0:
            lines.append("{broken")
            bad_lines.add(i)
        else:
            lines.append(json.dumps({"id": f"e{i}", "ts": now.isoformat(), "model": "m"}))
    path = tmp_path / "calls.ndjson"
    path.write_text("\n".join(lines) + "\n")
    seen: list[int] = []
    result = import_file(ledger, path, batch_size=4, progress=seen.append)
    assert result.accepted == 30 - len(bad_lines)
    assert sorted(e.index for e in result.errors) == sorted(bad_lines)
    for error in result.errors:
        if error.index % 7 == 0:
            assert (error.id, error.field) == (f"e{error.index}", "output_tokens")
        else:
            assert error.field is None and "JSON" in error.message
    assert seen == sorted(seen) and seen[-1] == path.stat().st_size


def test_csv_rows_are_numbered_as_in_a_spreadsheet(ledger: Ledger, tmp_path: Path) -> None:
    now = datetime.now(UTC).isoformat()
    path = tmp_path / "calls.csv"
    path.write_text(
        "id,ts,model,input_tokens,estimated,metadata,unknown_column\n"
        f"c1,{now},m,5,true,,\n"
        f"c2,{now},m,x,false,,\n"
        f"c3,{now},m,5,maybe,,\n"
        f"c4,{now},m,5,1,\"{{\"\"k\"\": 1}}\",\n"
        f"c5,{now},m,5,0,{{not json,\n"
        f"c6,{now},m,5,0,,surprise\n",
        encoding="utf-8")
    result = import_file(ledger, path, progress=lambda _: None)
    assert result.accepted == 2
    assert [(e.index, e.id, e.field) for e in result.errors] == [
        (3, "c2", "input_tokens"), (4, "c3", "estimated"), (6, "c5", "metadata"),
        (7, "c6", "unknown_column")]
    stored = {r.id: r for r in _records(ledger)}
    assert stored["c1"].estimated is True and stored["c4"].metadata == {"k": 1}


@pytest.mark.parametrize("fmt", ["ndjson", "csv"])
def test_records_without_an_id_get_one_from_their_content_and_occurrence(
        ledger: Ledger, tmp_path: Path, fmt: str) -> None:
    """Three identical embedding calls in one second are three calls; importing the file
    again (whole, or in other batches) adds none of them twice."""
    ts = datetime.now(UTC).replace(microsecond=0).isoformat()
    same = {"ts": ts, "model": "embed", "call_type": "model", "input_tokens": 8}
    other = {**same, "input_tokens": 9}
    rows = [same, other, same, same, other]
    path = tmp_path / f"calls.{'csv' if fmt == 'csv' else 'jsonl'}"
    if fmt == "csv":
        lines = ["ts,model,call_type,input_tokens",
                 *(f"{r['ts']},{r['model']},{r['call_type']},{r['input_tokens']}"
                   for r in rows)]
        path.write_text("\r\n".join(lines) + "\r\n")
    else:
        path.write_text("\n".join(json.dumps(r) for r in rows) + "\r\n\n")
    result = import_file(ledger, path, fmt)
    assert (result.accepted, result.duplicates, result.errors) == (5, 0, [])
    stored = _records(ledger)
    assert len({r.id for r in stored}) == 5 and all(r.id.startswith("import-") for r in stored)
    assert sorted(r.input_tokens for r in stored) == [8, 8, 8, 9, 9]
    copy = tmp_path / f"copy.{path.suffix}"
    copy.write_bytes(path.read_bytes())
    for batch_size in (5000, 2, 1):
        again = import_file(ledger, copy, fmt, batch_size=batch_size)
        assert (again.accepted, again.duplicates) == (0, 5)
    assert len(_records(ledger)) == 5
    # One more identical row at the end is one more call, and only that one.
    with path.open("a") as handle:
        handle.write(lines[1] + "\r\n" if fmt == "csv" else json.dumps(same) + "\n")
    more = import_file(ledger, path, fmt)
    assert (more.accepted, more.duplicates) == (1, 5)


def test_format_detection_and_reading() -> None:
    assert detect_format(Path("a.csv")) == "csv" and detect_format(Path("A.CSV")) == "csv"
    assert detect_format(Path("a.ndjson")) == "ndjson"
    assert detect_format(Path("a.jsonl")) == "ndjson"
    items: list[tuple[int, Any]] = list(read_items(io.BytesIO(b'{"id": "a"}\n\n[1]\n{x\n'),
                                                   "ndjson"))
    assert [n for n, _ in items] == [1, 3, 4]
    assert items[0][1] == {"id": "a"} and items[1][1] == [1]
    assert isinstance(items[2][1], ItemError) and items[2][1].index == 4
    handle = io.BytesIO(b"id,model\na,m\n")
    assert list(read_items(handle, "csv")) == [(2, {"id": "a", "model": "m"})]
    assert not handle.closed  # the caller's file stays the caller's


def test_csv_line_numbers_count_blank_lines_and_quoted_line_breaks() -> None:
    text = (b'id,model,metadata\n'            # 1
            b'a,m,\n'                         # 2
            b'\n'                             # 3 blank
            b'b,m,"{""note"":\r\n'           # 4
            b' ""two lines""}"\n'             # 5
            b'c,m,,one too many\n'            # 6
            b'\n\n'                           # 7, 8
            b'd,m\n')                         # 9: a column short
    items = list(read_items(io.BytesIO(text), "csv"))
    assert [(number, item["id"]) for number, item in items] == [
        (2, "a"), (4, "b"), (6, "c"), (9, "d")]
    assert items[1][1]["metadata"] == {"note": "two lines"}


def test_csv_without_ids_tolerates_extra_values(ledger: Ledger, tmp_path: Path) -> None:
    now = datetime.now(UTC).isoformat()
    path = tmp_path / "calls.csv"
    path.write_text(f"ts,model\n{now},m,stray\n{now},m\n", encoding="utf-8")
    result = import_file(ledger, path)
    # The stray value is not a field: the rows have the same content, two calls of it.
    assert (result.accepted, result.duplicates, result.errors) == (2, 0, [])
    assert {r.metadata for r in _records(ledger)} == {None}
    assert (import_file(ledger, path).duplicates, len(_records(ledger))) == (2, 2)
