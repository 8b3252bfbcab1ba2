"""The spool: call records kept on local disk while the database cannot take them.

When a write to the ledger fails, :class:`SpoolingStore` appends the batch to the spool
instead — one JSON record a line, ``fsync``'d before the write counts as done — and keeps
appending there while the database is away, so the records stay in their order. It tries the
database again with back-off; once it answers, the spool is replayed oldest first through
``Ledger.store``, which is idempotent on record ids: a segment replayed twice (a process died
after storing it but before deleting it) adds nothing twice.

The spool is a directory of segment files. Each process appends to its own segment, which it
holds locked (``flock``) while it is open; a replay first closes ("rotates") its own segment,
then replays every segment no live process holds, its own and those a dead process left
behind, and deletes each once stored. Segments live in a subdirectory named by a hash of the
database URL, so a spool is only ever replayed into the database its records were meant for.

A write can also fail because of the records themselves (a value no column can hold): such a
batch must not hold every later record back for ever. When a replayed batch fails with
anything but an outage (:func:`is_outage`), it is split until the records that cannot be
stored are found; those are set aside in ``<segment>.rejected`` (and logged as errors) for an
operator, and the rest go in. Records the ledger refuses because they are older than its
purge floor (a spool replayed after a long outage and a purge) are set aside and logged the
same way, and counted in ``Spool.refused``: retrying them could never succeed.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy.exc

from tallygate.domain.records import CallRecord
from tallygate.store.calls import InsertResult

log = logging.getLogger("tallygate.spool")

SUFFIX = ".ndjson"
CORRUPT_SUFFIX = ".corrupt"
REJECTED_SUFFIX = ".rejected"
FIRST_RETRY_S = 0.1
LONGEST_RETRY_S = 5.0
ORPHAN_CHECK_S = 30.0  # how often a healthy process looks for segments a dead one left
DAY_US = 86_400 * 1_000_000
_FIELDS = tuple(CallRecord.__dataclass_fields__)

Store = Callable[[list[CallRecord]], InsertResult]
# What a database that cannot be reached (or opened, or written now) raises; anything else
# from a write is about the records.
_OUTAGES = (OSError, sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError,
            sqlalchemy.exc.TimeoutError, sqlite3.OperationalError, sqlite3.InterfaceError)


def is_outage(exc: BaseException) -> bool:
    """Whether a failed write means "try again later" rather than "these records cannot be
    stored"."""
    if isinstance(exc, _OUTAGES):
        return True
    # psycopg is only loaded for a PostgreSQL ledger; without it, none of its errors exist.
    psycopg = sys.modules.get("psycopg")
    return psycopg is not None and isinstance(exc, (psycopg.OperationalError,
                                                    psycopg.InterfaceError))


def spool_directory(spool_dir: str | None, database_url: str) -> Path:
    """Where the spool of ``database_url`` lives: ``spool_dir`` (by default beside a SQLite
    file, else the working directory's ``tallygate-spool``), one subdirectory per database."""
    if spool_dir is not None:
        base = Path(spool_dir)
    elif database_url.startswith("sqlite:///") and ":memory:" not in database_url:
        base = Path(database_url.removeprefix("sqlite:///")).parent / "tallygate-spool"
    else:
        base = Path("tallygate-spool")
    return base / hashlib.sha256(database_url.encode()).hexdigest()[:16]


def encode_records(records: Sequence[CallRecord]) -> bytes:
    """One JSON object a line. The standard library's json, not orjson: a record the
    database refused may hold an integer beyond 64 bits, which must come back exactly."""
    return "".join(json.dumps({name: getattr(r, name) for name in _FIELDS},
                              separators=(",", ":")) + "\n" for r in records).encode()


def decode_record(line: bytes) -> CallRecord:
    values: dict[str, Any] = json.loads(line)
    return CallRecord(**values)


