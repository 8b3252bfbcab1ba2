"""A record of several calls (refusals the gateway aggregated) shows how many on the page."""

from __future__ import annotations

import time
from typing import Any

from tests.web.conftest import CHAT, Site, wait_until_ready


def test_a_record_of_several_refusals_shows_its_multiplicity(page: Any, site: Site) -> None:
    answer = site.api.post("/api/v1/usage/events", json={"events": [
        {"id": "aggregated-refusals", "ts": time.time() - 1, "model": CHAT,
         "endpoint": "/v1/chat/completions", "status_code": 403, "repeats": 490}]})
    assert answer.json()["accepted"] == 1, answer.text
    page.reload()
    wait_until_ready(page)
    row = page.locator("#calls-table tbody tr[data-id='aggregated-refusals']")
    status = row.locator("td").nth(5)
    assert status.inner_text() == "403 ×490"
    assert status.get_attribute("title") == (
        "490 calls recorded as one (refusals of a kind in one minute)")
