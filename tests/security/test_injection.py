"""SQL injection strings in every filter parameter of every endpoint (taken from the OpenAPI
document, so a parameter added later is covered): never a 5xx, never a match they should not
make, never a change to the database — on SQLite and PostgreSQL."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, inspect, select

from tallygate.store.database import Database
from tallygate.store.schema import metadata
from tests.security.support import ADMIN, app_client, bearer, seed

PAYLOADS = [
    "' OR '1'='1", "1; DROP TABLE calls; --", '" OR ""="',
    "') UNION SELECT secret_hash, 1, 1 FROM api_keys --", "%", "_",
    "' || (SELECT pg_sleep(3)) || '", "x' AND 1=(SELECT count(*) FROM sqlite_master) --",
]


def table_counts(db: Database) -> dict[str, int]:
    with db.read() as conn:
        return {table.name: int(conn.execute(select(func.count()).select_from(table))
                                .scalar_one()) for table in metadata.sorted_tables}


def query_parameters(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(path, parameter) for every query parameter of every GET under /api/v1."""
    found = [(path, parameter["name"]) for path, operations in document["paths"].items()
             if path.startswith("/api/v1/") and "get" in operations
             and "{" not in path
             for parameter in operations["get"].get("parameters", [])
             if parameter["in"] == "query"]
    assert len(found) >= 40, found
    return found


def test_injection_strings_in_every_filter_do_nothing(db: Database) -> None:
    seeded = seed(db)
    tables = sorted(inspect(db.engine).get_table_names())
    with app_client(db) as client:
        before = table_counts(db)  # once started: it notes which admin token is in effect
        for path, name in query_parameters(client.app.openapi()):  # type: ignore[attr-defined]
            for payload in PAYLOADS:
                started = time.monotonic()
                answer = client.get(path, params={name: payload}, headers=bearer(ADMIN))
                assert answer.status_code < 500, (path, name, payload, answer.text)
                assert time.monotonic() - started < 2.5, (path, name, payload)  # no sleep
                if answer.status_code == 200 and name in ("model", "api_key_id"):
                    # A filter value is a value: it matches no model or key of that name.
                    body = answer.text
                    assert seeded.alpha_id not in body or path.endswith(
                        ("/dimensions", "/pricing")), (path, name, payload)
        for payload in PAYLOADS:
            for path in (f"/api/v1/keys/{payload}", f"/api/v1/keys/{payload}/rotate"):
                method = "GET" if not path.endswith("rotate") else "POST"
                answer = client.request(method, path, headers=bearer(ADMIN))
                assert answer.status_code in (404, 405), (path, answer.text)
        summary = client.get("/api/v1/usage/summary", headers=bearer(ADMIN),
                             params={"model": "' OR '1'='1", "period": "7d"}).json()
        assert summary["cards"]["model_calls"] is None  # nothing matched, not everything
    assert table_counts(db) == before
    assert sorted(inspect(db.engine).get_table_names()) == tables