class Spool:
    """Append-only segments of NDJSON call records in one directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._path: Path | None = None
        self._size = 0
        self.refused = 0  # replayed records refused as older than the purge floor

    def append(self, records: Sequence[CallRecord]) -> None:
        """Write ``records`` at the end of this process's segment and ``fsync`` it."""
        data = encode_records(records)
        with self._lock:
            if self._fd is None:
                self._open_segment()
            assert self._fd is not None
            view = memoryview(data)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
            self._size += len(data)

    def rotate(self) -> bool:
        """Close this process's segment, so a replay can take it. True if it held records."""
        with self._lock:
            had_records = self._size > 0
            if self._fd is not None:
                os.close(self._fd)  # releases the lock
            self._fd, self._path, self._size = None, None, 0
            return had_records

    def close(self) -> None:
        self.rotate()

    def segments(self) -> list[Path]:
        """Every segment in the directory, oldest first (names start with the time)."""
        try:
            return sorted(p for p in self.directory.iterdir() if p.name.endswith(SUFFIX))
        except FileNotFoundError:
            return []

    def replay(self, store: Store, batch_size: int = 2000) -> int:
        """Store every segment no live process holds, oldest first; delete each once stored.
        Returns the records offered to ``store``. A failure of ``store`` propagates and
        leaves the segment in place, for the next replay."""
        replayed = 0
        for path in self.segments():
            if path == self._path:
                continue
            with _locked_segment(path) as fd:
                if fd is None:
                    continue  # another process writes or replays it
                replayed += self._replay_segment(path, fd, store, batch_size)
        return replayed

    def _replay_segment(self, path: Path, fd: int, store: Store, batch_size: int) -> int:
        replayed = 0
        batch: list[CallRecord] = []
        corrupt = 0
        for number, line in enumerate(_lines(fd), 1):
            try:
                batch.append(decode_record(line))
            except (ValueError, TypeError) as exc:  # not JSON, or not a record
                corrupt += 1
                log.error("spool segment %s, line %d is not a call record (%s); the segment "
                          "is kept as %s%s", path.name, number, exc.__class__.__name__,
                          path.name, CORRUPT_SUFFIX)
                continue
            if len(batch) >= batch_size:
                self.refused += _store_isolating(batch, store, path)
                replayed += len(batch)
                batch = []
        if batch:
            self.refused += _store_isolating(batch, store, path)
            replayed += len(batch)
        if corrupt:
            path.rename(path.with_name(path.name + CORRUPT_SUFFIX))
        else:
            path.unlink()
        _fsync_directory(self.directory)
        return replayed

    def _open_segment(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}{SUFFIX}"
        path = self.directory / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        _fsync_directory(self.directory)  # the new file's name is durable too
        self._fd, self._path, self._size = fd, path, 0


def _store_isolating(batch: list[CallRecord], store: Store, segment: Path) -> int:
    """Store ``batch``; if it fails for its records' sake, store its halves, down to the
    records that cannot be stored, which are set aside. An outage propagates. Returns the
    records refused as older than the purge floor (set aside too)."""
    try:
        result = store(batch)
    except Exception as exc:
        if is_outage(exc):
            raise
        if len(batch) > 1:
            middle = len(batch) // 2
            return (_store_isolating(batch[:middle], store, segment)
                    + _store_isolating(batch[middle:], store, segment))
        rejected = _set_aside(batch, segment)
        log.error("call record %s cannot be stored (%s: %s); it is kept in %s",
                  batch[0].id, exc.__class__.__name__, _first_line(exc), rejected)
        return 0
    if result.refused:
        refused = [r for r in batch if r.id in result.refused_ids]
        rejected = _set_aside(refused, segment)
        for record in refused:
            log.error("call record %s is older than the ledger's purge floor (%d µs) and is "
                      "refused; it is kept in %s", record.id, result.floor_us, rejected)
    return result.refused


def _set_aside(records: Sequence[CallRecord], segment: Path) -> Path:
    """Append ``records`` to the segment's ``.rejected`` file, for an operator."""
    rejected = segment.with_name(segment.name + REJECTED_SUFFIX)
    with rejected.open("ab") as file:
        file.write(encode_records(records))
        file.flush()
        os.fsync(file.fileno())
    return rejected


