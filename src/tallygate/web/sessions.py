"""Page sign-in: a session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS) whose token is
stored only as a hash, a CSRF token per session, and a brake on failed sign-ins."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import deque
from dataclasses import dataclass

from tallygate.domain.records import now_us
from tallygate.keys.secrets import hash_secret
from tallygate.store import sessions as session_store
from tallygate.store.database import Database
from tallygate.store.sessions import StoredSession

COOKIE = "tallygate_session"
CSRF_HEADER = "x-csrf-token"
SESSION_SECONDS = 12 * 3600
US = 1_000_000


@dataclass(frozen=True, slots=True)
class Session:
    api_key_id: str | None  # None: the admin
    csrf_token: str


class Sessions:
    """Sessions of the pages. An admin session is bound to the admin token in force when it
    began (``admin_token_hash``): a process with another admin token does not open it, so
    changing the token ends every admin session, in every process, however they restart."""

    def __init__(self, db: Database, admin_token_hash: str | None,
                 lifetime_s: int = SESSION_SECONDS) -> None:
        self.db = db
        self.admin_token_hash = admin_token_hash
        self.lifetime_s = lifetime_s

    def start(self, api_key_id: str | None) -> tuple[str, Session]:
        """A new session; returns the cookie's token (shown only to the browser)."""
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        now = now_us()
        binding = self._admin_binding(token) if api_key_id is None else None
        session_store.insert_session(self.db, StoredSession(
            hash_secret(token), api_key_id, csrf, now, now + self.lifetime_s * US, binding),
            now)
        return token, Session(api_key_id, csrf)

    def find(self, token: str) -> Session | None:
        stored = session_store.find_session(self.db, hash_secret(token), now_us())
        if stored is None or (stored.api_key_id is None
                              and not self._bound_here(stored.admin_binding, token)):
            return None  # an admin session begun under another admin token, or unbound
        return Session(stored.api_key_id, stored.csrf_token)

    def _bound_here(self, binding: str | None, token: str) -> bool:
        return binding is not None and self.admin_token_hash is not None and (
            hmac.compare_digest(binding.encode(), self._admin_binding(token).encode()))

    def _admin_binding(self, token: str) -> str:
        """Keyed by the admin token's hash, over the cookie's token: the database never holds
        the cookie's token, so this cannot be used to test guesses of the admin token."""
        key = (self.admin_token_hash or "").encode()
        return hmac.new(key, token.encode(), hashlib.sha256).hexdigest()

    def end(self, token: str) -> None:
        session_store.delete_session(self.db, hash_secret(token))


class SignInBrake:
    """At most ``limit`` failed sign-ins per client address in ``window_s``; then 429.

    Bounded whatever the traffic: an address keeps at most ``limit`` failure times, and past
    ``max_addresses`` the quiet addresses, then the longest-tracked ones, are forgotten."""

    def __init__(self, limit: int = 10, window_s: float = 60.0,
                 max_addresses: int = 10_000) -> None:
        self.limit = limit
        self.window_s = window_s
        self.max_addresses = max_addresses
        self._failures: dict[str, deque[float]] = {}

    def retry_after(self, address: str) -> int | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        self._expire(failures)
        if len(failures) < self.limit:
            return None
        return max(1, int(failures[0] + self.window_s - time.monotonic()) + 1)

    def failed(self, address: str) -> None:
        failures = self._failures.get(address)
        if failures is None:
            if len(self._failures) >= self.max_addresses:
                self._make_room()
            failures = self._failures[address] = deque(maxlen=self.limit)
        self._expire(failures)
        failures.append(time.monotonic())

    def __len__(self) -> int:
        return len(self._failures)

    def _make_room(self) -> None:
        for address in list(self._failures):
            failures = self._failures[address]
            self._expire(failures)
            if not failures:
                del self._failures[address]
        while len(self._failures) >= self.max_addresses:
            del self._failures[next(iter(self._failures))]  # tracked longest

    def _expire(self, failures: deque[float]) -> None:
        while failures and failures[0] <= time.monotonic() - self.window_s:
            failures.popleft()
