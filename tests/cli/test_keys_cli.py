"""``tallygate keys create|list|disable|enable|rotate|delete``, checked against the API."""

from __future__ import annotations

import re

import pytest

from tallygate.keys.service import KeyService
from tallygate.store.database import Database
from tallygate.store.meta import list_audit
from tests.api.support import running_app
from tests.cli.conftest import Run


def _created(output: str) -> tuple[str, str]:
    """The key id and the secret that ``keys create`` / ``keys rotate`` printed."""
    key_id = re.search(r"(?:created|rotated) key (\w+)", output)
    assert key_id is not None, output
    secrets = [line for line in output.splitlines() if line.startswith("tg-")]
    assert len(secrets) == 1, output
    return key_id.group(1), secrets[0]


def test_the_key_lifecycle_from_the_command_line(db: Database, cli: Run) -> None:
    created = cli("keys", "create", "--name", "nightly batch", "--internal", "--owner", "ops",
                  "--tag", "batch", "--tag", "eval", "--rpm-limit", "30", "--tpm-limit", "9000",
                  "--quota-tokens", "1000000", "--budget", "25.5", "--quota-period", "daily",
                  "--allowed-model", "bge-m3", "--allowed-ip", "10.1.0.0/16",
                  "--expires-at", "2099-01-01T00:00:00+00:00")
    assert created.exit_code == 0, created.output
    key_id, secret = _created(created.stdout)
    other_id, _ = _created(cli("keys", "create", "--name", "second").stdout)

    # From inside the key's allowed network: allowed_ips holds on /api/v1 too.
    with running_app(db, client_address="10.1.2.3") as api:
        shown = api.ok(f"/api/v1/keys/{key_id}")
        assert shown["name"] == "nightly batch" and shown["internal"] is True
        assert (shown["owner"], shown["tags"]) == ("ops", ["batch", "eval"])
        assert (shown["rpm_limit"], shown["tpm_limit"], shown["quota_tokens"]) == (
            30, 9000, 1_000_000)
        assert (shown["budget"], shown["quota_period"]) == ("25.50", "daily")
        assert shown["allowed_models"] == ["bge-m3"]
        assert shown["allowed_ips"] == ["10.1.0.0/16"]
        assert shown["expires_at"].startswith("2099-01-01T00:00:00")
        assert api.get("/api/v1/usage/summary", token=secret).status_code == 200

        listed = cli("keys", "list")
        assert listed.exit_code == 0
        assert "2 API keys" in listed.stdout
        assert key_id in listed.stdout and other_id in listed.stdout  # whole, however narrow
        assert secret not in listed.stdout and secret[:12] not in listed.stdout

        disabled = cli("keys", "disable", key_id)
        assert disabled.exit_code == 0 and "is disabled" in disabled.stdout
        assert api.get("/api/v1/usage/summary", token=secret).status_code == 403
        assert api.ok(f"/api/v1/keys/{key_id}")["status"] == "disabled"
        enabled = cli("keys", "enable", key_id)
        assert enabled.exit_code == 0 and "is active" in enabled.stdout
        assert api.get("/api/v1/usage/summary", token=secret).status_code == 200

        rotated = cli("keys", "rotate", key_id)
        assert rotated.exit_code == 0, rotated.output
        same_id, new_secret = _created(rotated.stdout)
        assert same_id == key_id and new_secret != secret
        assert api.get("/api/v1/usage/summary", token=secret).status_code == 401
        assert api.get("/api/v1/usage/summary", token=new_secret).status_code == 200
        assert api.ok(f"/api/v1/keys/{key_id}")["rpm_limit"] == 30

        kept = cli("keys", "delete", key_id, input="n\n")
        assert kept.exit_code != 0
        assert api.get(f"/api/v1/keys/{key_id}").status_code == 200
        deleted = cli("keys", "delete", key_id, input="y\n")
        assert deleted.exit_code == 0 and f"deleted key {key_id}" in deleted.stdout
        assert api.get(f"/api/v1/keys/{key_id}").status_code == 404
        assert cli("keys", "delete", "--yes", other_id).exit_code == 0
        assert api.ok("/api/v1/keys")["data"] == []

    actions = [(e["actor"], e["action"]) for e in reversed(list_audit(db))]
    assert actions == [("cli", "key.create"), ("cli", "key.create"), ("cli", "key.update"),
                       ("cli", "key.update"), ("cli", "key.rotate"), ("cli", "key.delete"),
                       ("cli", "key.delete")]
    for command in ("disable", "enable", "rotate"):
        missing = cli("keys", command, key_id)
        assert missing.exit_code != 0 and "no API key with id" in missing.output
    assert cli("keys", "delete", "--yes", key_id).exit_code != 0


@pytest.mark.parametrize(("args", "option"), [
    (["--name", ""], "--name"),
    (["--name", "x", "--budget", "a lot"], "--budget"),
    (["--name", "x", "--budget", "-1"], "--budget"),
    (["--name", "x", "--quota-period", "weekly"], "--quota-period"),
    (["--name", "x", "--rpm-limit", "0"], "--rpm-limit"),
    (["--name", "x", "--allowed-ip", "10.0.0.300"], "--allowed-ip"),
    (["--name", "x", "--tag", ""], "--tag"),
    (["--name", "x", "--allowed-model", ""], "--allowed-model"),
    (["--name", "x", "--expires-at", "2099-01-01T00:00:00"], "--expires-at"),
    (["--name", "x", "--expires-at", "soon"], "--expires-at"),
    ([], "--name"),
])
def test_create_refuses_bad_options_naming_them(sqlite_cli: Run, sqlite_db: Database,
                                                args: list[str], option: str) -> None:
    result = sqlite_cli("keys", "create", *args)
    assert result.exit_code != 0
    assert re.search(re.escape(option) + r"\b(?!-)", result.output), result.output
    assert "tg-" not in result.stdout
    assert KeyService(sqlite_db).list() == []


def test_max_concurrency_is_set_changed_and_cleared_from_the_command_line(
        db: Database, cli: Run) -> None:
    created = cli("keys", "create", "--name", "bounded", "--max-concurrency", "3")
    assert created.exit_code == 0, created.output
    key_id, _ = _created(created.stdout)
    with running_app(db) as api:
        assert api.ok(f"/api/v1/keys/{key_id}")["max_concurrency"] == 3
        changed = cli("keys", "update", key_id, "--max-concurrency", "5", "--rpm-limit", "9")
        assert changed.exit_code == 0, changed.output
        shown = api.ok(f"/api/v1/keys/{key_id}")
        assert (shown["max_concurrency"], shown["rpm_limit"]) == (5, 9)
        assert cli("keys", "update", key_id, "--clear", "max_concurrency").exit_code == 0
        assert api.ok(f"/api/v1/keys/{key_id}")["max_concurrency"] is None
    refused = cli("keys", "update", key_id, "--max-concurrency", "0")
    assert refused.exit_code != 0 and "--max-concurrency" in refused.output
    unknown = cli("keys", "update", key_id, "--clear", "name")
    assert unknown.exit_code != 0 and "--clear" in unknown.output
