"""Sign-in sessions: the hash of the cookie's token, who it is, and its CSRF token."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select

from tallygate.store.database import Database
from tallygate.store.schema import sessions


@dataclass(frozen=True, slots=True)
class StoredSession:
    token_hash: str
    api_key_id: str | None
    csrf_token: str
    created_at: int
    expires_at: int
    admin_binding: str | None = None


def insert_session(db: Database, session: StoredSession, now_us: int) -> None:
    with db.write() as conn:
        conn.execute(delete(sessions).where(sessions.c.expires_at < now_us))
        conn.execute(sessions.insert().values(
            token_hash=session.token_hash, api_key_id=session.api_key_id,
            csrf_token=session.csrf_token, created_at=session.created_at,
            expires_at=session.expires_at, admin_binding=session.admin_binding))


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
