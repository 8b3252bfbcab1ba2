"""Creating, changing and checking API keys; every change goes to the audit log."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tallygate.domain.money import format_amount, to_nano
from tallygate.domain.pricing import Discount, DiscountTable
from tallygate.domain.records import now_us
from tallygate.keys.schemas import CreatedKey, KeyCreate, KeyOut, KeyUpdate, KeyUsage
from tallygate.keys.secrets import hash_secret, new_secret, shown_prefix
from tallygate.store import keys as key_store
from tallygate.store import prices as price_store
from tallygate.store.database import Database
from tallygate.store.keys import StoredKey
from tallygate.store.meta import write_audit
from tallygate.store.sessions import delete_sessions_of_key

if TYPE_CHECKING:
    from tallygate.ledger.forecast import KeyStanding


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


def _percent_text(percent: Decimal) -> str:
    return format(percent.normalize(), "f")


def key_usage(standing: KeyStanding) -> KeyUsage:
    return KeyUsage(
        period=standing.period,
        period_start=_dt(standing.period_start_us), period_end=_dt(standing.period_end_us),
        tokens=standing.tokens, cost=format_amount(standing.cost_nano),
        window_hours=standing.window_hours, tokens_per_hour=standing.tokens_per_hour,
        cost_per_hour=format_amount(standing.cost_nano_per_hour),
        quota_used=standing.quota_used, budget_used=standing.budget_used,
        exhausted=standing.exhausted, runs_out_at=_dt(standing.runs_out_at_us),
        runs_out_of=standing.runs_out_of,
    )


def key_out(key: StoredKey, standing: KeyStanding | None = None,
            discount: Decimal | None = None) -> KeyOut:
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
        quota_period=key.quota_period, max_concurrency=key.max_concurrency,
        discount_percent=None if discount is None else _percent_text(discount),
        usage=None if standing is None else key_usage(standing),
        near_limit=standing is not None and standing.near_limit,
        near_expiry=standing is not None and standing.near_expiry,
        warnings=[] if standing is None else standing.warnings,
    )


def keys_out(db: Database, keys: Sequence[StoredKey]) -> list[KeyOut]:
    """Keys as the API shows them: with their discount and live figures."""
    # Imported here: the forecast follows the gateway's quota periods, and the gateway's
    # limits import this module.
    from tallygate.ledger.forecast import key_standings

    now = now_us()
    standings = key_standings(db, keys, now)
    discounts = DiscountTable(price_store.list_discounts(db))
    return [key_out(key, standings.get(key.id), discounts.current(key.id, now))
            for key in keys]


class KeyService:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Called after every change, e.g. to drop the gateway's cached copy of keys.
        self.listeners: list[Callable[[], None]] = []

    def _changed(self, actor: str, action: str, key_id: str,
                 details: dict[str, Any] | None = None, *, at_us: int | None = None) -> None:
        write_audit(self.db, actor, action, key_id, details, at_us=at_us)
        for listener in self.listeners:
            listener()

    def create(self, fields: KeyCreate, actor: str, *,
               created_at_us: int | None = None) -> CreatedKey:
        """A new key; ``created_at_us`` back-dates it (and its audit entry), for a ledger
        seeded with history, so no key shows calls from before it existed."""
        secret = new_secret()
        now = now_us() if created_at_us is None else created_at_us
        key = StoredKey(
            id=uuid.uuid4().hex[:16], name=fields.name, prefix=shown_prefix(secret),
            secret_hash=hash_secret(secret), status="active", internal=fields.internal,
            owner=fields.owner, tags=fields.tags or [], created_at=now, updated_at=now,
            expires_at=_us(fields.expires_at), allowed_models=fields.allowed_models,
            allowed_ips=fields.allowed_ips, rpm_limit=fields.rpm_limit,
            tpm_limit=fields.tpm_limit, quota_tokens=fields.quota_tokens,
            budget_nano=None if fields.budget is None else to_nano(fields.budget),
            quota_period=fields.quota_period, max_concurrency=fields.max_concurrency,
        )
        key_store.insert_key(self.db, key)
        details: dict[str, Any] = {"name": key.name, "internal": key.internal}
        if fields.discount_percent:
            # From the epoch: events reported for this key id before it existed are priced
            # with it too.
            price_store.set_discount(self.db, Discount(key.id, 0, fields.discount_percent))
            details["discount_percent"] = _percent_text(fields.discount_percent)
        self._changed(actor, "key.create", key.id, details, at_us=created_at_us)
        return CreatedKey(**keys_out(self.db, [key])[0].model_dump(), key=secret)

    def list(self, *, flagged: bool = False) -> list[KeyOut]:
        """Every key with its live figures; with ``flagged``, only keys near a limit or their
        expiry."""
        keys = keys_out(self.db, key_store.list_keys(self.db))
        return [k for k in keys if k.near_limit or k.near_expiry] if flagged else keys

    def get(self, key_id: str) -> KeyOut:
        return keys_out(self.db, [self._stored(key_id)])[0]

    def set_discount(self, key_id: str, percent: Decimal, actor: str,
                     effective_from_us: int | None = None) -> KeyOut:
        """``percent`` off the price table for the key's calls from ``effective_from_us``
        (default: now) on. A discount set from a past moment changes no stored cost until
        ``tallygate pricing recompute`` reprices that range."""
        self._stored(key_id)
        if not 0 <= percent <= 100:
            raise ValueError("discount_percent: must be between 0 and 100")
        start = now_us() if effective_from_us is None else effective_from_us
        price_store.set_discount(self.db, Discount(key_id, start, percent))
        self._changed(actor, "key.discount", key_id,
                      {"discount_percent": _percent_text(percent), "effective_from": start})
        return self.get(key_id)

    def update(self, key_id: str, change: KeyUpdate, actor: str) -> KeyOut:
        self._stored(key_id)
        values: dict[str, Any] = {}
        for name in change.model_fields_set:
            value = getattr(change, name)
            if name == "discount_percent":
                continue
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
        if "discount_percent" in change.model_fields_set:
            self.set_discount(key_id, change.discount_percent or Decimal(0), actor)
        if not values:
            return self.get(key_id)
        values["updated_at"] = now_us()
        stored = key_store.update_key(self.db, key_id, values)
        if stored is None:
            raise KeyNotFound(key_id)
        if values.get("status") == "disabled":
            delete_sessions_of_key(self.db, key_id)
        audited = {k: (str(v) if k == "budget_nano" else v) for k, v in values.items()
                   if k != "updated_at"}
        self._changed(actor, "key.update", key_id, audited)
        return keys_out(self.db, [stored])[0]

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
        return CreatedKey(**keys_out(self.db, [stored])[0].model_dump(), key=secret)

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
