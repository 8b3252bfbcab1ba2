"""Signing in and out of the pages, as the admin and as a key holder."""

from __future__ import annotations

from typing import Any

from tests.web.conftest import ADMIN, ZONE, Site, sign_in, wait_until_ready
from tests.web.test_usage_page import assert_cards_match


def test_sign_in_and_sign_out(context: Any, site: Site) -> None:
    page = context.new_page()
    page.goto(site.url + "/")
    assert page.url.startswith(f"{site.url}/login")

    page.fill("#token", "not-a-token")
    with page.expect_response(f"{site.url}/login") as answer:
        page.click("button[type=submit]")
    assert answer.value.status == 401
    assert "not valid" in page.inner_text("[role=alert]")

    page.fill("#token", ADMIN)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site.url}/")
    wait_until_ready(page)
    assert page.is_visible("a[href='/keys']")
    cookie = next(c for c in context.cookies() if c["name"] == "tallygate_session")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict"

    page.click("#sign-out")
    page.wait_for_url(f"{site.url}/login")
    page.goto(site.url + "/")
    assert page.url.startswith(f"{site.url}/login")


def test_a_key_holder_sees_only_its_own_usage(context: Any, site: Site) -> None:
    secret = site.seed.secrets["research-team"]
    key_id = site.seed.key_ids["research-team"]
    page = context.new_page()
    sign_in(page, site, token=secret)
    assert not page.is_visible("#key-field")
    assert page.locator("a[href='/keys']").count() == 0
    assert "research-team" in page.inner_text("#who")

    own = site.summary({"tz": ZONE, "period": "7d"}, token=secret)
    everyone = site.summary({"tz": ZONE, "period": "7d"})
    assert own["cards"] == site.summary({"tz": ZONE, "period": "7d",
                                         "api_key_id": key_id})["cards"]
    assert own["cards"]["model_calls"] < everyone["cards"]["model_calls"]
    assert_cards_match(page, own)

    page.select_option("#group1", "api_key")
    wait_until_ready(page)
    names = page.eval_on_selector_all("#breakdown-table tbody th",
                                      "els => els.map(e => e.textContent)")
    assert names == ["research-team"]
    keys = page.eval_on_selector_all("#calls-table tbody td:nth-child(2)",
                                     "els => new Set(els.map(e => e.textContent)).size")
    assert keys == 1

    page.goto(site.url + "/keys")
    assert page.url == f"{site.url}/"
