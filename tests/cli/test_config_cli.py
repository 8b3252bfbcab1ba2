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


def test_config_show_and_errors_hide_every_password_in_a_url(tmp_path: Path) -> None:
    config = tmp_path / "tallygate.toml"
    config.write_text('[[routes]]\nmodel = "m"\nbase_url = "https://svc:ROUTEPW@up.example/v1"\n',
                      encoding="utf-8")
    runner = CliRunner(env={
        **CLEAN_ENV, "TALLYGATE_DATABASE_URL": "postgresql://app:PGPW@127.0.0.1:5432/test",
        "TALLYGATE_REDIS_URL": "redis://:REDIS%40PW@127.0.0.1:6379/0",
        "TALLYGATE_ANOMALY_WEBHOOK_URL": "https://hook:HOOKPW@hooks.example/x"})
    shown = runner.invoke(app, ["--config", str(config), "config", "show"])
    assert shown.exit_code == 0, shown.output
    for secret in ("PGPW", "REDIS", "ROUTEPW", "HOOKPW"):
        assert secret not in shown.output
    settings = json.loads(shown.stdout)
    assert settings["database_url"] == "postgresql://app:***@127.0.0.1:5432/test"
    assert settings["redis_url"] == "redis://:***@127.0.0.1:6379/0"
    assert settings["routes"][0]["base_url"] == "https://svc:***@up.example/v1"
    assert settings["anomaly_webhook_url"] == "https://hook:***@hooks.example/x"

    unreachable = CliRunner(env={**CLEAN_ENV, "TALLYGATE_DATABASE_URL":
                                 "postgresql://app:PGPW@127.0.0.1:1/test"})
    failed = unreachable.invoke(app, ["db", "upgrade"])
    assert failed.exit_code != 0 and "PGPW" not in failed.output


def test_log_messages_are_redacted(caplog: object) -> None:
    import logging

    from tallygate.redact import redact_logs, redact_urls

    redact_logs()
    record = logging.getLogRecordFactory()(
        "x", logging.ERROR, __file__, 1, "cannot reach %s", ("redis://:p@ss@h:6379/0",), None)
    assert record.getMessage() == "cannot reach redis://:***@h:6379/0"
    assert redact_urls("http://user@h/ and https://a:b@c/d?e=f@g") == \
        "http://user@h/ and https://a:***@c/d?e=f@g"
