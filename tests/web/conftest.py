"""The pages in a real browser: Chromium driven by Playwright, against a real server on a
seeded demo ledger, with a route to tallygate's fake upstream.

Chromium is found at ``/usr/bin/chromium``; without it the tests skip with the reason shown,
and with ``CI=true`` they fail instead. One seeded database and server serve a whole module.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tallygate.app import create_app
from tallygate.config import Route, load_settings
from tallygate.demo.seed import DemoSeed, seed_demo
from tallygate.fake_upstream import FakeSettings, FakeUpstream
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tests.servers import serve_app

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ADMIN = "tga-web-test-admin"
ZONE = "Asia/Shanghai"  # the browser's zone in every test, so the page's default is known
CHAT = "cltech/deepseek-r1-32b"
DESKTOP = {"width": 1440, "height": 1000}
IN_CI = os.environ.get("CI", "").lower() == "true"

# Every CSP violation the page reports, kept where the test can read it.
WATCH_CSP = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI}`);
});
"""


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if IN_CI:
            pytest.fail(f"Chromium is required in CI: {CHROMIUM} is missing")
        pytest.skip(f"Chromium not available: {CHROMIUM} is missing")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@dataclass
class Site:
    """A running server on a seeded demo ledger, and the API as the admin sees it."""

    url: str
    seed: DemoSeed
    api: httpx.Client
    requests: list[str] = field(default_factory=list)

    def get(self, path: str, params: Any = None, token: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {token}"} if token else None
        response = self.api.get(path, params=params, headers=headers)
        assert response.status_code == 200, response.text
        return response.json() if "json" in response.headers["content-type"] else response

    def summary(self, params: Any, token: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self.get("/api/v1/usage/summary", params, token)
        return result


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    path = tmp_path_factory.mktemp("web") / "ledger.db"
    db = Database(f"sqlite:///{path}")
    db.upgrade()
    seed = seed_demo(Ledger(db), KeyService(db), now_us=int(time.time() * 1_000_000), days=12)
    db.dispose()
    with serve_app(FakeUpstream(FakeSettings(chunks=2))) as upstream:
        settings = load_settings(database_url=f"sqlite:///{path}", admin_token=ADMIN,
                                 routes=[Route(model=CHAT, base_url=f"{upstream}/v1",
                                               category="chat")])
        with serve_app(create_app(settings)) as url, httpx.Client(
                base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30) as api:
            yield Site(url, seed, api)


def sign_in(page: Any, site: Site, token: str = ADMIN, path: str = "/") -> None:
    page.goto(f"{site.url}/login?next={path}")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}{path}*")
    wait_until_ready(page)


def wait_until_ready(page: Any) -> None:
    """The page has loaded its figures (and nothing is loading any more)."""
    page.wait_for_selector("body[data-ready=true]")
    # A function, not an expression: Playwright evaluates an expression with eval, which the
    # page's CSP refuses.
    page.wait_for_function("() => !document.querySelector('[data-state=loading]')")


@pytest.fixture
def context(browser: Any, site: Site) -> Iterator[Any]:
    """A fresh browser profile (no cookies), in Shanghai's time zone, that records every
    request it makes."""
    ctx = browser.new_context(viewport=DESKTOP, timezone_id=ZONE, locale="en-US",
                              accept_downloads=True)
    ctx.set_default_timeout(10_000)
    ctx.add_init_script(WATCH_CSP)
    site.requests = []
    ctx.on("request", lambda request: site.requests.append(request.url))
    # The summaries the pages were answered, newest last (test_usage_page.assert_cards_match).
    ctx.summaries = []
    ctx.on("response", lambda response: ctx.summaries.append(response)
           if urlsplit(response.url).path == "/api/v1/usage/summary" else None)
    yield ctx
    ctx.close()


@pytest.fixture
def page(context: Any, site: Site) -> Any:
    """A page signed in as the admin, on the usage page."""
    page = context.new_page()
    sign_in(page, site)
    return page


def query_of(page: Any) -> dict[str, list[str]]:
    return parse_qs(urlsplit(page.url).query)
