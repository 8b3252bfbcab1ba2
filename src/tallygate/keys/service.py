"""Creating, changing and checking API keys; every change goes to the audit log."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from tallygate.keys.schemas import CreatedKey, KeyCreate, KeyOut, KeyUpdate
from tallygate.keys.secrets import hash_secret, new_secret, shown_prefix
from tallygate.ledger.money import format_amount, to_nano
from tallygate.ledger.records import now_us
from tallygate.store import keys as key_store
from tallygate.store.database import Database
from tallygate.store.keys import StoredKey
from tallygate.store.meta import write_audit
from tallygate.store.sessions import delete_sessions_of_key


class KeyNotFound(LookupError):
    pass


def _us(moment: datetime | None) -> int | None:
    return None if moment is None else int(moment.timestamp() * 1_000_000)


def _dt(value: int | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value / 1_000_000, UTC)


def effective_status(key: StoredKey, at_us: int | None = None) -> str:
    if key.status == "disabled":
        return "disabled"
    if key.expires_at is not None and key.expires_at <= (at_us or now_us()):
        return "expired"
    return "active"


def key_out(key: StoredKey) -> KeyOut:
    created = _dt(key.created_at)
    updated = _dt(key.updated_at)
    assert created is not None and updated is not None
    return KeyOut(
        id=key.id, name=key.name, prefix=key.prefix, status=effective_status(key),
        internal=key.internal, owner=key.owner, tags=key.tags, created_at=created,
        updated_at=updated, expires_at=_dt(key.expires_at), allowed_models=key.allowed_models,
        allowed_ips=key.allowed_ips, rpm_limit=key.rpm_limit, tpm_limit=key.tpm_limit,
        quota_tokens=key.quota_tokens,
        budget=None if key.budget_nano is None else format_amount(key.budget_nano),
        quota_period=key.quota_period,
    )


class KeyService:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Called after every change, e.g. to drop the gateway's cached copy of keys.
        self.listeners: list[Callable[[], None]] = []

    def _changed(self, actor: str, action: str, key_id: str,
                 details: dict[str, Any] | None = None) -> None:
        write_audit(self.db, actor, action, key_id, details)
        for listener in self.listeners:
            listener()

    def create(self, fields: KeyCreate, actor: str) -> CreatedKey:
        secret = new_secret()
        now = now_us()
        key = StoredKey(
            id=uuid.uuid4().hex[:16], name=fields.name, prefix=shown_prefix(secret),
            secret_hash=hash_secret(secret), status="active", internal=fields.internal,
            owner=fields.owner, tags=fields.tags or [], created_at=now, updated_at=now,
            expires_at=_us(fields.expires_at), allowed_models=fields.allowed_models,
            allowed_ips=fields.allowed_ips, rpm_limit=fields.rpm_limit,
            tpm_limit=fields.tpm_limit, quota_tokens=fields.quota_tokens,
            budget_nano=None if fields.budget is None else to_nano(fields.budget),
            quota_period=fields.quota_period,
        )
        key_store.insert_key(self.db, key)
        self._changed(actor, "key.create", key.id,
                    {"name": key.name, "internal": key.internal})
        return CreatedKey(**key_out(key).model_dump(), key=secret)

    def list(self) -> list[KeyOut]:
        return [key_out(key) for key in key_store.list_keys(self.db)]

    def get(self, key_id: str) -> KeyOut:
        return key_out(self._stored(key_id))

    def update(self, key_id: str, change: KeyUpdate, actor: str) -> KeyOut:
        self._stored(key_id)
        values: dict[str, Any] = {}
        for name in change.model_fields_set:
            value = getattr(change, name)
            if name == "expires_at":
                values["expires_at"] = _us(value)
            elif name == "budget":
                values["budget_nano"] = None if value is None else to_nano(value)
            elif name == "tags":
                values["tags"] = value or []
            elif name in ("name", "internal", "status", "quota_period") and value is None:
                raise ValueError(f"{name}: cannot be null")
            else:
                values[name] = value
        if not values:
            return self.get(key_id)
        values["updated_at"] = now_us()
        stored = key_store.update_key(self.db, key_id, values)
        if stored is None:
            raise KeyNotFound(key_id)
        audited = {k: (str(v) if k == "budget_nano" else v) for k, v in values.items()
                   if k != "updated_at"}
        self._changed(actor, "key.update", key_id, audited)
        return key_out(stored)

    def set_status(self, key_id: str, status: str, actor: str) -> KeyOut:
        return self.update(key_id, KeyUpdate(status=status), actor)

    def rotate(self, key_id: str, actor: str) -> CreatedKey:
        """A new secret for the same key (limits and usage history stay)."""
        self._stored(key_id)
        secret = new_secret()
        stored = key_store.update_key(self.db, key_id, {
            "secret_hash": hash_secret(secret), "prefix": shown_prefix(secret),
            "updated_at": now_us()})
        if stored is None:
            raise KeyNotFound(key_id)
        delete_sessions_of_key(self.db, key_id)  # pages signed in with the old secret
        self._changed(actor, "key.rotate", key_id)
        return CreatedKey(**key_out(stored).model_dump(), key=secret)

    def delete(self, key_id: str, actor: str) -> None:
        if not key_store.delete_key(self.db, key_id):
            raise KeyNotFound(key_id)
        delete_sessions_of_key(self.db, key_id)
        self._changed(actor, "key.delete", key_id)

    def authenticate(self, secret: str) -> StoredKey | None:
        """The key a secret belongs to, or None. Equality is on a hash, so the look-up leaks
        nothing about the secret through timing."""
        return key_store.find_by_hash(self.db, hash_secret(secret))

    def _stored(self, key_id: str) -> StoredKey:
        key = key_store.get_key(self.db, key_id)
        if key is None:
            raise KeyNotFound(key_id)
        return key
