"""``GET /api/v1/reconciliation`` and ``/last``: admin only, parameters named, the provider's
failures said without its key; on SQLite and PostgreSQL."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

from tallygate.store.database import Database
from tests.api.support import Api, running_app
from tests.providers.support import (
    ADMIN_KEY,
    KEY_ENV,
    faithful_days,
    provider_account,
    provider_settings,
)


@pytest.fixture
def account(db: Database, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Api, Any]]:
    monkeypatch.setenv(KEY_ENV, ADMIN_KEY)
    with provider_account() as (fake, url), running_app(db, **provider_settings(url)) as api:
        yield api, fake


def test_a_faithful_ledger_matches_and_the_page_finds_the_last_run(
        account: tuple[Api, Any]) -> None:
    api, fake = account
    faithful_days(api.ledger, fake)
    before = api.ok("/api/v1/reconciliation/last")
    assert before["providers"] == [{"name": "main", "kind": "openai", "models": ["gpt-4o"],
                                    "last": None}]
    result = api.ok("/api/v1/reconciliation", {"provider": "main", "period": "7d"})
    assert result["status"] == "match" and result["counts"]["match"] == 3
    assert result["days"] == 7 and len(result["rows"]) == 3
    last = api.ok("/api/v1/reconciliation/last")["providers"][0]["last"]
    assert last["id"] == result["id"] and last["result"]["rows"] == result["rows"]


def test_a_difference_is_a_mismatch(account: tuple[Api, Any]) -> None:
    api, fake = account
    day = faithful_days(api.ledger, fake)[0]
    fake.openai_usage[("completions", day, "gpt-4o-2024-08-06")]["input_cached_tokens"] = 0
    result = api.ok("/api/v1/reconciliation", {"provider": "main", "period": "7d"})
    assert result["status"] == "mismatch"
    cell = result["rows"][-1]["cells"]["cached_input_tokens"]
    assert cell == {"status": "mismatch", "provider": 0, "tallygate": 300, "difference": -300}


@pytest.mark.parametrize(("params", "param"), [
    ({"period": "7d"}, "provider"), ({"provider": "other"}, "provider"),
    ({"provider": "main", "period": "0d"}, "period"),
    ({"provider": "main", "period": "month"}, "period")])
def test_bad_parameters_are_400_naming_them(account: tuple[Api, Any], params: dict[str, str],
                                            param: str) -> None:
    api, _ = account
    response = api.get("/api/v1/reconciliation", params)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == param
    assert response.json()["error"]["message"].startswith(param + ":")


def test_admin_only(account: tuple[Api, Any]) -> None:
    api, _ = account
    secret = api.create_key(name="holder")["key"]
    for path in ("/api/v1/reconciliation?provider=main", "/api/v1/reconciliation/last"):
        assert api.get(path, token=None).status_code == 401
        assert api.get(path, token=secret).status_code == 403


def test_a_refused_admin_key_is_a_502_naming_the_variable_not_the_key(
        account: tuple[Api, Any], monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api, fake = account
    fake.admin_key = "the-real-one"
    response = api.get("/api/v1/reconciliation", {"provider": "main"})
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert "the admin key was refused" in message and KEY_ENV in message
    assert ADMIN_KEY not in response.text and ADMIN_KEY not in caplog.text
    last = api.ok("/api/v1/reconciliation/last")["providers"][0]["last"]
    assert last["status"] == "error" and KEY_ENV in last["error"]
    monkeypatch.delenv(KEY_ENV)
    response = api.get("/api/v1/reconciliation", {"provider": "main"})
    assert response.status_code == 502 and "is not set" in response.json()["error"]["message"]


def test_in_the_openapi_document(account: tuple[Api, Any]) -> None:
    api, _ = account
    paths = api.ok("/openapi.json")["paths"]
    assert "/api/v1/reconciliation" in paths and "/api/v1/reconciliation/last" in paths


def test_the_scheduled_run_starts_with_the_server_and_is_stored(
        db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
    import time

    monkeypatch.setenv(KEY_ENV, ADMIN_KEY)
    with provider_account() as (fake, url):
        with running_app(db) as seeding:
            faithful_days(seeding.ledger, fake)
        with running_app(db, reconcile_interval_s=3600, reconcile_days=5,
                         **provider_settings(url)) as api:
            deadline = time.monotonic() + 15
            while (last := api.ok("/api/v1/reconciliation/last")["providers"][0]["last"]) \
                    is None and time.monotonic() < deadline:
                time.sleep(0.05)
    assert last is not None and last["status"] == "match"
    assert last["result"]["days"] == 5 and last["result"]["counts"]["match"] == 3
