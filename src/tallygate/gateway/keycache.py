"""API keys by secret, cached for a moment so the hot path rarely touches the database.

A change made through this process (disable, rotate, delete, new limits) clears the cache at
once; a change made by another process is seen within ``ttl_s``. While the database cannot be
reached, a key seen before is trusted as it was last read, so the gateway keeps serving its
known keys through a database outage (their calls wait in the recorder's spool).

A key in use is read again in the background during the last half of its time, so its calls
never wait for the database; calls that do need a read (a key not seen yet, or not for a
while) share one, however many arrive together.

Under a flood of made-up secrets (§15) the keys that exist keep their pace:

- Reads of known keys (a refresh, or a lapsed entry) have a thread of their own, so they
  never queue behind the flood's reads.
- A secret found to be unknown is remembered as unknown for ``ttl_s`` (about 100 bytes), so
  repeating it costs no read; the unknown ones are bounded by ``max_entries``, the oldest
  forgotten first, and the known keys are never pushed out by them.
- Reads of secrets never seen are limited per client address (a token bucket of
  ``unknown_per_s``, bursts of twice that) and in all (``MAX_PENDING`` waiting at most);
  past either the call is answered at once with :class:`LookupRefused`, without a read.
"""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor
from time import monotonic
from typing import TypeVar

from tallygate.keys.secrets import hash_secret
from tallygate.store import keys as key_store
from tallygate.store.database import Database
from tallygate.store.keys import StoredKey

MAX_ENTRIES = 100_000
# Reads of secrets not known to be keys: two threads, apart from the recorder's pool.
READ_THREADS = 2
MAX_PENDING = 256  # reads of new secrets waiting or under way, at most
MAX_ADDRESSES = 10_000  # client addresses whose look-up budget is tracked
REFRESH_AHEAD = 0.5  # of ttl_s: how much time left when a key in use is read again
log = logging.getLogger("tallygate.gateway")

Read = asyncio.Task[StoredKey | None]
V = TypeVar("V")


