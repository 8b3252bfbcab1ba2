"""The API Key Management page in Chromium, against the gateway on the same server."""

from __future__ import annotations

from typing import Any

import httpx

from tests.web.conftest import CHAT, Site, sign_in, wait_until_ready


def _chat(site: Site, secret: str) -> httpx.Response:
    return httpx.post(f"{site.url}/v1/chat/completions", timeout=30,
                      headers={"Authorization": f"Bearer {secret}"},
                      json={"model": CHAT, "messages": [{"role": "user", "content": "hi"}]})


def _row(page: Any, name: str) -> Any:
    return page.locator("#keys-table tbody tr", has=page.locator("th div", has_text=name))


def _keys_page(context: Any, site: Site) -> Any:
    page = context.new_page()
    sign_in(page, site, path="/keys")
    return page


def _create(page: Any, name: str, **fields: str) -> str:
    page.click("#create-key")
    page.fill("#key-form [name=name]", name)
    for field, value in fields.items():
        page.fill(f"#key-form [name={field}]", value)
    page.click("#key-form-save")
    page.wait_for_selector("#secret-dialog[open]")
    secret: str = page.input_value("#secret-value")
    assert "won't see it again" in page.inner_text("#secret-dialog")
    page.click("#secret-done")
    return secret


def test_a_new_key_shows_its_secret_once_and_disabling_it_refuses_calls(
        context: Any, site: Site) -> None:
    page = _keys_page(context, site)
    secret = _create(page, "web-created", rpm_limit="50", owner="qa")
    assert secret.startswith("tg-")
    assert page.input_value("#secret-value") == ""  # gone with its dialog
    row = _row(page, "web-created")
    assert "RPM 50" in row.inner_text() and "active" in row.inner_text()
    assert _chat(site, secret).status_code == 200

    page.reload()
    wait_until_ready(page)
    assert not page.is_visible("#secret-dialog")
    assert secret not in page.content()
    assert secret[:12] not in page.content()  # the list shows a shorter prefix only

    row.get_by_role("button", name="Disable").click()
    assert "Disable key web-created?" in page.inner_text("#confirm-dialog")
    page.click("#confirm-yes")
    page.wait_for_selector("#keys-table tr[data-status=disabled]")
    refused = _chat(site, secret)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "key_disabled"

    row.get_by_role("button", name="Enable").click()
    page.wait_for_function(
        "() => !document.querySelector('#keys-table tr[data-status=disabled]')")
    assert _chat(site, secret).status_code == 200


def test_edit_rotate_and_delete(context: Any, site: Site) -> None:
    page = _keys_page(context, site)
    old = _create(page, "web-lifecycle", tpm_limit="1000")
    key_id = _row(page, "web-lifecycle").get_attribute("data-key-id")

    _row(page, "web-lifecycle").get_by_role("button", name="Edit").click()
    assert page.input_value("#key-form [name=tpm_limit]") == "1000"
    page.fill("#key-form [name=tpm_limit]", "")
    page.fill("#key-form [name=rpm_limit]", "7")
    page.fill("#key-form [name=budget]", "12.5")
    page.select_option("#key-form [name=quota_period]", "monthly")
    page.click("#key-form-save")
    page.wait_for_selector("#key-dialog", state="hidden")
    stored = site.get(f"/api/v1/keys/{key_id}")
    assert (stored["rpm_limit"], stored["tpm_limit"]) == (7, None)
    assert stored["quota_period"] == "monthly" and stored["budget"].startswith("12.5")
    page.wait_for_function(
        "() => document.querySelector('#keys-table').innerText.includes('RPM 7')")
    assert "$12.50" in _row(page, "web-lifecycle").inner_text()

    _row(page, "web-lifecycle").get_by_role("button", name="Rotate").click()
    page.click("#confirm-yes")
    page.wait_for_selector("#secret-dialog[open]")
    new = page.input_value("#secret-value")
    page.click("#secret-done")
    assert new != old
    assert _chat(site, old).status_code == 401
    assert _chat(site, new).status_code == 200

    _row(page, "web-lifecycle").get_by_role("button", name="Delete").click()
    assert "usage stays" in page.inner_text("#confirm-dialog")
    page.click("#confirm-yes")
    page.wait_for_function("(id) => !document.querySelector(`#keys-table tr[data-key-id='${id}']`)",
                           arg=key_id)
    assert site.api.get(f"/api/v1/keys/{key_id}").status_code == 404


def test_an_api_error_stays_in_the_form(context: Any, site: Site) -> None:
    page = _keys_page(context, site)
    page.click("#create-key")
    page.fill("#key-form [name=name]", "bad-ip")
    page.fill("#key-form [name=allowed_ips]", "not-an-address")
    page.click("#key-form-save")
    page.wait_for_selector("#key-form-error:not([hidden])")
    assert "not an IP address" in page.inner_text("#key-form-error")
    assert page.is_visible("#key-dialog")


def test_keys_near_expiry_are_highlighted_and_link_to_their_usage(context: Any,
                                                                  site: Site) -> None:
    page = _keys_page(context, site)
    soon = _row(page, "beta-labs")  # the demo key that expires in 5 days
    assert "soon" in (soon.get_attribute("class") or "")
    assert "in 5 days" in soon.inner_text()
    assert "soon" not in (_row(page, "acme-prod").get_attribute("class") or "")

    acme = site.get(f"/api/v1/keys/{site.seed.key_ids['acme-prod']}")
    if "usage" in acme:  # the API's live figures for the current period, as they are
        used = f"{acme['usage']['tokens']:,} / {acme['quota_tokens']:,} tokens"
        assert used in _row(page, "acme-prod").inner_text()
        assert page.is_hidden("#usage-note")
    else:  # an API without them: the page says so rather than working them out itself
        assert page.is_visible("#usage-note")

    key_id = site.seed.key_ids["beta-labs"]
    soon.get_by_role("link", name="Usage").click()
    page.wait_for_url(f"{site.url}/?api_key_id={key_id}")
    wait_until_ready(page)
    assert page.inner_text("#key-select summary") == "beta-labs"


def test_every_action_is_in_view_on_a_laptop_screen(context: Any, site: Site) -> None:
    page = _keys_page(context, site)
    _create(page, "a-key-with-a-rather-long-name", owner="platform engineering",
            quota_tokens="400000000")
    for width in (1400, 1100):
        page.set_viewport_size({"width": width, "height": 800})
        box = page.locator("#keys-table").locator("..")
        assert box.evaluate("e => e.scrollWidth <= e.clientWidth"), width
        for button in page.locator("#keys-table tbody button", has_text="Delete").all():
            right = button.evaluate("e => e.getBoundingClientRect().right")
            assert right <= width, (width, right)


def test_max_concurrency_is_set_and_cleared_in_the_form(context: Any, site: Site) -> None:
    page = _keys_page(context, site)
    _create(page, "web-concurrency", max_concurrency="4")
    row = _row(page, "web-concurrency")
    key_id = row.get_attribute("data-key-id")
    assert site.get(f"/api/v1/keys/{key_id}")["max_concurrency"] == 4
    assert "Concurrent 4" in row.inner_text()

    row.get_by_role("button", name="Edit").click()
    assert page.input_value("#key-form [name=max_concurrency]") == "4"
    page.fill("#key-form [name=max_concurrency]", "")
    page.click("#key-form-save")
    page.wait_for_selector("#key-dialog", state="hidden")
    assert site.get(f"/api/v1/keys/{key_id}")["max_concurrency"] is None
