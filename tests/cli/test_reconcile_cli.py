"""``tallygate reconcile``: a table (or --json), exit 1 on a difference, the admin key never
shown (nor by ``config show``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tests.cli.conftest import Run
from tests.providers.support import (
    ADMIN_KEY,
    KEY_ENV,
    faithful_days,
    provider_account,
    provider_settings,
)


@pytest.fixture
def setup(db: Database, cli: Run, tmp_path: Path,
          monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Run, Any, str, Ledger]]:
    monkeypatch.setenv(KEY_ENV, ADMIN_KEY)
    with provider_account() as (fake, url):
        settings = provider_settings(url, "anthropic")
        provider = settings["providers"][0]
        route = settings["routes"][0]
        path = tmp_path / "tallygate.toml"
        path.write_text(
            "[[providers]]\n" + "".join(f'{k} = "{v}"\n' for k, v in provider.items())
            + "[[routes]]\n" + "".join(f'{k} = "{v}"\n' for k, v in route.items()))
        assert cli("db", "upgrade").exit_code == 0
        yield cli, fake, str(path), Ledger(db)


def test_a_faithful_ledger_exits_0(setup: tuple[Run, Any, str, Ledger]) -> None:
    cli, fake, config, ledger = setup
    faithful_days(ledger, fake, "anthropic")
    result = cli("--config", config, "reconcile", "--provider", "main", "--period", "7d")
    assert result.exit_code == 0, result.output
    assert "3 match" in result.output and "every row agrees" in result.output
    shown = cli("--config", config, "reconcile", "--provider", "main", "--period", "7d",
                "--json")
    answer = json.loads(shown.stdout)
    assert answer["status"] == "match" and answer["kind"] == "anthropic"
    assert "requests" not in answer["measures"]


def test_a_difference_exits_1_and_is_shown(setup: tuple[Run, Any, str, Ledger]) -> None:
    cli, fake, config, ledger = setup
    day = faithful_days(ledger, fake, "anthropic")[1]
    fake.anthropic_costs[(day, "gpt-4o-2024-08-06", "uncached_input_tokens")] += 10
    result = cli("--config", config, "reconcile", "--provider", "main", "--period", "7d",
                 "--json")
    assert result.exit_code == 1
    rows = [r for r in json.loads(result.stdout)["rows"] if r["status"] == "mismatch"]
    assert [r["day"] for r in rows] == [day.isoformat()]
    assert rows[0]["cells"]["cost"] == {"status": "mismatch", "provider": "0.1045",
                                        "tallygate": "0.0045", "difference": "0.10"}
    table = cli("--config", config, "reconcile", "--provider", "main", "--period", "7d")
    assert table.exit_code == 1 and "mismatch" in table.output and "+0.10" in table.output


def test_bad_options_name_themselves(setup: tuple[Run, Any, str, Ledger]) -> None:
    cli, _, config, _ = setup
    result = cli("--config", config, "reconcile", "--provider", "nope")
    assert result.exit_code == 2 and "--provider: 'nope' names no" in result.output
    result = cli("--config", config, "reconcile", "--provider", "main", "--period", "1y")
    assert result.exit_code == 2 and "--period:" in result.output


def test_the_admin_key_is_never_shown(setup: tuple[Run, Any, str, Ledger],
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    cli, fake, config, _ = setup
    shown = cli("--config", config, "config", "show")
    assert KEY_ENV in shown.output and ADMIN_KEY not in shown.output
    fake.admin_key = "another"
    fake.failures = [429]
    refused = cli("--config", config, "reconcile", "--provider", "main")
    assert refused.exit_code == 2 and "the admin key was refused" in refused.output
    assert ADMIN_KEY not in refused.output and ADMIN_KEY not in caplog.text