@contextlib.contextmanager
def _locked_segment(path: Path) -> Iterator[int | None]:
    """The segment's file descriptor, locked; None if another process holds it or it is
    gone."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        yield None
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        # Replayed and deleted by another process between our listing and our lock.
        yield None if os.fstat(fd).st_nlink == 0 else fd
    finally:
        os.close(fd)


def _lines(fd: int) -> Iterator[bytes]:
    """Complete lines only: a last line without its newline is a write that never finished
    (its batch was never acknowledged), so it is skipped."""
    with os.fdopen(os.dup(fd), "rb") as file:
        for line in file:
            if line.endswith(b"\n"):
                if line.strip():
                    yield line
            else:
                log.warning("spool: ignoring an unfinished last line (%d bytes)", len(line))


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@dataclass(slots=True)
class SpoolStats:
    spooled: int = 0  # records written to the spool instead of the database
    replayed: int = 0  # records replayed from the spool into the database
    outages: int = 0  # times the database failed and spooling began
    refused: int = 0  # replayed records refused as older than the purge floor


class SpoolingStore:
    """``Ledger.store`` with the spool behind it: the recorder's one way to write.

    While the database answers, records go straight to it. From a failed write on, every batch
    goes to the spool (so order is kept) until :meth:`replay` has put the whole spool into the
    database. Both methods run in worker threads.
    """

    def __init__(self, store: Store, spool: Spool, *, batch_size: int = 2000) -> None:
        self._store = store
        self.spool = spool
        self.batch_size = batch_size
        self.stats = SpoolStats()
        self._lock = threading.Lock()
        self._spooling = False
        self._retry_s = FIRST_RETRY_S
        self._next_replay = 0.0  # monotonic; 0: look for a previous run's segments at once
        # Tokens and cost spooled by this process and not yet replayed, per key and UTC day
        # (bounded by keys x days of an outage): quota counters rebuilt meanwhile add them.
        self._spooled_usage: dict[tuple[str, int], tuple[int, int]] = {}

    @property
    def spooling(self) -> bool:
        return self._spooling

    def store(self, records: list[CallRecord]) -> InsertResult:
        """Write ``records`` to the database or, while it is away, to the spool. Raises only
        if neither takes them (the recorder then keeps them in memory and tries again)."""
        with self._lock:
            if not self._spooling:
                try:
                    return self._store(records)
                except Exception as exc:  # any failure: the records must not wait in memory
                    self._spooling = True
                    self.stats.outages += 1
                    self._schedule_retry(exc, first=True)
            try:
                self.spool.append(records)
            except OSError:
                # The disk refuses too (full?): the database may be back by now. If it is,
                # these records go in ahead of the spooled ones, which is harmless.
                return self._store(records)
            self.stats.spooled += len(records)
            usage = self._spooled_usage
            for record in records:
                if record.api_key_id is not None and (record.total_tokens or record.cost_nano):
                    day = (record.api_key_id, record.ts_us // DAY_US)
                    tokens, cost = usage.get(day, (0, 0))
                    usage[day] = (tokens + record.total_tokens, cost + record.cost_nano)
            return InsertResult(0, 0)

    def spooled_usage(self, api_key_id: str, start_us: int) -> tuple[int, int]:
        """The key's tokens and cost spooled and not yet replayed, from ``start_us`` (a UTC
        midnight, as every quota period starts) on."""
        first_day = start_us // DAY_US
        tokens = cost = 0
        for (key_id, day), (day_tokens, day_cost) in list(self._spooled_usage.items()):
            if key_id == api_key_id and day >= first_day:
                tokens += day_tokens
                cost += day_cost
        return tokens, cost

    def replay_due(self) -> bool:
        return time.monotonic() >= self._next_replay

    def replay(self) -> int:
        """Put the spool into the database. The bulk is replayed while new records may still
        be spooled; the last few, and the switch back to the database, under the lock."""
        try:
            self.spool.rotate()
            replayed = self.spool.replay(self._store, self.batch_size)
            with self._lock:
                self.spool.rotate()
                replayed += self.spool.replay(self._store, self.batch_size)
                if self._spooling:
                    log.warning("the database answers again: %d spooled call records "
                                "replayed", self.stats.replayed + replayed)
                self._spooling = False
                self._spooled_usage = {}  # all of it is in the database now
                self._retry_s = FIRST_RETRY_S
                self._next_replay = time.monotonic() + ORPHAN_CHECK_S
        except Exception as exc:  # still unavailable: try again later
            with self._lock:
                self._schedule_retry(exc, first=False)
            return 0
        self.stats.replayed += replayed
        self.stats.refused = self.spool.refused
        return replayed

    def close(self) -> None:
        self.spool.close()

    def _schedule_retry(self, exc: BaseException, *, first: bool) -> None:
        if first:
            self._retry_s = FIRST_RETRY_S
            log.warning("writing call records failed (%s: %s); spooling them to %s until the "
                        "database answers", exc.__class__.__name__, _first_line(exc),
                        self.spool.directory)
        else:
            self._retry_s = min(self._retry_s * 2, LONGEST_RETRY_S)
        self._next_replay = time.monotonic() + self._retry_s


def _first_line(exc: BaseException) -> str:
    """The driver's own message, without SQLAlchemy's statement and parameters."""
    return (str(exc).strip().splitlines() or [""])[0][:300]
