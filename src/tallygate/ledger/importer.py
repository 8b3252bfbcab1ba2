"""Importing call records from NDJSON or CSV files: idempotent, in batches, with progress.

A record without an ``id`` gets one derived from its content and its occurrence within the
file (the n-th row with the same content is occurrence n): identical rows in one file are
separate calls, and importing the same file twice still counts every call once.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, BinaryIO

from tallygate.ledger.ingest import IngestResult, ItemError, ingest_events
from tallygate.ledger.service import Ledger

FILE_FORMATS = ("ndjson", "csv")
_INT_FIELDS = {"status_code", "input_tokens", "output_tokens", "cached_input_tokens",
               "reasoning_tokens", "total_tokens", "latency_ms", "ttft_ms",
               "cache_write_tokens", "units", "repeats"}


def detect_format(path: Path) -> str:
    return "csv" if path.suffix.lower() == ".csv" else "ndjson"


class ContentIds:
    """Ids for the id-less rows of one file: from the row's content and how many times that
    content came before it in the file. The first occurrence's id is the content's hash
    alone (as before occurrences were counted, so files imported then still match);
    contents never hold a line break, so ``content + "\n#n"`` cannot be another row's."""

    def __init__(self) -> None:
        # Keyed by 64 bits of the hash (about 70 bytes a distinct row): two contents sharing
        # a counter only shift each other's numbers, the same way on every import.
        self._seen: dict[int, int] = {}

    def __call__(self, content: bytes) -> str:
        digest = hashlib.sha256(content).digest()
        slot = int.from_bytes(digest[:8], "big")
        occurrence = self._seen.get(slot, 0) + 1
        self._seen[slot] = occurrence
        if occurrence > 1:
            digest = hashlib.sha256(content + b"\n#%d" % occurrence).digest()
        return "import-" + digest.hex()[:32]


def _csv_value(name: str, text: str) -> Any:
    if text == "":
        return None
    if name in _INT_FIELDS:
        try:
            return int(text)
        except ValueError:
            return text  # validation names the field
    if name == "estimated":
        return {"true": True, "false": False, "1": True, "0": False}.get(text.lower(), text)
    if name == "metadata":
        try:
            return json.loads(text)
        except ValueError:
            return text
    return text


def read_items(handle: BinaryIO, fmt: str) -> Iterator[tuple[int, Any]]:
    """``(line number, item)`` for every record; an unreadable line yields its error text."""
    content_id = ContentIds()
    if fmt == "ndjson":
        for number, raw in enumerate(handle, 1):
            if not raw.strip():
                continue
            try:
                item = json.loads(raw)
            except ValueError as exc:
                yield number, ItemError(number, None, None, f"not valid JSON: {exc}")
                continue
            if isinstance(item, dict) and "id" not in item:
                item["id"] = content_id(raw.strip())
            yield number, item
        return
    # utf-8-sig: spreadsheets start their CSV files with a byte-order mark.
    text = io.TextIOWrapper(handle, encoding="utf-8-sig", newline="")
    try:
        reader = csv.DictReader(text)
        for row in reader:
            # Values beyond the header's columns come under the key None: not a field.
            fields = {name: value for name, value in row.items() if name is not None}
            # The row's first line in the file (blank lines before it and line breaks
            # inside its quoted values count, as in an editor).
            number = reader.line_num - sum(value.count("\n") for value in fields.values()
                                           if value is not None)
            item = {name: _csv_value(name, value or "") for name, value in fields.items()}
            item = {name: value for name, value in item.items() if value is not None}
            if "id" not in item:
                item["id"] = content_id(json.dumps(fields, sort_keys=True).encode())
            yield number, item
    finally:
        # Let go of the file without closing it: the caller owns it and still reads its
        # position for the progress bar.
        text.detach()


def import_file(ledger: Ledger, path: Path, fmt: str | None = None, *, batch_size: int = 5000,
                progress: Callable[[int], None] | None = None) -> IngestResult:
    """Import ``path``; errors name the file's line. ``progress`` gets bytes read so far."""
    fmt = fmt or detect_format(path)
    total = IngestResult()
    with path.open("rb") as handle:
        lines: list[int] = []
        items: list[Any] = []

        def flush() -> None:
            result = ingest_events(ledger, items)
            for error in result.errors:  # report the file's line, not the batch index
                total.errors.append(ItemError(lines[error.index], error.id, error.field,
                                              error.message))
            total.accepted += result.accepted
            total.duplicates += result.duplicates
            lines.clear()
            items.clear()
            if progress is not None:
                progress(handle.tell())

        for number, item in read_items(handle, fmt):
            if isinstance(item, ItemError):
                total.errors.append(item)
                continue
            lines.append(number)
            items.append(item)
            if len(items) >= batch_size:
                flush()
        if items:
            flush()
    return total
