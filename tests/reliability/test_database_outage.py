"""The database goes away under load: the gateway keeps serving, records wait in the spool on
local disk, and are replayed once when the database is back; the ledger ends exact.

The outage is real and confined to the test's own PostgreSQL database: it stops accepting
connections (``ALLOW_CONNECTIONS false``, which binds superusers too) and its open connections
are ended, so the shared server and every other test go on. A variant that stops the whole
PostgreSQL server for 30 s runs only when asked (``TALLYGATE_TEST_STOP_POSTGRES=1``): it would
disturb every other test using the server.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tallygate.store.database import Database, engine_url
from tallygate.store.schema import metadata
from tests.conftest import POSTGRES_URL
from tests.reliability.support import (
    ADMIN,
    Load,
    Outcome,
    assert_each_answered_call_recorded_once,
    assert_rollups_match_raw,
    ledger_request_ids,
    new_key,
    start_gateway,
    wait_until,
)

pytestmark = pytest.mark.postgres
IN_FLIGHT = {"latency_ms": 5, "chunks": 4, "chunk_delay_ms": 10}


@contextmanager
def database_refusing_connections(database_url: str) -> Iterator[None]:
    """While inside, the database accepts no connection and has none open."""
    name = make_url(engine_url(database_url)).database
    admin = create_engine(engine_url(POSTGRES_URL), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = :name AND pid <> pg_backend_pid()"),
                         {"name": name})
        yield
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()


def _between(outcomes: list[Outcome], start: float, end: float) -> list[Outcome]:
    return [o for o in outcomes if start <= o.finished_at <= end]


def _spooled_segments(spool: Path) -> list[Path]:
    return sorted(spool.rglob("*.ndjson")) if spool.exists() else []


def run_outage(postgres_db: Database, upstream: str, tmp_path: Path, *, outage_s: float,
               make_outage: object, durability: str = "batched") -> None:
    url = postgres_db.url
    spool = tmp_path / "spool"
    gateway = start_gateway(tmp_path, url, upstream,
                            env={"TALLYGATE_SPOOL_DIR": str(spool),
                                 "TALLYGATE_DURABILITY": durability})
    _, key = new_key(url)
    postgres_db.dispose()  # this test's own pooled connections would only be ended
    load = Load(gateway.url, key, threads=6, fake=IN_FLIGHT).start()
    try:
        load.wait_for_calls(60)
        with make_outage(url):  # type: ignore[operator]
            began = time.monotonic()
            wait_until(lambda: _spooled_segments(spool), timeout=10)
            time.sleep(max(0.0, outage_s - (time.monotonic() - began)))
            ended = time.monotonic()
            during = _between(load.outcomes, began, ended)
        # Serving went on: calls were answered all through the outage, none with a 5xx.
        assert sum(o.status == 200 and o.complete for o in during) >= 20, during[-5:]
        assert not [o for o in during if o.status is None or o.status >= 500], during[-5:]
        # Back: the spool is replayed (within the back-off, 5 s at most) while calls go on.
        wait_until(lambda: not _spooled_segments(spool), timeout=30)
        answered_by = len(load.outcomes)
        wait_until(lambda: len(load.outcomes) > answered_by + 30, timeout=30)
    finally:
        outcomes = load.stop()
        gateway.stop(signal.SIGTERM)
        gateway.stop(signal.SIGKILL)
    log = gateway.log()
    assert "spooling them to" in log and "replayed" in log, log[-3000:]
    assert ADMIN not in log
    answered = assert_each_answered_call_recorded_once(outcomes, ledger_request_ids(url))
    assert answered >= 80
    assert not _spooled_segments(spool), "the spool was not emptied"
    assert_rollups_match_raw(url)


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[Database]:
    """This test process's PostgreSQL database, emptied."""
    database = Database(postgres_url)
    with database.write() as conn:
        conn.execute(text(f"TRUNCATE {', '.join(t.name for t in metadata.sorted_tables)}"))
    yield database
    database.dispose()


def test_database_refusing_connections_under_load(postgres_db: Database, upstream: str,
                                                  tmp_path: Path) -> None:
    run_outage(postgres_db, upstream, tmp_path, outage_s=4,
               make_outage=database_refusing_connections)


def test_database_refusing_connections_in_strict_mode(postgres_db: Database, upstream: str,
                                                      tmp_path: Path) -> None:
    run_outage(postgres_db, upstream, tmp_path, outage_s=3,
               make_outage=database_refusing_connections, durability="strict")


@contextmanager
def postgres_server_stopped(_: str) -> Iterator[None]:
    cluster = os.listdir("/etc/postgresql")[0]
    command = ["pg_ctlcluster", "--skip-systemctl-redirect", cluster, "main"]
    subprocess.run([*command, "stop"], check=True)
    try:
        yield
    finally:
        subprocess.run([*command, "start"], check=True)
        wait_until(lambda: subprocess.run(["pg_isready", "-h", "127.0.0.1", "-q"]
                                          ).returncode == 0, timeout=60, interval=0.5)


@pytest.mark.skipif(os.environ.get("TALLYGATE_TEST_STOP_POSTGRES") != "1",
                    reason="stops the shared PostgreSQL server for 30 s: run it alone, with "
                           "TALLYGATE_TEST_STOP_POSTGRES=1")
def test_postgres_server_stopped_for_30_seconds(postgres_db: Database, upstream: str,
                                                tmp_path: Path) -> None:
    run_outage(postgres_db, upstream, tmp_path, outage_s=30,
               make_outage=postgres_server_stopped)
