"""Several gateway processes sharing PostgreSQL and Redis never allow N× a limit."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from tallygate.cli import app as cli
from tallygate.fake_upstream import FakeSettings, FakeUpstream
from tallygate.keys.schemas import KeyCreate
from tallygate.keys.service import KeyService
from tallygate.store.database import Database
from tests.conftest import emptied_redis
from tests.servers import free_port, serve_app

REDIS_URL = os.environ.get("TALLYGATE_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
CHAT = "cltech/deepseek-r1-32b"


@pytest.fixture
def redis_url() -> Iterator[str]:
    yield from emptied_redis(REDIS_URL)


def _start(env: dict[str, str], config: Path, port: int) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "tallygate", "--config", str(config), "serve", "--port",
         str(port)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(process.stderr.read().decode() if process.stderr else "died")
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"{url} did not become ready")


@pytest.mark.postgres
def test_rpm_limit_holds_across_two_processes(postgres_url: str, redis_url: str,
                                              tmp_path: Path) -> None:
    db = Database(postgres_url)
    key = KeyService(db).create(KeyCreate(name="shared", rpm_limit=10), "test")
    db.dispose()
    with serve_app(FakeUpstream(FakeSettings())) as upstream:
        config = tmp_path / "gateway.toml"
        config.write_text(f'[[routes]]\nmodel = "{CHAT}"\nbase_url = "{upstream}/v1"\n')
        env = {**os.environ, "TALLYGATE_DATABASE_URL": postgres_url,
               "TALLYGATE_REDIS_URL": redis_url, "TALLYGATE_ADMIN_TOKEN": "tga-processes-admin"}
        ports = [free_port(), free_port()]
        processes = [_start(env, config, port) for port in ports]
        try:
            urls = [f"http://127.0.0.1:{port}" for port in ports]
            for url, process in zip(urls, processes, strict=True):
                _wait_ready(url, process)
            statuses = []
            for i in range(30):
                response = httpx.post(f"{urls[i % 2]}/v1/chat/completions",
                                      headers={"Authorization": f"Bearer {key.key}"},
                                      json={"model": CHAT, "messages": []}, timeout=30)
                statuses.append(response.status_code)
            assert statuses.count(200) == 10
            assert statuses.count(429) == 20
        finally:
            for process in processes:
                process.terminate()
            for process in processes:
                process.wait(timeout=30)
                if process.stderr is not None:
                    process.stderr.close()


def test_several_workers_without_redis_refuse_to_start(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--database-url", f"sqlite:///{tmp_path / 'x.db'}",
                                      "serve", "--workers", "2"],
                                env={"TALLYGATE_REDIS_URL": ""})
    assert result.exit_code == 2
    assert "TALLYGATE_REDIS_URL" in result.output


def test_several_workers_serve_the_routes_of_the_config_file(redis_url: str,
                                                             tmp_path: Path) -> None:
    # Workers are started by uvicorn and rebuild their settings: the TOML file must reach
    # them, or every worker would answer 404 for the routes it declares.
    database_url = f"sqlite:///{tmp_path / 'workers.db'}"
    db = Database(database_url)
    db.upgrade()
    key = KeyService(db).create(KeyCreate(name="workers"), "test")
    db.dispose()
    with serve_app(FakeUpstream(FakeSettings())) as upstream:
        config = tmp_path / "gateway.toml"
        # The file names another database: --database-url must win in the workers too.
        config.write_text(f'database_url = "sqlite:///{tmp_path / "not-this.db"}"\n'
                          f'[[routes]]\nmodel = "{CHAT}"\nbase_url = "{upstream}/v1"\n')
        env = {**os.environ, "TALLYGATE_REDIS_URL": redis_url,
               "TALLYGATE_ADMIN_TOKEN": "tga-processes-admin"}
        for name in ("TALLYGATE_CONFIG", "TALLYGATE_DATABASE_URL"):
            env.pop(name, None)
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "tallygate", "--config", str(config), "--database-url",
             database_url, "serve", "--port", str(port), "--workers", "2"], env=env,
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process)
            auth = {"Authorization": f"Bearer {key.key}"}
            for _ in range(6):  # new connections: both workers answer some
                with httpx.Client() as client:
                    models = client.get(f"{url}/v1/models", headers=auth, timeout=10)
                    assert [m["id"] for m in models.json()["data"]] == [CHAT]
                    answer = client.post(f"{url}/v1/chat/completions", headers=auth,
                                         json={"model": CHAT, "messages": []}, timeout=30)
                    assert answer.status_code == 200, answer.text
        finally:
            process.terminate()
            process.wait(timeout=30)
            if process.stderr is not None:
                process.stderr.close()


@pytest.mark.parametrize("trusted", ["", "127.0.0.1"])
def test_forwarded_addresses_are_believed_only_from_trusted_proxies(
        trusted: str, tmp_path: Path) -> None:
    # A key limited to one address: a local process claiming that address in
    # X-Forwarded-For must not get in unless the operator said 127.0.0.1 is its proxy.
    database_url = f"sqlite:///{tmp_path / 'proxies.db'}"
    db = Database(database_url)
    db.upgrade()
    key = KeyService(db).create(KeyCreate(name="office", allowed_ips=["203.0.113.7"]), "test")
    db.dispose()
    with serve_app(FakeUpstream(FakeSettings())) as upstream:
        config = tmp_path / "gateway.toml"
        config.write_text(f'[[routes]]\nmodel = "{CHAT}"\nbase_url = "{upstream}/v1"\n')
        env = {**os.environ, "TALLYGATE_DATABASE_URL": database_url,
               "TALLYGATE_ADMIN_TOKEN": "tga-processes-admin", "TALLYGATE_TRUSTED_PROXIES":
               trusted, "FORWARDED_ALLOW_IPS": "*"}  # uvicorn's own variable changes nothing
        port = free_port()
        process = _start(env, config, port)
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, process)

            def status(headers: dict[str, str]) -> int:
                return httpx.post(f"{url}/v1/chat/completions", timeout=30,
                                  headers={"Authorization": f"Bearer {key.key}", **headers},
                                  json={"model": CHAT, "messages": []}).status_code

            claimed = status({"X-Forwarded-For": "203.0.113.7"})
            assert claimed == (200 if trusted else 403)
            assert status({}) == 403  # 127.0.0.1 itself is not the office
            assert status({"X-Forwarded-For": "198.51.100.1"}) == 403
        finally:
            process.terminate()
            process.wait(timeout=30)
            if process.stderr is not None:
                process.stderr.close()
