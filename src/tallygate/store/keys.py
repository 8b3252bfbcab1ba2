"""Stored API keys. Only the hash of a secret is ever written."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import delete, select, update

from tallygate.store.database import Database
from tallygate.store.schema import api_keys


@dataclass(frozen=True, slots=True)
class StoredKey:
    id: str
    name: str
    prefix: str
    secret_hash: str
    status: str  # "active" or "disabled"; "expired" is derived from expires_at
    internal: bool
    owner: str | None
    tags: list[str]
    created_at: int
    updated_at: int
    expires_at: int | None
    allowed_models: list[str] | None
    allowed_ips: list[str] | None
    rpm_limit: int | None
    tpm_limit: int | None
    quota_tokens: int | None
    budget_nano: int | None
    quota_period: str
    max_concurrency: int | None = None  # calls in flight at once


_JSON_COLUMNS = ("tags", "allowed_models", "allowed_ips")


def _from_row(row: Any) -> StoredKey:
    values = dict(row._mapping)
    for name in _JSON_COLUMNS:
        values[name] = None if values[name] is None else json.loads(values[name])
    values["tags"] = values["tags"] or []
    values["internal"] = bool(values["internal"])
    return StoredKey(**values)


def _to_row(values: dict[str, Any]) -> dict[str, Any]:
    row = dict(values)
    for name in _JSON_COLUMNS:
        if name in row and row[name] is not None:
            row[name] = json.dumps(row[name])
    return row


def insert_key(db: Database, key: StoredKey) -> None:
    with db.write() as conn:
        conn.execute(api_keys.insert().values(**_to_row(asdict(key))))


def get_key(db: Database, key_id: str) -> StoredKey | None:
    with db.read() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
    return None if row is None else _from_row(row)


def find_by_hash(db: Database, secret_hash: str) -> StoredKey | None:
    with db.read() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.secret_hash == secret_hash)).first()
    return None if row is None else _from_row(row)


def list_keys(db: Database) -> list[StoredKey]:
    with db.read() as conn:
        rows = conn.execute(select(api_keys).order_by(api_keys.c.created_at, api_keys.c.id))
        return [_from_row(row) for row in rows]


def key_names(db: Database) -> dict[str, str]:
    with db.read() as conn:
        return {key_id: name for key_id, name in conn.execute(
            select(api_keys.c.id, api_keys.c.name))}


def update_key(db: Database, key_id: str, values: dict[str, Any]) -> StoredKey | None:
    with db.write() as conn:
        result = conn.execute(update(api_keys).where(api_keys.c.id == key_id)
                              .values(**_to_row(values)))
        if not result.rowcount:
            return None
        row = conn.execute(select(api_keys).where(api_keys.c.id == key_id)).first()
    return None if row is None else _from_row(row)


def delete_key(db: Database, key_id: str) -> bool:
    with db.write() as conn:
        return bool(conn.execute(delete(api_keys).where(api_keys.c.id == key_id)).rowcount)
