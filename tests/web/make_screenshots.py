"""Write the pages' screenshots in docs/images from a fresh demo ledger (60 days):

    .venv/bin/python -m tests.web.make_screenshots

The usage and key pages at 1440×1000, and the whole usage page at 390 px wide (a phone).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

from tallygate.app import create_app
from tallygate.config import load_settings
from tallygate.demo.routes import gateway_routes
from tallygate.demo.seed import seed_demo
from tallygate.keys.service import KeyService
from tallygate.ledger.service import Ledger
from tallygate.store.database import Database
from tests.servers import serve_app
from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, DESKTOP, ZONE, Site, sign_in

IMAGES = Path(__file__).resolve().parents[2] / "docs" / "images"
ADMIN = "tga-screenshots-admin"
PHONE = {"width": 390, "height": 844}


def _shoot(browser: Any, site: Site, path: str, viewport: dict[str, int], name: str) -> None:
    context = browser.new_context(viewport=viewport, timezone_id=ZONE, locale="en-US")
    page = context.new_page()
    sign_in(page, site, token=ADMIN, path=path)
    page.wait_for_timeout(800)  # the chart's entry animation
    page.screenshot(path=str(IMAGES / name), full_page=viewport == PHONE)
    context.close()


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite:///{tmp}/demo.db"
        db = Database(url)
        db.upgrade()
        seed = seed_demo(Ledger(db), KeyService(db), now_us=int(time.time() * 1_000_000))
        db.dispose()
        settings = load_settings(database_url=url, admin_token=ADMIN,
                                 routes=gateway_routes("http://127.0.0.1:9/v1"))
        with serve_app(create_app(settings)) as base, sync_playwright() as playwright:
            site = Site(base, seed, api=None)  # type: ignore[arg-type]
            browser = playwright.chromium.launch(executable_path=str(CHROMIUM),
                                                 args=CHROMIUM_ARGS)
            _shoot(browser, site, "/", DESKTOP, "usage-page.png")
            _shoot(browser, site, "/keys", DESKTOP, "keys-page.png")
            _shoot(browser, site, "/", PHONE, "usage-mobile.png")
            browser.close()


if __name__ == "__main__":
    main()
