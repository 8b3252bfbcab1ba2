"""A fake provider account over real HTTP, and a ledger and report that agree."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tallygate.domain.records import CallRecord
from tallygate.fake_upstream.provider_reports import FakeProviderReports
from tallygate.ledger.service import Ledger
from tests.api.support import record
from tests.servers import serve_app

ADMIN_KEY = "sk-admin-never-shown-0123456789"
KEY_ENV = "TALLYGATE_TEST_PROVIDER_ADMIN_KEY"


@contextmanager
def provider_account() -> Iterator[tuple[FakeProviderReports, str]]:
    """The fake account, served on 127.0.0.1: (its state, base URL with /v1)."""
    fake = FakeProviderReports(admin_key=ADMIN_KEY, page_size=2)
    with serve_app(fake, lifespan="off") as url:
        yield fake, url + "/v1"


def provider_settings(base_url: str, kind: str = "openai") -> dict[str, Any]:
    return {"providers": [{"name": "main", "kind": kind, "base_url": base_url,
                           "admin_key_env": KEY_ENV}],
            "routes": [{"model": "gpt-4o", "base_url": "http://u.test/v1",
                        "provider": "main"}]}


def faithful_days(ledger: Ledger, fake: FakeProviderReports, kind: str = "openai",
                  days: int = 3) -> list[date]:
    """Calls on each of the ``days`` UTC days before today, billed exactly as recorded."""
    today = datetime.now(UTC).date()
    seeded = []
    records: list[CallRecord] = []
    for back in range(1, days + 1):
        day = today - timedelta(days=back)
        seeded.append(day)
        ts = datetime(day.year, day.month, day.day, 10, tzinfo=UTC)
        records.append(record(f"p{back}", ts, model="gpt-4o", input_tokens=1000 + back,
                              cached=300, output_tokens=70, cost_nano=4_500_000,
                              upstream_model="gpt-4o-2024-08-06"))
        fake.add_call(kind, day, "gpt-4o-2024-08-06", input_tokens=1000 + back,
                      cached_input_tokens=300, output_tokens=70, cost=Decimal("0.0045"))
    ledger.store(records)
    return seeded
