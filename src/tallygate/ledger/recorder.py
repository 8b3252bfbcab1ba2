"""The recorder: the one way calls enter the ledger from a running server.

``record`` only appends to a list, so it costs the request path next to nothing; a
background task writes what has gathered every ``flush_interval`` (or as soon as
``max_batch`` records wait) in a worker thread. ``record_and_commit`` waits for the write, for
``durability = "strict"``. A failed write is retried with back-off and nothing is dropped;
``stop`` writes everything still waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass

from tallygate.ledger.records import CallRecord
from tallygate.ledger.service import Ledger

log = logging.getLogger("tallygate.recorder")


@dataclass(slots=True)
class RecorderStats:
    flushes: int = 0
    records_written: int = 0
    duplicates: int = 0
    failures: int = 0
    last_flush_seconds: float = 0.0


class Recorder:
    def __init__(self, ledger: Ledger, *, flush_interval_s: float = 0.05,
                 max_batch: int = 2000) -> None:
        self.ledger = ledger
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

    @property
    def queue_depth(self) -> int:
        return len(self._pending)

    async def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="tallygate-recorder")

    async def stop(self) -> None:
        """Write everything still waiting, then end the background task."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None

    def record(self, record: CallRecord) -> None:
        self._pending.append(record)
        self._queued_seq += 1
        if len(self._pending) >= self.max_batch:
            self._wake.set()

    async def record_and_commit(self, record: CallRecord) -> None:
        """Record and wait until the record is committed (strict durability)."""
        self.record(record)
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append((self._queued_seq, done))
        self._wake.set()
        await done

    async def flush(self) -> None:
        """Write what is waiting now (used by tests and on shutdown)."""
        while self._pending:
            await self._write_batch()

    async def _run(self) -> None:
        backoff = self.flush_interval_s
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.flush_interval_s)
            self._wake.clear()
            try:
                while self._pending:
                    await self._write_batch()
                backoff = self.flush_interval_s
            except Exception:
                self.stats.failures += 1
                log.exception("writing %d call records failed; retrying in %.2fs",
                              len(self._pending), backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
                continue
            if self._stopping and not self._pending:
                return

    async def _write_batch(self) -> None:
        async with self._writing:
            if self._pending:
                await self._write_locked()

    async def _write_locked(self) -> None:
        batch = self._pending[: self.max_batch]
        started = time.perf_counter()
        result = await asyncio.to_thread(self.ledger.store, batch)
        # Only now that the batch is committed does it leave the pending list.
        del self._pending[: len(batch)]
        self._written_seq += len(batch)
        self.stats.flushes += 1
        self.stats.records_written += result.accepted
        self.stats.duplicates += result.duplicates
        self.stats.last_flush_seconds = time.perf_counter() - started
        still_waiting = []
        for seq, future in self._waiters:
            if seq <= self._written_seq:
                if not future.done():
                    future.set_result(None)
            else:
                still_waiting.append((seq, future))
        self._waiters = still_waiting
