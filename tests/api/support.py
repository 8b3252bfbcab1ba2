"""Helpers for tests that drive the real app (and the CLI tests that compare with it)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi.testclient import TestClient

from tallygate.app import create_app
from tallygate.config import Settings, load_settings
from tallygate.domain.records import CallRecord
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database

ADMIN_TOKEN = "tga-test-admin-token"
US = 1_000_000
MODELS = ("cltech/deepseek-r1-32b", "deepseek-r1-distill-llama-70b", "bge-m3")


def forget_tallygate_environment(monkeypatch: Any) -> None:
    """Settings only from the test: none from the TALLYGATE_* of the machine running it."""
    for name in list(os.environ):
        if name.startswith("TALLYGATE_") and not name.startswith("TALLYGATE_TEST_"):
            monkeypatch.delenv(name)


def settings_for(db: Database, **flags: Any) -> Settings:
    """Settings for an app on ``db``: its SQLAlchemy URL is accepted as it is."""
    return load_settings(database_url=db.url, admin_token=ADMIN_TOKEN, **flags)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@dataclass
class Api:
    """A running app (lifespan entered) and a ledger on the same database for seeding."""

    client: TestClient
    db: Database
    ledger: Ledger

    def get(self, path: str, params: Any = None, token: str | None = ADMIN_TOKEN,
            ) -> Any:
        headers = {} if token is None else bearer(token)
        return self.client.get(path, params=params, headers=headers)

    def ok(self, path: str, params: Any = None, token: str = ADMIN_TOKEN) -> Any:
        response = self.get(path, params, token)
        assert response.status_code == 200, response.text
        return response.json()

    def post_events(self, events: Any, token: str = ADMIN_TOKEN) -> Any:
        return self.client.post("/api/v1/usage/events", json={"events": events},
                                headers=bearer(token))

    def create_key(self, **fields: Any) -> dict[str, Any]:
        body = {"name": "a key", **fields}
        response = self.client.post("/api/v1/keys", json=body, headers=bearer(ADMIN_TOKEN))
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created


@contextmanager
def running_app(db: Database, *, client_address: str = "testclient",
                **flags: Any) -> Iterator[Api]:
    """The app on ``db``; its test client calls from ``client_address``."""
    with TestClient(create_app(settings_for(db, **flags)),
                    client=(client_address, 50000)) as client:
        yield Api(client, db, Ledger(db))


def record(call_id: str, ts: datetime, *, key: str | None = None, model: str = MODELS[0],
           call_type: str = "model", category: str = "chat", status: int = 200,
           input_tokens: int = 100, output_tokens: int = 50, cached: int = 0,
           reasoning: int = 0, cost_nano: int = 0, latency_ms: int | None = 120,
           metadata: dict[str, Any] | None = None, cache_write: int = 0, units: int = 0,
           unit: str | None = None, upstream_model: str | None = None) -> CallRecord:
    return CallRecord(
        id=call_id, ts_us=int(ts.timestamp()) * US + ts.microsecond, model=model,
        call_type=call_type, api_key_id=key, model_category=category,
        endpoint="/v1/chat/completions", status_code=status, input_tokens=input_tokens,
        output_tokens=output_tokens, cached_input_tokens=cached, reasoning_tokens=reasoning,
        total_tokens=input_tokens + output_tokens, cost_nano=cost_nano, latency_ms=latency_ms,
        metadata=metadata, cache_write_tokens=cache_write, units=units, unit=unit,
        upstream_model=upstream_model,
    )


def recent_window(now: datetime) -> dict[str, str]:
    """Whole UTC days from two days ago to tomorrow: holds every record ``varied_records``
    makes, and starts after the minute-rollup floor so peak figures are deterministic."""
    today = now.astimezone(UTC).date()
    return {"start": (today - timedelta(days=2)).isoformat(),
            "end": (today + timedelta(days=1)).isoformat()}


def varied_records(now: datetime, keys: tuple[str | None, ...] = ("key-a", "key-b", None),
                   count: int = 60, prefix: str = "r") -> list[CallRecord]:
    """``count`` records over the last ~40 hours: every key, model, call type, category and
    status class, with costs, cached and reasoning tokens, several per minute at times."""
    types = ("model", "service", "internal")
    categories = ("chat", "completion", "embedding")
    statuses = (200, 200, 200, 500, 429, 200, 400)
    out = []
    for i in range(count):
        # Three records a minute, groups spread over 40 hours.
        ts = now - timedelta(minutes=1 + (i // 3) * (2400 // (count // 3 + 1)),
                             seconds=i % 3 * 2, microseconds=i * 137)
        out.append(record(
            f"{prefix}-{i:04d}", ts, key=keys[i % len(keys)], model=MODELS[i % 3],
            call_type=types[(i // 3) % 3], category=categories[(i // 2) % 3],
            status=statuses[i % len(statuses)], input_tokens=100 + i * 7,
            output_tokens=20 + i * 3, cached=i % 50, reasoning=i % 20,
            cost_nano=1_234_567 * (i + 1), latency_ms=None if i % 5 == 0 else 50 + i,
            metadata={"team": "search"} if i % 4 == 0 else None, cache_write=i % 7,
            unit=("image", None, "second", None, None)[i % 5],
            units=i + 1 if i % 5 in (0, 2) else 0,
            upstream_model=f"{MODELS[i % 3]}-2026" if i % 4 else None))
    return out
