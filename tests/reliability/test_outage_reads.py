"""What the gateway reads from the database on the request path, while the database is away:
the key a call names, and the price table (re-read every few seconds). A database outage must
neither lose a record nor turn a call of a known key into an error.

The outage is injected in this process (the store functions raise as a driver does), so each
read path can be taken on its own, at once, on SQLite; test_database_outage.py has the real
outages, end to end.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tallygate.config import Route, RoutePrice
from tallygate.store import keys as key_store
from tallygate.store import prices as price_store
from tallygate.store.database import Database
from tests.reliability.support import (
    CHAT,
    app_in_process,
    gateway_in_process,
    ledger_rows,
    new_key,
    wait_until,
)


@contextmanager
def database_away(monkeypatch: pytest.MonkeyPatch, *functions: tuple[Any, str]
                  ) -> Iterator[None]:
    def unavailable(*_: Any, **__: Any) -> Any:
        raise sqlite3.OperationalError("unable to open database file")

    with monkeypatch.context() as patch:
        for module, name in functions:
            patch.setattr(module, name, unavailable)
        yield


def chat(url: str, key: str, *, stream: bool = False) -> httpx.Response:
    body: dict[str, Any] = {"model": CHAT, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=30,
                      headers={"Authorization": f"Bearer {key}"})


def routes(upstream: str) -> list[Route]:
    return [Route(model=CHAT, base_url=f"{upstream}/v1",
                  price=RoutePrice(input_per_million=1, output_per_million=2))]


def test_a_known_key_is_served_while_its_look_up_fails(sqlite_db: Database, upstream: str,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       tmp_path: Path) -> None:
    _, key = new_key(sqlite_db.url)
    with gateway_in_process(sqlite_db.url, routes(upstream), key_cache_seconds=0,
                            spool_dir=str(tmp_path)) as url:
        assert chat(url, key).status_code == 200  # seen once
        with database_away(monkeypatch, (key_store, "find_by_hash")):
            answers = [chat(url, key, stream=n % 2 == 1) for n in range(4)]
        assert [a.status_code for a in answers] == [200] * 4
        ids = {a.headers["x-request-id"] for a in answers}
        wait_until(lambda: ids <= {row[0] for row in ledger_rows(sqlite_db.url)})


def test_an_unknown_key_during_an_outage_is_a_clear_503(sqlite_db: Database, upstream: str,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    with gateway_in_process(sqlite_db.url, routes(upstream)) as url, \
            database_away(monkeypatch, (key_store, "find_by_hash")):
        answer = chat(url, "tg-never-seen-before")
    assert answer.status_code == 503
    assert answer.json()["error"]["type"] and answer.headers["retry-after"] == "1"


def test_calls_are_priced_and_recorded_while_the_price_table_cannot_be_read(
        sqlite_db: Database, upstream: str, monkeypatch: pytest.MonkeyPatch,
        tmp_path: Path) -> None:
    _, key = new_key(sqlite_db.url)
    with app_in_process(sqlite_db.url, routes(upstream),
                        spool_dir=str(tmp_path)) as (app, url):
        assert chat(url, key).status_code == 200  # the table is read
        app.state.ledger.prices_ttl_s = 0  # so the next call re-reads it
        with database_away(monkeypatch, (price_store, "list_prices"),
                           (price_store, "list_discounts")):
            answers = [chat(url, key, stream=n % 2 == 1) for n in range(4)]
        assert [a.status_code for a in answers] == [200] * 4
        ids = {a.headers["x-request-id"] for a in answers}
        wait_until(lambda: ids <= {row[0] for row in ledger_rows(sqlite_db.url)}, timeout=5)
