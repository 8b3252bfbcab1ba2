"""The Audit view of the keys page in Chromium: every key's changes and one key's, a page at a
time, in both languages, with its loading, empty and error states."""

from __future__ import annotations

from typing import Any

from tests.web.conftest import Site, sign_in, wait_until_ready
from tests.web.test_keys_page import _create, _row


def _audit_rows(page: Any) -> list[dict[str, str]]:
    rows: list[dict[str, str]] = page.eval_on_selector_all(
        "#audit-table tbody tr",
        "rows => rows.map(r => ({action: r.dataset.action, key: r.cells[3].textContent, "
        "details: r.cells[4].textContent, actor: r.cells[1].textContent}))")
    return rows


def test_creating_and_disabling_a_key_shows_in_its_audit_and_in_everyones(
        context: Any, site: Site) -> None:
    page = context.new_page()
    sign_in(page, site, path="/keys")
    assert page.inner_text("#audit h2") == "Audit log"
    _create(page, "audited-in-web")
    row = _row(page, "audited-in-web")
    row.get_by_role("button", name="Disable").click()
    page.click("#confirm-yes")
    page.wait_for_selector("#keys-table tr[data-status=disabled]")
    wait_until_ready(page)

    # Every key's changes, newest first: the disabling, then the creation.
    page.wait_for_function("() => document.querySelectorAll('#audit-table tbody tr').length > 2")
    everyone = _audit_rows(page)
    ours = [r for r in everyone if r["key"] == "audited-in-web"]
    assert [(r["action"], r["actor"]) for r in ours] == [("key.update", "admin"),
                                                        ("key.create", "admin")]
    assert "status=disabled" in ours[0]["details"]
    assert len(everyone) > len(ours)  # the demo's keys are there too
    assert page.is_hidden("#audit-reset")

    # The key's own Audit link: only its changes.
    row.get_by_role("link", name="Audit").click()
    page.wait_for_function("() => document.querySelector('#audit-scope').dataset.keyId !== ''")
    wait_until_ready(page)
    assert "audit_key=" in page.url
    assert page.inner_text("#audit-scope") == "Changes to key audited-in-web, newest first"
    own = _audit_rows(page)
    assert [(r["action"], r["key"]) for r in own] == [("key.update", "audited-in-web"),
                                                      ("key.create", "audited-in-web")]
    assert page.inner_text("#audit-count") == "all 2 shown"
    assert page.is_hidden("#audit-more")
    assert "key changed" in page.inner_text("#audit-table tbody tr:first-child")

    # A link to share: the same view after a reload.
    page.reload()
    wait_until_ready(page)
    assert [r["action"] for r in _audit_rows(page)] == ["key.update", "key.create"]

    # In Chinese.
    page.click("#lang-switch")
    page.wait_for_function(
        "() => document.querySelector('#audit-table tbody tr td:nth-child(3)')"
        "?.textContent === '修改密钥'")
    assert page.inner_text("#audit h2") == "审计日志"
    assert page.inner_text("#audit-scope") == "密钥 audited-in-web 的变更，最新的在前"
    assert "审计" in row.inner_text()
    page.click("#lang-switch")

    # Back to every key.
    page.click("#audit-reset")
    page.wait_for_function("() => document.querySelector('#audit-scope').dataset.keyId === ''")
    wait_until_ready(page)
    assert len(_audit_rows(page)) == len(everyone)
    assert page.evaluate("() => document.body.dataset.ready") == "true"
    assert page.evaluate("() => window.__cspViolations") == []


def test_more_pages_load_on_demand(context: Any, site: Site) -> None:
    key = site.api.post("/api/v1/keys", json={"name": "changed often"}).json()
    for limit in range(1, 61):
        response = site.api.patch(f"/api/v1/keys/{key['id']}", json={"rpm_limit": limit})
        assert response.status_code == 200, response.text
    page = context.new_page()
    sign_in(page, site, path=f"/keys?audit_key={key['id']}")
    assert len(_audit_rows(page)) == 50
    assert page.inner_text("#audit-count") == "50 shown"
    page.click("#audit-more")
    page.wait_for_function("() => document.querySelectorAll('#audit-table tbody tr').length > 50")
    wait_until_ready(page)
    rows = _audit_rows(page)
    assert len(rows) == 61 and rows[-1]["action"] == "key.create"
    assert rows[0]["details"] == "rpm_limit=60"
    assert len({r["details"] for r in rows}) == 61  # each change once
    assert page.is_hidden("#audit-more")
    assert page.inner_text("#audit-count") == "all 61 shown"


def test_empty_and_error_states_are_explicit(context: Any, site: Site) -> None:
    page = context.new_page()
    sign_in(page, site, path="/keys?audit_key=no-such-key")
    assert page.get_attribute("#audit .table-wrap", "data-state") == "empty"
    assert page.inner_text("#audit-state") == "No changes recorded for this key."
    assert page.inner_text("#audit-scope") == "Changes to key no-such-key, newest first"

    page.route("**/api/v1/audit*", lambda route: route.fulfill(
        status=500, content_type="application/json",
        body='{"error": {"message": "The ledger is unavailable", "type": "api_error", '
             '"code": null, "param": null}}'))
    page.click("#audit-reset")
    page.wait_for_selector("#audit .table-wrap[data-state=error]")
    assert "The ledger is unavailable" in page.inner_text("#audit-state")

    # While a page is on its way, the panel says so.
    page.unroute("**/api/v1/audit*")
    held: list[Any] = []
    page.route("**/api/v1/audit*", lambda route: held.append(route))
    page.reload()
    page.wait_for_selector("#audit .table-wrap[data-state=loading]")
    # The state's words follow its data-state in the same task or the next: wait for them.
    page.wait_for_function(
        "() => document.querySelector('#audit-state').textContent === 'Loading…'")
    for route in held:
        route.continue_()
