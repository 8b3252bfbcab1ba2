"""A retried ingest batch counts once: retried at the same time by several senders, and
retried after the server died in the middle of it.

(A retry after a clean answer is in tests/api/test_events.py.)
"""

from __future__ import annotations

import contextlib
import signal
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from tallygate.app import create_app
from tallygate.config import load_settings
from tallygate.store.database import Database
from tallygate.store.schema import calls
from tests.reliability.support import ADMIN, assert_rollups_match_raw, start_gateway
from tests.servers import serve_app


def events(count: int, prefix: str) -> list[dict[str, Any]]:
    start = datetime.now(UTC) - timedelta(hours=2)
    return [{"id": f"{prefix}-{i}", "ts": (start + timedelta(milliseconds=i * 37)).isoformat(),
             "model": "cltech/deepseek-r1-32b", "api_key_id": f"key-{i % 7}",
             "input_tokens": i % 900, "output_tokens": i % 300, "cost": "0.000123",
             "latency_ms": i % 5000} for i in range(count)]


def stored(db: Database) -> int:
    with db.read() as conn:
        return int(conn.execute(select(func.count()).select_from(calls)).scalar_one())


def post(url: str, batch: list[dict[str, Any]], timeout: float = 60) -> httpx.Response:
    return httpx.post(f"{url}/api/v1/usage/events", json={"events": batch}, timeout=timeout,
                      headers={"Authorization": f"Bearer {ADMIN}"})


def test_the_same_batch_sent_by_four_senders_at_once_counts_once(db: Database) -> None:
    batch = events(3000, "concurrent")
    app = create_app(load_settings(database_url=db.url, admin_token=ADMIN))
    answers: list[dict[str, int]] = []
    with serve_app(app) as url:
        barrier = threading.Barrier(4)

        def send() -> None:
            barrier.wait()
            response = post(url, batch)
            assert response.status_code == 200, response.text
            answers.append(response.json())

        senders = [threading.Thread(target=send) for _ in range(4)]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join(timeout=120)
    assert len(answers) == 4
    assert sum(a["accepted"] for a in answers) == 3000
    assert sum(a["duplicates"] for a in answers) == 9000
    assert stored(db) == 3000
    assert_rollups_match_raw(db.url)


def test_a_batch_retried_after_the_server_died_in_it_counts_once(sqlite_db: Database,
                                                                 tmp_path: Path) -> None:
    batch = events(10_000, "killed")
    url = sqlite_db.url
    gateway = start_gateway(tmp_path, url, "http://127.0.0.1:9", name="first")
    sender = threading.Thread(target=lambda: _ignore_errors(post, gateway.url, batch))
    sender.start()
    threading.Event().wait(0.3)  # the body is on its way, or being stored
    gateway.stop(signal.SIGKILL)
    sender.join(timeout=60)
    partly = stored(sqlite_db)
    assert partly in (0, 10_000)  # one transaction: all or nothing

    again = start_gateway(tmp_path, url, "http://127.0.0.1:9", name="second")
    try:
        answer = post(again.url, batch).json()
        assert answer["accepted"] + answer["duplicates"] == 10_000
        assert answer["accepted"] == 10_000 - partly
        assert post(again.url, batch).json()["duplicates"] == 10_000  # and once more
    finally:
        again.stop()
    assert stored(sqlite_db) == 10_000
    assert_rollups_match_raw(url)


def _ignore_errors(function: Any, *args: Any) -> None:
    with contextlib.suppress(httpx.HTTPError):  # the server was killed under it
        function(*args)
