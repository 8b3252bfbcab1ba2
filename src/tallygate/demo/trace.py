"""The Azure LLM inference trace (2023): real arrival times and token sizes.

The package ships a compact copy, ``data/azure_llm_2023.csv.gz`` (columns ``service``,
``offset_ms``, ``input_tokens``, ``output_tokens``), so the demo works without the original
files. Rebuild it from the published CSV files with::

    python -m tallygate.demo.trace build SRC_DIR

where ``SRC_DIR`` holds ``code.csv``, ``conv.csv`` and ``LICENSE`` from the AzurePublicDataset.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
import shutil
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from types import MappingProxyType

DATA_DIR = Path(__file__).parent / "data"
TRACE_FILE = DATA_DIR / "azure_llm_2023.csv.gz"
SERVICES = ("code", "conv")
COLUMNS = ("service", "offset_ms", "input_tokens", "output_tokens")
SOURCE_COLUMNS = ["TIMESTAMP", "ContextTokens", "GeneratedTokens"]
_TICKS_PER_MS = 10_000  # the source's timestamps have 100 ns resolution


@dataclass(frozen=True, slots=True)
class ServiceTrace:
    """One service's hour of requests, in arrival order."""

    service: str
    offsets_ms: tuple[int, ...]  # from the first request; ascending
    token_pairs: tuple[tuple[int, int], ...]  # (input, output) of the same requests

    def __len__(self) -> int:
        return len(self.offsets_ms)

    @property
    def span_ms(self) -> int:
        """From the first request to just after the last."""
        return self.offsets_ms[-1] + 1


@cache
def load_trace(path: Path = TRACE_FILE) -> Mapping[str, ServiceTrace]:
    """The trace per service (``code``, ``conv``); read once per process."""
    offsets: dict[str, list[int]] = {service: [] for service in SERVICES}
    pairs: dict[str, list[tuple[int, int]]] = {service: [] for service in SERVICES}
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        if tuple(next(reader)) != COLUMNS:
            raise ValueError(f"{path}: expected the columns {', '.join(COLUMNS)}")
        for service, offset_ms, input_tokens, output_tokens in reader:
            offsets[service].append(int(offset_ms))
            pairs[service].append((int(input_tokens), int(output_tokens)))
    return MappingProxyType({
        service: ServiceTrace(service, tuple(offsets[service]), tuple(pairs[service]))
        for service in SERVICES
    })


def _ticks(timestamp: str) -> int:
    """``2023-11-16 18:17:03.9799600`` as 100 ns ticks since the epoch (no float rounding)."""
    whole, _, fraction = timestamp.partition(".")
    seconds = int(datetime.fromisoformat(whole + "+00:00").timestamp())
    return seconds * 10_000_000 + int(fraction.ljust(7, "0")[:7])


def _read_source(csv_path: Path) -> list[tuple[int, int, int]]:
    """(ticks, input, output) of every request in one published file, in time order."""
    with csv_path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        if header != SOURCE_COLUMNS:
            raise ValueError(f"{csv_path}: expected the columns {', '.join(SOURCE_COLUMNS)}, "
                             f"found {', '.join(header)}")
        rows = [(_ticks(stamp), int(context), int(generated))
                for stamp, context, generated in reader]
    if not rows or any(context < 0 or generated < 0 for _, context, generated in rows):
        raise ValueError(f"{csv_path}: no requests, or negative token counts")
    rows.sort(key=lambda row: row[0])
    return rows


def build_trace_file(source_dir: Path, out: Path = TRACE_FILE) -> int:
    """Write the compact copy (and the licence beside it) from the published files.

    The gzip header carries no time stamp, so rebuilding from the same files gives the same
    bytes. Returns the number of requests written.
    """
    text = io.StringIO(newline="")
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(COLUMNS)
    count = 0
    for service in SERVICES:
        rows = _read_source(source_dir / f"{service}.csv")
        first = rows[0][0]
        for ticks, context, generated in rows:
            writer.writerow((service, (ticks - first) // _TICKS_PER_MS, context, generated))
        count += len(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw,
                                              mtime=0, compresslevel=9) as packed:
        packed.write(text.getvalue().encode("utf-8"))
    shutil.copyfile(source_dir / "LICENSE", out.parent / "LICENSE")
    return count


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tallygate.demo.trace",
                                     description="Rebuild the demo's copy of the Azure trace.")
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="write the .csv.gz from the published files")
    build.add_argument("source_dir", type=Path,
                       help="folder with code.csv, conv.csv and LICENSE")
    build.add_argument("--out", type=Path, default=TRACE_FILE, help="file to write")
    args = parser.parse_args(argv)
    count = build_trace_file(args.source_dir, args.out)
    sys.stdout.write(f"{count} requests written to {args.out}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
