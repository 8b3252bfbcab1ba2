"""``tallygate serve --config FILE`` means what ``tallygate --config FILE serve`` means."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from tallygate.cli import app
from tallygate.cli import serve as serve_module
from tallygate.config import Settings
from tests.api.support import forget_tallygate_environment
from tests.servers import free_port

ADMIN = "tga-from-the-config-file"


@pytest.fixture(autouse=True)
def _no_settings_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    forget_tallygate_environment(monkeypatch)


def _config(tmp_path: Path, name: str, port: int) -> Path:
    path = tmp_path / name
    path.write_text(f'port = {port}\nadmin_token = "{ADMIN}"\n'
                    f'database_url = "sqlite:///{tmp_path / (name + ".db")}"\n',
                    encoding="utf-8")
    return path


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[tuple[Settings, Path | None]]:
    """What serve would run the server with, instead of running it."""
    runs: list[tuple[Settings, Path | None]] = []
    monkeypatch.setattr(serve_module, "_run",
                        lambda settings, config_file=None: runs.append((settings, config_file)))
    return runs


def _invoke(*args: str, env: dict[str, Any] | None = None) -> Any:
    return CliRunner().invoke(app, list(args), env=env)


def test_both_places_give_the_same_settings(tmp_path: Path, started: list[Any]) -> None:
    config = _config(tmp_path, "a.toml", 8311)
    before = _invoke("--config", str(config), "serve")
    after = _invoke("serve", "--config", str(config))
    both = _invoke("--config", str(config), "serve", "--config", str(config))
    for result in (before, after, both):
        assert result.exit_code == 0, result.output
    assert len(started) == 3
    for settings, config_file in started:
        assert settings.port == 8311
        assert settings.admin_token is not None
        assert settings.admin_token.get_secret_value() == ADMIN
        assert settings.database_url.endswith("a.toml.db")
        # Worker processes re-read the same file.
        assert config_file == config
    # A flag still beats the file, wherever --config stands.
    assert _invoke("serve", "--config", str(config), "--port", "8312").exit_code == 0
    assert started[-1][0].port == 8312


def test_two_different_files_are_refused(tmp_path: Path, started: list[Any]) -> None:
    first, second = _config(tmp_path, "a.toml", 8311), _config(tmp_path, "b.toml", 8313)
    result = _invoke("--config", str(first), "serve", "--config", str(second))
    assert result.exit_code == 2
    assert "--config names two files" in result.output
    assert started == []


def test_the_command_flag_beats_the_environment(tmp_path: Path, started: list[Any]) -> None:
    from_env, from_flag = _config(tmp_path, "env.toml", 8314), _config(tmp_path, "f.toml", 8315)
    result = _invoke("serve", "--config", str(from_flag),
                     env={"TALLYGATE_CONFIG": str(from_env)})
    assert result.exit_code == 0, result.output
    assert started[-1][0].port == 8315 and started[-1][1] == from_flag
    assert _invoke("serve", env={"TALLYGATE_CONFIG": str(from_env)}).exit_code == 0
    assert started[-1][0].port == 8314


def test_a_missing_file_is_refused_alike_in_both_places(tmp_path: Path,
                                                        started: list[Any]) -> None:
    missing = str(tmp_path / "nope.toml")
    for args in (["--config", missing, "serve"], ["serve", "--config", missing]):
        result = _invoke(*args)
        assert result.exit_code == 2
        # Rich wraps the message in a box as wide as the terminal: read it as one line.
        shown = "".join(result.output.replace("│", " ").split())
        assert "nope.toml" in shown and "doesnotexist" in shown
    assert started == []


def test_serve_with_config_after_the_command_answers_on_the_files_port(
        tmp_path: Path) -> None:
    port = free_port()
    config = _config(tmp_path, "real.toml", port)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TALLYGATE_")}
    process = subprocess.Popen([sys.executable, "-m", "tallygate", "serve", "--config",
                                str(config)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read().decode() \
                if process.stderr else "died"
            try:
                response = httpx.get(f"http://127.0.0.1:{port}/api/v1/keys", timeout=1,
                                     headers={"Authorization": f"Bearer {ADMIN}"})
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not start"
                time.sleep(0.1)
        assert response.status_code == 200, response.text  # the file's admin token
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()
