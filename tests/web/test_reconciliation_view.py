"""The Reconciliation view of the usage page in Chromium, on the demo's provider account:
the last run (none yet, then one run from the page), the planted difference with both figures,
its link to the calls of that day and model, both languages."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import date
from typing import Any

import httpx
import pytest

from tallygate.app import create_app
from tallygate.config import load_settings
from tallygate.demo import reconciliation as demo_account
from tallygate.demo.routes import CLAUDE, gateway_routes
from tallygate.demo.seed import seed_demo
from tallygate.fake_upstream import FakeSettings, FakeUpstream
from tallygate.fake_upstream.provider_reports import FakeProviderReports
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tests.servers import serve_app
from tests.web.conftest import ADMIN, Site, sign_in, wait_until_ready


@pytest.fixture(scope="module")
def account(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, date]]:
    """The site, whose Claude route is billed by the demo's account; and the planted day."""
    path = tmp_path_factory.mktemp("web-rec") / "ledger.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    seeded = seed_demo(Ledger(db), KeyService(db), now_us=int(time.time() * 1_000_000), days=12)
    reports = FakeProviderReports(admin_key=demo_account.new_admin_key())
    planted = demo_account.bill_the_seeded_calls(Ledger(db), reports, 12)
    db.dispose()
    with pytest.MonkeyPatch.context() as env, serve_app(
            FakeUpstream(FakeSettings(chunks=2), reports)) as upstream:
        env.setenv(demo_account.KEY_ENV, reports.admin_key)
        settings = load_settings(database_url=f"sqlite:///{path}", admin_token=ADMIN,
                                 **demo_account.with_the_demo_provider(
                                     gateway_routes(f"{upstream}/v1"), f"{upstream}/v1"))
        with serve_app(create_app(settings)) as url, httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as api:
            yield Site(url, seeded, api), planted


@pytest.fixture(scope="module")
def site(account: tuple[Site, date]) -> Site:
    return account[0]


def test_run_from_the_page_shows_the_planted_difference_and_links_to_its_calls(
        context: Any, account: tuple[Site, date]) -> None:
    web, planted = account
    page = context.new_page()
    sign_in(page, web)
    panel = page.locator("#reconciliation")
    assert panel.is_visible() and page.inner_text("#reconciliation h2") == "Reconciliation"
    provider = panel.locator(f"[data-provider={demo_account.PROVIDER}]")
    assert provider.locator(".rec-summary").inner_text() == "Not reconciled yet."

    provider.locator("button[data-run]").click()
    page.wait_for_selector("#reconciliation tr[data-status=mismatch]")
    summary = provider.locator(".rec-summary").inner_text()
    assert "1 mismatch" in summary and "match" in summary
    rows = page.locator("#reconciliation tbody tr")
    assert rows.count() == 1  # only the difference; the matching days are hidden
    row = rows.first
    assert row.get_attribute("data-day") == planted.isoformat()
    cached = row.locator("td[data-measure=cached_input_tokens]")
    assert "rec-mismatch" in (cached.get_attribute("class") or "")
    assert cached.inner_text().startswith("0 / ") and "(−" in cached.inner_text()
    assert "rec-match" in (row.locator("td[data-measure=input_tokens]")
                           .get_attribute("class") or "")

    page.check("#rec-all")
    assert page.locator("#reconciliation tbody tr").count() > 1
    page.uncheck("#rec-all")

    # In Chinese, then back.
    page.click("#lang-switch")
    page.wait_for_function("() => document.querySelector('#reconciliation h2')"
                           ".textContent === '对账'")
    assert "不一致" in page.inner_text("#reconciliation tbody tr")
    page.click("#lang-switch")
    page.wait_for_function("() => document.querySelector('#reconciliation h2')"
                           ".textContent === 'Reconciliation'")

    # The row's calls: that UTC day, that model.
    page.locator("#reconciliation tbody tr a").first.click()
    page.wait_for_url("**/?*#calls")
    wait_until_ready(page)
    assert f"start={planted.isoformat()}" in page.url and "tz=UTC" in page.url
    models = page.eval_on_selector_all("#calls-table tbody tr td:nth-child(3)",
                                       "els => els.map(e => e.textContent)")
    assert models and set(models) == {CLAUDE}
    assert page.evaluate("() => window.__cspViolations") == []


def test_the_page_shows_the_last_stored_run(context: Any,
                                            account: tuple[Site, date]) -> None:
    web, planted = account
    result = web.get("/api/v1/reconciliation",
                     {"provider": demo_account.PROVIDER, "period": "5d"})
    assert result["status"] == "mismatch"
    page = context.new_page()
    sign_in(page, web)
    page.wait_for_selector("#reconciliation tr[data-status=mismatch]")
    assert "(exclusive)" in page.inner_text("#reconciliation .rec-summary")
    assert page.locator("#reconciliation tbody tr").first.get_attribute("data-day") == \
        planted.isoformat()
