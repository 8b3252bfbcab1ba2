"""KeyService on the real databases: secrets hashed at rest, exact limits, audited changes."""

from __future__ import annotations

import string
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pydantic import ValidationError

from tallygate.keys.schemas import CreatedKey, KeyCreate, KeyOut, KeyUpdate
from tallygate.keys.secrets import KEY_PREFIX, hash_secret, new_secret, same_hash, shown_prefix
from tallygate.keys.service import KeyNotFound, KeyService, effective_status
from tallygate.store import keys as key_store
from tallygate.store.database import Database
from tallygate.store.meta import list_audit


def test_secrets_are_random_prefixed_and_hashed() -> None:
    secrets = {new_secret() for _ in range(2000)}
    assert len(secrets) == 2000
    alphabet = set(string.ascii_letters + string.digits)
    for secret in list(secrets)[:50]:
        assert secret.startswith(KEY_PREFIX) and len(secret) == len(KEY_PREFIX) + 40
        assert set(secret.removeprefix(KEY_PREFIX)) <= alphabet
        assert len(hash_secret(secret)) == 64 and hash_secret(secret) != secret
        assert shown_prefix(secret) == secret[:10]
    a, b = sorted(secrets)[:2]
    assert same_hash(hash_secret(a), hash_secret(a)) and not same_hash(hash_secret(a),
                                                                        hash_secret(b))


def test_create_stores_only_the_hash_and_authenticates(db: Database) -> None:
    service = KeyService(db)
    created = service.create(KeyCreate(name="k", budget=Decimal("12.5"), rpm_limit=60),
                             actor="tests")
    assert isinstance(created, CreatedKey)
    stored = key_store.get_key(db, created.id)
    assert stored is not None
    assert stored.secret_hash == hash_secret(created.key)
    assert created.key not in repr(stored)
    assert stored.prefix == created.key[:10] and stored.budget_nano == 12_500_000_000
    assert created.budget == "12.50"

    found = service.authenticate(created.key)
    assert found is not None and found.id == created.id
    assert service.authenticate(created.key + "x") is None
    assert service.authenticate(created.key[:-1]) is None
    assert service.authenticate("") is None

    out = service.get(created.id)
    assert isinstance(out, KeyOut) and not isinstance(out, CreatedKey)
    assert "key" not in out.model_dump() and "secret_hash" not in out.model_dump()
    assert created.key not in out.model_dump_json()


def test_update_changes_only_what_is_sent(db: Database) -> None:
    service = KeyService(db)
    key = service.create(KeyCreate(name="k", rpm_limit=5, tpm_limit=100, tags=["a"]), "tests")
    expires = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=UTC)
    changed = service.update(key.id, KeyUpdate(rpm_limit=None, tags=None, expires_at=expires,
                                               budget=Decimal("0.000000001")), "tests")
    assert changed.rpm_limit is None and changed.tpm_limit == 100
    assert changed.tags == [] and changed.expires_at == expires
    assert changed.budget == "0.000000001"
    assert service.get(key.id) == changed

    for field in ("name", "internal", "status", "quota_period"):
        with pytest.raises(ValueError, match=f"^{field}: cannot be null"):
            service.update(key.id, KeyUpdate(**{field: None}), "tests")
    assert service.get(key.id) == changed

    unchanged = service.update(key.id, KeyUpdate(), "tests")
    assert unchanged == changed
    with pytest.raises(KeyNotFound):
        service.update("missing", KeyUpdate(rpm_limit=1), "tests")


def test_status_expiry_rotation_deletion_and_the_audit(db: Database) -> None:
    service = KeyService(db)
    heard: list[str] = []
    service.listeners.append(lambda: heard.append("changed"))
    key = service.create(KeyCreate(name="k"), "alice")
    assert service.set_status(key.id, "disabled", "alice").status == "disabled"
    stored = service.authenticate(key.key)
    assert stored is not None and effective_status(stored) == "disabled"
    assert service.set_status(key.id, "active", "alice").status == "active"

    soon = datetime.now(UTC) + timedelta(hours=1)
    service.update(key.id, KeyUpdate(expires_at=soon), "alice")
    stored = service.authenticate(key.key)
    assert stored is not None and effective_status(stored) == "active"
    later_us = int((soon + timedelta(seconds=1)).timestamp() * 1_000_000)
    assert effective_status(stored, at_us=later_us) == "expired"
    service.set_status(key.id, "disabled", "alice")
    stored = service.authenticate(key.key)
    assert stored is not None and effective_status(stored, at_us=later_us) == "disabled"

    rotated = service.rotate(key.id, "bob")
    assert rotated.id == key.id and rotated.key != key.key
    assert service.authenticate(key.key) is None
    assert service.authenticate(rotated.key) is not None

    service.delete(key.id, "bob")
    with pytest.raises(KeyNotFound):
        service.delete(key.id, "bob")
    with pytest.raises(KeyNotFound):
        service.rotate(key.id, "bob")
    with pytest.raises(KeyNotFound):
        service.get(key.id)
    assert service.authenticate(rotated.key) is None

    audit = list(reversed(list_audit(db)))
    assert [(e["actor"], e["action"]) for e in audit] == [
        ("alice", "key.create"), ("alice", "key.update"), ("alice", "key.update"),
        ("alice", "key.update"), ("alice", "key.update"), ("bob", "key.rotate"),
        ("bob", "key.delete")]
    assert audit[0]["details"] == {"name": "k", "internal": False}
    assert len(heard) == len(audit)
    for entry in audit:
        assert key.key not in str(entry) and rotated.key not in str(entry)


def test_list_is_in_creation_order(db: Database) -> None:
    service = KeyService(db)
    ids = [service.create(KeyCreate(name=f"k{i}"), "tests").id for i in range(5)]
    assert [k.id for k in service.list()] == ids


@pytest.mark.parametrize(("fields", "bad"), [
    ({"name": "k", "allowed_ips": ["10.0.0.1", "nope"]}, "allowed_ips"),
    ({"name": "k", "expires_at": datetime(2030, 1, 1)}, "expires_at"),
    ({"name": "k", "budget": Decimal(0)}, "budget"),
    ({"name": "k", "rpm_limit": True}, "rpm_limit"),
    ({"name": "k", "tags": ["x"] * 51}, "tags"),
    ({"name": "k", "secret": "mine"}, "secret"),
    ({"name": "  "}, "name"),
])
def test_key_fields_are_validated(fields: dict[str, object], bad: str) -> None:
    with pytest.raises(ValidationError) as caught:
        KeyCreate.model_validate(fields)
    assert caught.value.errors()[0]["loc"][0] == bad


def test_networks_of_both_families_are_allowed() -> None:
    fields = KeyCreate(name="k", allowed_ips=["10.0.0.0/8", "192.168.1.7", "::1",
                                              "2001:db8::/32"])
    assert fields.allowed_ips == ["10.0.0.0/8", "192.168.1.7", "::1", "2001:db8::/32"]
    assert "key" not in KeyOut.model_fields and "secret_hash" not in KeyOut.model_fields