class LookupRefused(Exception):
    """Too many look-ups of secrets never seen: ``status`` 429 for one address over its
    budget, 503 when the reads waiting in all are at their bound."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class AddressBudget:
    """A token bucket per client address, bounded to ``max_addresses`` (the longest tracked
    forgotten first: at worst a forgotten address starts again with a full bucket)."""

    def __init__(self, per_s: float, max_addresses: int = MAX_ADDRESSES) -> None:
        self.per_s = per_s
        self.burst = max(1.0, 2 * per_s)
        self.max_addresses = max_addresses
        self._buckets: dict[str, tuple[float, float]] = {}  # address: (tokens, when)

    def take(self, address: str, now: float) -> bool:
        if self.per_s <= 0:
            return True
        tokens, when = self._buckets.pop(address, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.per_s)
        taken = tokens >= 1
        while len(self._buckets) >= self.max_addresses:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[address] = (tokens - 1 if taken else tokens, now)
        return taken

    def __len__(self) -> int:
        return len(self._buckets)


class KeyCache:
    def __init__(self, db: Database, ttl_s: float = 2.0, *, unknown_per_s: float = 50.0,
                 max_entries: int = MAX_ENTRIES) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self.refused_lookups = 0  # answered without a read: over an address's budget, or busy
        self._known: dict[str, tuple[StoredKey, float]] = {}
        self._was_known: frozenset[str] = frozenset()  # keys until the last clear()
        self._unknown: dict[str, float] = {}  # digest: until when it is known to be no key
        self._reads: dict[str, Read] = {}  # the read each digest's lookups share
        self._under_way: set[Read] = set()  # every read not finished, shared or not
        self._pending_new = 0
        self._generation = 0  # a read started before a clear() must not store what it read
        self._budget = AddressBudget(unknown_per_s)
        self._key_thread = ThreadPoolExecutor(1, thread_name_prefix="tallygate-keys-known")
        self._threads = ThreadPoolExecutor(READ_THREADS, thread_name_prefix="tallygate-keys")

    def clear(self) -> None:
        """Forget every key. Safe from any thread (the key API's routes run in a thread
        pool): the generation moves first, and the maps are replaced, not emptied, so a read
        finishing on the event loop meanwhile stores into a map that is dropped, or sees the
        new generation and takes back what it stored."""
        self._generation += 1
        # The digests of keys, without the keys: their next read still goes on the known
        # keys' thread. (dict.copy is atomic under the GIL; iterating is not.)
        was_known = self._was_known if len(self._was_known) < self.max_entries else frozenset()
        self._was_known = was_known | frozenset(self._known.copy())
        self._known = {}
        self._unknown = {}
        self._reads = {}

    def __len__(self) -> int:
        return len(self._known) + len(self._unknown)

    async def close(self) -> None:
        """Wait for the reads under way (a read in the background holds a connection that
        must be back in the pool before the database is closed)."""
        await asyncio.gather(*self._under_way, return_exceptions=True)
        self._key_thread.shutdown(wait=False)
        self._threads.shutdown(wait=False)

    async def lookup(self, secret: str, client_ip: str | None = None) -> StoredKey | None:
        """The key of ``secret``, or None; :class:`LookupRefused` for a secret never seen
        when its address or the process has no more reads to give."""
        digest = hash_secret(secret)
        now = monotonic()
        known = self._known.get(digest)
        if known is not None and known[1] > now:
            if known[1] - now < self.ttl_s * REFRESH_AHEAD and digest not in self._reads:
                self._read(digest, known_key=True)
            return known[0]
        if known is None and self._unknown.get(digest, 0.0) > now:
            return None
        read = self._reads.get(digest)
        if read is None:
            known_key = known is not None or digest in self._was_known
            if not known_key:
                self._admit_new(client_ip or "", now)
            read = self._read(digest, known_key=known_key)
        try:
            return await asyncio.shield(read)  # one caller's cancellation is not the others'
        except Exception as exc:
            if known is None:
                raise
            log.debug("key look-up failed (%s); using the key as last read",
                      exc.__class__.__name__)
            return known[0]

    def _admit_new(self, address: str, now: float) -> None:
        if self._pending_new >= MAX_PENDING:
            self.refused_lookups += 1
            raise LookupRefused(503)
        if not self._budget.take(address, now):
            self.refused_lookups += 1
            raise LookupRefused(429)

    def _read(self, digest: str, *, known_key: bool) -> Read:
        # Trusted for ttl_s from when the read began: what it returns is at least that old.
        threads = self._key_thread if known_key else self._threads
        read = asyncio.ensure_future(self._fetch(digest, threads, self._generation,
                                                 monotonic()))
        if not known_key:
            self._pending_new += 1
            read.add_done_callback(self._new_read_done)
        self._reads[digest] = read
        self._under_way.add(read)
        read.add_done_callback(lambda done: self._finished(digest, done))
        return read

    def _new_read_done(self, _: Read) -> None:
        self._pending_new -= 1

    async def _fetch(self, digest: str, threads: ThreadPoolExecutor, generation: int,
                     began: float) -> StoredKey | None:
        key = await asyncio.get_running_loop().run_in_executor(
            threads, key_store.find_by_hash, self.db, digest)
        if generation == self._generation:
            known, unknown = self._known, self._unknown
            until = began + self.ttl_s
            if key is None:
                known.pop(digest, None)
                _put(unknown, digest, until, self.max_entries)
            else:
                unknown.pop(digest, None)
                _put(known, digest, (key, until), self.max_entries)
            if generation != self._generation:  # cleared from another thread meanwhile
                known.pop(digest, None)
                unknown.pop(digest, None)
        return key

    def _finished(self, digest: str, read: Read) -> None:
        self._under_way.discard(read)
        reads = self._reads
        if reads.get(digest) is read:
            reads.pop(digest, None)
        if not read.cancelled():
            read.exception()  # a background read's failure is seen by the next lookup


def _put(entries: dict[str, V], digest: str, value: V, bound: int) -> None:
    """Store as the newest entry; past ``bound``, the oldest go first."""
    entries.pop(digest, None)
    while len(entries) >= bound:
        del entries[next(iter(entries))]
    entries[digest] = value
