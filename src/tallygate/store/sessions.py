"""Sign-in sessions: the hash of the cookie's token, who it is, and its CSRF token."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from sqlalchemy import delete, select

from tallygate.store.database import Database
from tallygate.store.schema import meta, sessions

# A short fingerprint of the admin token the admin sessions were started under: enough to see
# that the token changed, far too little to test guesses of an operator-chosen token against.
ADMIN_SESSIONS_FINGERPRINT = "admin_sessions_token_fingerprint"


@dataclass(frozen=True, slots=True)
class StoredSession:
    token_hash: str
    api_key_id: str | None
    csrf_token: str
    created_at: int
    expires_at: int


def insert_session(db: Database, session: StoredSession, now_us: int) -> None:
    with db.write() as conn:
        conn.execute(delete(sessions).where(sessions.c.expires_at < now_us))
        conn.execute(sessions.insert().values(
            token_hash=session.token_hash, api_key_id=session.api_key_id,
            csrf_token=session.csrf_token, created_at=session.created_at,
            expires_at=session.expires_at))


def find_session(db: Database, token_hash: str, now_us: int) -> StoredSession | None:
    with db.read() as conn:
        row = conn.execute(select(sessions).where(sessions.c.token_hash == token_hash,
                                                  sessions.c.expires_at > now_us)).first()
    return None if row is None else StoredSession(**row._mapping)


def delete_session(db: Database, token_hash: str) -> None:
    with db.write() as conn:
        conn.execute(delete(sessions).where(sessions.c.token_hash == token_hash))


def delete_sessions_of_key(db: Database, api_key_id: str) -> None:
    with db.write() as conn:
        conn.execute(delete(sessions).where(sessions.c.api_key_id == api_key_id))


def bind_admin_sessions(db: Database, admin_token_hash: str | None) -> int:
    """Admin sessions live only as long as the admin token they signed in with: when the token
    in effect is not the one they started under, they end. Returns how many ended."""
    fingerprint = None if admin_token_hash is None else hashlib.sha256(
        b"sessions:" + admin_token_hash.encode()).hexdigest()[:12]
    with db.write() as conn:
        stored = conn.execute(select(meta.c.value).where(
            meta.c.name == ADMIN_SESSIONS_FINGERPRINT)).scalar()
        if stored == fingerprint:
            return 0
        ended = conn.execute(delete(sessions).where(sessions.c.api_key_id.is_(None))).rowcount
        conn.execute(delete(meta).where(meta.c.name == ADMIN_SESSIONS_FINGERPRINT))
        if fingerprint is not None:
            conn.execute(meta.insert().values(name=ADMIN_SESSIONS_FINGERPRINT,
                                              value=fingerprint))
        return int(ended)
