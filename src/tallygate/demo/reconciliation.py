"""The demo's provider account: Anthropic's usage and cost reports for the Claude route,
derived from what was seeded, with one planted discrepancy, so the page shows a
reconciliation at once.

The fake upstream serves the reports (fake_upstream/provider_reports.py). They bill exactly
what the ledger recorded, except on one day, ``PLANTED_DAYS_AGO`` days before today, where the
provider billed the cache reads as uncached input at the full input price: the kind of
difference reconciliation is there to find.
"""

from __future__ import annotations

import secrets
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from tallygate.demo.routes import CLAUDE, ROUTES_BY_MODEL
from tallygate.domain.money import NANO
from tallygate.fake_upstream.provider_reports import FakeProviderReports
from tallygate.ledger.reconcile import ledger_days
from tallygate.ledger.service import Ledger

PROVIDER = "anthropic-demo"
KEY_ENV = "TALLYGATE_DEMO_ANTHROPIC_ADMIN_KEY"
PLANTED_DAYS_AGO = 3


def demo_provider(base_url: str) -> dict[str, Any]:
    """The ``[[providers]]`` entry of the demo's account (served by the fake upstream)."""
    return {"name": PROVIDER, "kind": "anthropic", "base_url": base_url,
            "admin_key_env": KEY_ENV}


def new_admin_key() -> str:
    return "sk-ant-admin-demo-" + secrets.token_urlsafe(18)


def bill_the_seeded_calls(ledger: Ledger, reports: FakeProviderReports, days: int,
                          today: date | None = None) -> date:
    """Fill ``reports`` with the Claude route's seeded calls of the ``days`` UTC days before
    today; returns the day whose cache reads are billed as uncached input."""
    end = today or datetime.now(UTC).date()
    start = end - timedelta(days=days)
    route = ROUTES_BY_MODEL[CLAUDE]
    upstream = route.upstream_model or route.model
    planted = end - timedelta(days=PLANTED_DAYS_AGO)
    full_price = route.input_per_million - (route.cached_input_per_million or Decimal(0))
    for (day, model), sums in sorted(ledger_days(ledger, {CLAUDE: upstream}, start,
                                                 end).items()):
        figures = sums.figures
        cached = figures["cached_input_tokens"]
        cost = Decimal(figures["cost"]) / NANO
        if day == planted:
            cost += cached * full_price / 1_000_000
            cached = 0
        reports.add_figures(
            "anthropic", day, model, requests=figures["requests"],
            input_tokens=figures["input_tokens"], cached_input_tokens=cached,
            cache_write_tokens=figures["cache_write_tokens"],
            output_tokens=figures["output_tokens"], cost=cost)
    return planted


def with_the_demo_provider(routes: list[Any], base_url: str) -> dict[str, Any]:
    """Settings for the demo: its routes, Claude's billed by the demo's provider account."""
    return {"providers": [demo_provider(base_url)],
            "routes": [r.model_copy(update={"provider": PROVIDER}) if r.model == CLAUDE else r
                       for r in routes]}
