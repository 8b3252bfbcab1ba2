"""``tallygate config docs|show`` and the global ``--config`` option."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tallygate.cli import app

DOCS = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
CLEAN_ENV: dict[str, str | None] = {"TALLYGATE_DATABASE_URL": None, "TALLYGATE_PORT": None,
                                    "TALLYGATE_ADMIN_TOKEN": None, "TALLYGATE_CURRENCY": None}


def test_config_docs_is_the_generated_reference_file() -> None:
    result = CliRunner().invoke(app, ["config", "docs"])
    assert result.exit_code == 0
    assert DOCS.read_text(encoding="utf-8") == result.stdout, \
        "docs/configuration.md is stale: regenerate it with `tallygate config docs`"


def test_config_show_follows_the_precedence_and_hides_the_admin_token(tmp_path: Path) -> None:
    config = tmp_path / "tallygate.toml"
    config.write_text('port = 8202\ncurrency = "CNY"\n', encoding="utf-8")
    runner = CliRunner(env={**CLEAN_ENV, "TALLYGATE_PORT": "8101", "TALLYGATE_CURRENCY": "EUR",
                            "TALLYGATE_ADMIN_TOKEN": "tga-do-not-print-me"})

    from_env = runner.invoke(app, ["config", "show"])
    assert from_env.exit_code == 0, from_env.output
    shown = json.loads(from_env.stdout)
    assert (shown["port"], shown["currency"]) == (8101, "EUR")
    assert "admin_token" not in shown and "tga-do-not-print-me" not in from_env.output

    from_file = runner.invoke(app, ["--config", str(config), "config", "show"])
    assert from_file.exit_code == 0, from_file.output
    assert (json.loads(from_file.stdout)["port"],
            json.loads(from_file.stdout)["currency"]) == (8202, "CNY")

    flagged = runner.invoke(app, ["--config", str(config), "--database-url",
                                  "sqlite:///flag.db", "config", "show"])
    assert json.loads(flagged.stdout)["database_url"] == "sqlite:///flag.db"


def test_a_bad_config_file_stops_every_command_naming_it(tmp_path: Path) -> None:
    runner = CliRunner(env=CLEAN_ENV)
    bad = tmp_path / "bad.toml"
    bad.write_text("port = [unclosed\n", encoding="utf-8")
    result = runner.invoke(app, ["--config", str(bad), "usage", "summary"])
    assert result.exit_code != 0 and "bad.toml" in result.output
    assert "not valid TOML" in result.output

    wrong = tmp_path / "wrong.toml"
    wrong.write_text("workers = 0\n", encoding="utf-8")
    result = runner.invoke(app, ["--config", str(wrong), "config", "show"])
    assert result.exit_code != 0 and "workers" in result.output

    missing = runner.invoke(app, ["--config", str(tmp_path / "absent.toml"), "config", "show"])
    assert missing.exit_code != 0 and "--config" in missing.output
