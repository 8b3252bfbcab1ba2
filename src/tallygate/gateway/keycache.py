"""API keys by secret, cached for a moment so the hot path rarely touches the database.

A change made through this process (disable, rotate, delete, new limits) clears the cache at
once; a change made by another process is seen within ``ttl_s``. While the database cannot be
reached, a key seen before is trusted as it was last read, so the gateway keeps serving its
known keys through a database outage (their calls wait in the recorder's spool).

A key in use is read again in the background during the last half of its time, so its calls
never wait for the database; calls that do need a read (a key not seen yet, or not for a
while) share one, however many arrive together.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from time import monotonic

from tallygate.keys.secrets import hash_secret
from tallygate.store import keys as key_store
from tallygate.store.database import Database
from tallygate.store.keys import StoredKey

MAX_ENTRIES = 100_000
# Key reads have threads of their own: a flood of unknown secrets queues behind these two
# and never delays the recorder's writes in the shared pool.
READ_THREADS = 2
REFRESH_AHEAD = 0.5  # of ttl_s: how much time left when a key in use is read again
log = logging.getLogger("tallygate.gateway")

Read = asyncio.Task[StoredKey | None]


class KeyCache:
    def __init__(self, db: Database, ttl_s: float = 2.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[StoredKey | None, float]] = {}
        self._reads: dict[str, Read] = {}  # the read each key's lookups share
        self._under_way: set[Read] = set()  # every read not finished, shared or not
        self._generation = 0  # a read started before a clear() must not store what it read
        self._threads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="tallygate-keys")

    def clear(self) -> None:
        """Forget every key. Safe from any thread (the key API's routes run in a thread
        pool): the generation moves first, and the maps are replaced, not emptied, so a read
        finishing on the event loop meanwhile stores into a map that is dropped, or sees the
        new generation and takes back what it stored."""
        self._generation += 1
        self._entries = {}
        self._reads = {}

    async def close(self) -> None:
        """Wait for the reads under way (a read in the background holds a connection that
        must be back in the pool before the database is closed)."""
        await asyncio.gather(*self._under_way, return_exceptions=True)
        self._threads.shutdown(wait=False)

    async def lookup(self, secret: str) -> StoredKey | None:
        digest = hash_secret(secret)
        now = monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[1] > now:
            if cached[1] - now < self.ttl_s * REFRESH_AHEAD and digest not in self._reads:
                self._read(digest)
            return cached[0]
        read = self._reads.get(digest) or self._read(digest)
        try:
            return await asyncio.shield(read)  # one caller's cancellation is not the others'
        except Exception as exc:
            if cached is None:
                raise
            log.debug("key look-up failed (%s); using the key as last read",
                      exc.__class__.__name__)
            return cached[0]

    def _read(self, digest: str) -> Read:
        # Trusted for ttl_s from when the read began: what it returns is at least that old.
        read = asyncio.ensure_future(self._fetch(digest, self._generation, monotonic()))
        self._reads[digest] = read
        self._under_way.add(read)
        read.add_done_callback(lambda done: self._finished(digest, done))
        return read

    async def _fetch(self, digest: str, generation: int, began: float) -> StoredKey | None:
        key = await asyncio.get_running_loop().run_in_executor(
            self._threads, key_store.find_by_hash, self.db, digest)
        if generation == self._generation:
            if len(self._entries) >= MAX_ENTRIES:  # unknown secrets must not grow it for ever
                self._entries = {}
            entries = self._entries
            entries[digest] = (key, began + self.ttl_s)
            if generation != self._generation:  # cleared from another thread meanwhile
                entries.pop(digest, None)
        return key

    def _finished(self, digest: str, read: Read) -> None:
        self._under_way.discard(read)
        reads = self._reads
        if reads.get(digest) is read:
            reads.pop(digest, None)
        if not read.cancelled():
            read.exception()  # a background read's failure is seen by the next lookup
