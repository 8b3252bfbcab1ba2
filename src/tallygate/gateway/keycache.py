"""API keys by secret, cached for a moment so the hot path rarely touches the database.

A change made through this process (disable, rotate, delete, new limits) clears the cache at
once; a change made by another process is seen within ``ttl_s``. While the database cannot be
reached, a key seen before is trusted as it was last read, so the gateway keeps serving its
known keys through a database outage (their calls wait in the recorder's spool).
"""

from __future__ import annotations

import asyncio
import logging
import time

from tallygate.keys.secrets import hash_secret
from tallygate.store import keys as key_store
from tallygate.store.database import Database
from tallygate.store.keys import StoredKey

MAX_ENTRIES = 100_000
log = logging.getLogger("tallygate.gateway")


class KeyCache:
    def __init__(self, db: Database, ttl_s: float = 2.0) -> None:
        self.db = db
        self.ttl_s = ttl_s
        self._entries: dict[str, tuple[StoredKey | None, float]] = {}

    def clear(self) -> None:
        self._entries.clear()

    async def lookup(self, secret: str) -> StoredKey | None:
        digest = hash_secret(secret)
        now = time.monotonic()
        cached = self._entries.get(digest)
        if cached is not None and cached[1] > now:
            return cached[0]
        try:
            key = await asyncio.to_thread(key_store.find_by_hash, self.db, digest)
        except Exception as exc:
            if cached is None:
                raise
            log.debug("key look-up failed (%s); using the key as last read",
                      exc.__class__.__name__)
            return cached[0]
        if len(self._entries) >= MAX_ENTRIES:  # unknown secrets must not grow it for ever
            self._entries.clear()
        self._entries[digest] = (key, now + self.ttl_s)
        return key
