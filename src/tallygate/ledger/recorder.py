"""The recorder: the one way calls enter the ledger from a running server.

``record`` only appends to a list, so it costs the request path next to nothing; a
background task writes what has gathered every ``flush_interval`` (or as soon as
``max_batch`` records wait) in a worker thread. ``record_and_commit`` waits for the write, for
``durability = "strict"``. Given a spool, a batch the database refuses goes to local disk
instead and is replayed once the database answers again (``ledger/spool.py``); without one, a
failed write is retried with back-off in memory. Nothing is dropped; ``stop`` writes
everything still waiting.

Refused calls come through ``record_refusal``: past a bound per key and minute they are
counted, not queued, and each minute's counts are queued as records once it has ended
(``ledger/refusals.py``); ``stop`` queues the minute under way's too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from tallygate.domain.records import CallRecord, now_us
from tallygate.ledger.refusals import DEFAULT_RECORDS_PER_MINUTE, RefusalFolder
from tallygate.ledger.service import Ledger
from tallygate.ledger.spool import Spool, SpoolingStore
from tallygate.store.calls import InsertResult

log = logging.getLogger("tallygate.recorder")


@dataclass(slots=True)
class RecorderStats:
    flushes: int = 0
    records_written: int = 0
    duplicates: int = 0
    failures: int = 0
    last_flush_seconds: float = 0.0


class RecorderObserver(Protocol):
    """Told of every committed batch (in the writing thread) and every flush: metrics."""

    def records_stored(self, records: Sequence[CallRecord]) -> None: ...

    def flushed(self, seconds: float) -> None: ...

    def flush_failed(self) -> None: ...


class Recorder:
    def __init__(self, ledger: Ledger, *, flush_interval_s: float = 0.05,
                 max_batch: int = 2000, observer: RecorderObserver | None = None,
                 spool: Spool | None = None,
                 refusal_records_per_minute: int = DEFAULT_RECORDS_PER_MINUTE) -> None:
        self.ledger = ledger
        self.refusals = RefusalFolder(refusal_records_per_minute)
        self.observer = observer
        self.flush_interval_s = flush_interval_s
        self.max_batch = max_batch
        self.stats = RecorderStats()
        self._pending: list[CallRecord] = []
        self._waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._written_seq = 0
        self._queued_seq = 0
        self._wake = asyncio.Event()
        self._writing = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        # The way a batch is written: straight to the database, or through the spool.
        self.spooler = None if spool is None else SpoolingStore(self._store, spool,
                                                                batch_size=max_batch)
        self._write = self._store if self.spooler is None else self.spooler.store

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    # -- usage not yet in the database (for counters rebuilt from the ledger) -------------

    def usage_mark(self) -> tuple[int, bool]:
        """Changes whenever a batch may have moved from memory to the database: read it
        before and after a ledger read to know the read and :meth:`in_flight_usage` agree."""
        return self._written_seq, self._writing.locked()

    def in_flight_usage(self, api_key_id: str, start_us: int) -> tuple[int, int]:
        """Tokens and cost of the key's calls from ``start_us`` on that are recorded but not
        yet in the database: waiting here, or in the spool while the database was away."""
        tokens = cost = 0
        for record in self._pending:
            if record.api_key_id == api_key_id and record.ts_us >= start_us:
                tokens += record.total_tokens
                cost += record.cost_nano
        if self.spooler is not None:
            spooled_tokens, spooled_cost = self.spooler.spooled_usage(api_key_id, start_us)
            tokens += spooled_tokens
            cost += spooled_cost
        return tokens, cost

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="tallygate-recorder")

    async def stop(self) -> None:
        """Write everything still waiting, then end the background task."""
        self._queue_refusals(self.refusals.drain())  # before the task can see it stopping
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        if self.spooler is not None:
            if self.spooler.spooling:  # one last try, whatever the back-off; else next start
                await asyncio.to_thread(self.spooler.replay)
            self.spooler.close()

    def record(self, record: CallRecord) -> None:
        self._pending.append(record)
        self._queued_seq += 1
        if len(self._pending) >= self.max_batch:
            self._wake.set()

    async def record_refusal(self, record: CallRecord, *, commit: bool = False) -> None:
        """Record a refused call, or count it in its minute's aggregate when its key has had
        its share of refusals recorded one by one this minute. ``commit`` waits for a record
        queued now (strict durability); a counted one is written after its minute."""
        if not self.refusals.admit(record):
            return
        if commit:
            await self.record_and_commit(record)
        else:
            self.record(record)

    def _queue_refusals(self, aggregates: list[CallRecord]) -> None:
        for record in aggregates:
            self.record(record)

    async def record_and_commit(self, record: CallRecord) -> None:
        """Record and wait until the record is committed (strict durability)."""
        self.record(record)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._queued_seq, done))
        self._wake.set()
        await done

    async def flush(self, *, refusals: bool = False) -> None:
        """Write what is waiting now (used by tests); with ``refusals``, the refusals counted
        in the minute under way as well."""
        self._queue_refusals(self.refusals.drain() if refusals
                             else self.refusals.ended(now_us()))
        while self._pending:
            await self._write_batch()

    async def _run(self) -> None:
        backoff = self.flush_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval_s)
            self._wake.clear()
            self._queue_refusals(self.refusals.ended(now_us()))
            try:
                while self._pending:
                    await self._write_batch()
                backoff = self.flush_interval_s
            except Exception:
                self.stats.failures += 1
                if self.observer is not None:
                    self.observer.flush_failed()
                log.exception("writing %d call records failed; retrying in %.2fs",
                              len(self._pending), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self.spooler is not None and self.spooler.replay_due():
                await asyncio.to_thread(self.spooler.replay)
            if self._stopping and not self._pending:
                return

    async def _write_batch(self) -> None:
        async with self._writing:
            if self._pending:
                await self._write_locked()

    def _store(self, batch: Sequence[CallRecord]) -> InsertResult:
        """Write a batch, then tell the observer what was new in it (in this worker thread,
        off the event loop); a record already stored is not counted twice."""
        result = self.ledger.store(batch)
        if self.observer is not None and result.accepted:
            accepted = result.accepted_ids
            try:
                self.observer.records_stored(
                    batch if accepted is None else [r for r in batch if r.id in accepted])
            except Exception:  # the batch is committed: a metrics failure must not retry it
                log.exception("counting %d stored records in the metrics failed", len(batch))
        return result

    async def _write_locked(self) -> None:
        batch = self._pending[: self.max_batch]
        started = time.perf_counter()
        result = await asyncio.to_thread(self._write, batch)
        # Only now that the batch is committed does it leave the pending list.
        del self._pending[: len(batch)]
        self._written_seq += len(batch)
        self.stats.flushes += 1
        self.stats.records_written += result.accepted
        self.stats.duplicates += result.duplicates
        self.stats.last_flush_seconds = time.perf_counter() - started
        if self.observer is not None:
            self.observer.flushed(self.stats.last_flush_seconds)
        still_waiting = []
        for seq, future in self._waiters:
            if seq <= self._written_seq:
                if not future.done():
                    future.set_result(None)
            else:
                still_waiting.append((seq, future))
        self._waiters = still_waiting
