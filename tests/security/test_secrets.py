"""Secrets appear nowhere: not in a log line, an answer or an error message, nor in the
database files — the admin token, every API key, and a route's upstream credential.

A real ``tallygate serve`` (debug logging and the access log on) goes through a session that
touches every path a secret travels: keys created and rotated, gateway calls (plain, streamed,
failing), wrong credentials everywhere, page sign-ins, ingest. Then its whole output, every
answer (but the one that shows a new key, once), the SQLite files (or every PostgreSQL table
as text) and the spool are searched for each secret and for its random part alone.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from tallygate.cli import app as cli
from tallygate.fake_upstream import FakeSettings, FakeUpstream
from tallygate.keys.secrets import hash_secret
from tallygate.store.database import Database
from tallygate.store.schema import metadata
from tests.conftest import RECENT
from tests.reliability.support import CHAT, start_gateway
from tests.security.support import post_login
from tests.servers import free_port, serve_app

ADMIN_SECRET = "tga-AdminSecret7Qx2Lm9Vt4Rb8Nc1Zp6Wd3Ke5"
UPSTREAM_SECRET = "sk-upstream-Secret8Fh3Jq6Tn1Xy4Bv7Cm2Gs9"


class CredentialRecorder:
    """The fake upstream, remembering the Authorization headers it was sent."""

    def __init__(self) -> None:
        self.fake = FakeUpstream(FakeSettings(chunks=3))
        self.seen: list[bytes] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            self.seen += [v for k, v in scope["headers"] if k == b"authorization"]
        await self.fake(scope, receive, send)


@pytest.fixture
def recorder() -> Iterator[tuple[str, CredentialRecorder]]:
    upstream = CredentialRecorder()
    with serve_app(upstream) as url:
        yield url, upstream


def variants(secret: str) -> list[str]:
    """The secret, and its random part without the prefix a key list shows."""
    return [secret, secret[12:]]


def database_text(db: Database, files: list[Path]) -> bytes:
    if db.is_sqlite:
        return b"".join(path.read_bytes() for path in files if path.exists())
    with db.read() as conn:
        rows = [conn.execute(text(f"SELECT t::text FROM {table.name} t")).scalars().all()
                for table in metadata.sorted_tables]
    return "\n".join(str(row) for table in rows for row in table).encode()


def test_no_secret_in_logs_answers_errors_or_the_database(db: Database, tmp_path: Path,
                                                          recorder: tuple[str, Any]) -> None:
    upstream_url, upstream = recorder
    spool = tmp_path / "spool"
    gateway = start_gateway(
        tmp_path, db.url, upstream_url, api_key_env="TEST_UPSTREAM_CREDENTIAL",
        more_routes={"down-model": f"http://127.0.0.1:{free_port()}"},
        env={"TALLYGATE_ADMIN_TOKEN": ADMIN_SECRET, "TALLYGATE_LOG_LEVEL": "debug",
             "TALLYGATE_ACCESS_LOG": "true", "TALLYGATE_SPOOL_DIR": str(spool),
             "TEST_UPSTREAM_CREDENTIAL": UPSTREAM_SECRET})
    answers: list[str] = []
    admin = {"Authorization": f"Bearer {ADMIN_SECRET}"}
    try:
        with httpx.Client(base_url=gateway.url, timeout=30) as client:
            def keep(answer: httpx.Response) -> httpx.Response:
                answers.append(f"{answer.status_code} {answer.headers} {answer.text}")
                return answer

            created = [client.post("/api/v1/keys", json={"name": f"k{n}", "rpm_limit": 100},
                                   headers=admin).json() for n in range(2)]
            rotated = client.post(f"/api/v1/keys/{created[1]['id']}/rotate",
                                  headers=admin).json()
            secrets = [ADMIN_SECRET, UPSTREAM_SECRET, created[0]["key"], created[1]["key"],
                       rotated["key"]]
            key = created[0]["key"]
            for body in ({"model": CHAT, "messages": [{"role": "user", "content": "hi"}]},
                         {"model": CHAT, "stream": True, "messages": []},
                         {"model": CHAT, "fake": {"status": 500}},
                         {"model": "down-model"}, {"model": "no-such-model"}, {"model": 1}):
                keep(client.post("/v1/chat/completions", json=body,
                                 headers={"Authorization": f"Bearer {key}"}))
            for wrong in (created[1]["key"], ADMIN_SECRET, UPSTREAM_SECRET, key + "x"):
                keep(client.post("/v1/chat/completions", json={"model": CHAT},
                                 headers={"Authorization": f"Bearer {wrong}"}))
                keep(client.get("/api/v1/keys", headers={"Authorization": f"Bearer {wrong}"}))
            keep(client.get("/v1/models", headers={"Authorization": f"Bearer {key}"}))
            keep(client.get("/api/v1/usage/calls", params={"period": RECENT},
                            headers={"Authorization": f"Bearer {key}"}))
            keep(client.get("/api/v1/keys", headers=admin))
            keep(client.get(f"/api/v1/keys/{created[0]['id']}", headers=admin))
            keep(client.post("/api/v1/usage/events", headers=admin, json={"events": [
                {"id": "e1", "ts": "2026-01-01T00:00:00Z", "model": CHAT,
                 "metadata": {"note": "no secret here"}}]}))
            for token in (ADMIN_SECRET, key, "wrong-token"):
                keep(post_login(client, token))
                keep(client.get("/"))
                client.cookies.clear()
            keep(client.get("/metrics", headers=admin))
    finally:
        gateway.stop(signal.SIGTERM)
        gateway.stop(signal.SIGKILL)
    log = gateway.log()
    assert "POST /v1/chat/completions" in log  # the access log was on: there was a lot to see
    # The credential did go upstream, so its absence everywhere else means something.
    assert f"Bearer {UPSTREAM_SECRET}".encode() in upstream.seen
    stored = database_text(db, [Path(str(db.engine.url.database) + s) for s in
                                ("", "-wal", "-shm")] if db.is_sqlite else [])
    assert stored  # the search below searched something
    assert hash_secret(key).encode() in stored  # ...and found what is meant to be there
    spooled = b"".join(p.read_bytes() for p in spool.rglob("*") if p.is_file()) \
        if spool.exists() else b""
    for secret in secrets:
        for variant in variants(secret):
            assert variant not in log, f"a secret in the log: {variant[:6]}…"
            assert not [a for a in answers if variant in a], f"a secret in an answer: " \
                                                             f"{variant[:6]}…"
            assert variant.encode() not in stored, f"a secret in the database: {variant[:6]}…"
            assert variant.encode() not in spooled


def test_config_show_hides_the_secrets(tmp_path: Path) -> None:
    result = CliRunner().invoke(cli, ["--database-url", f"sqlite:///{tmp_path / 'x.db'}",
                                      "config", "show"],
                                env={"TALLYGATE_ADMIN_TOKEN": ADMIN_SECRET,
                                     "TALLYGATE_ANOMALY_WEBHOOK_SECRET": UPSTREAM_SECRET})
    assert result.exit_code == 0, result.output
    assert ADMIN_SECRET not in result.output and UPSTREAM_SECRET not in result.output
