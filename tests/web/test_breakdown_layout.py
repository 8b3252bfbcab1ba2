"""The breakdown table on a 1 440 × 900 screen: every column can be reached, and the way to
reach them shows, even where the platform draws overlay scrollbars (macOS) that hide until
scrolled."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.web.conftest import CHROMIUM, CHROMIUM_ARGS, ZONE, Site, sign_in

SCREEN = {"width": 1440, "height": 900}


@pytest.fixture
def overlay_page(browser: Any, site: Site) -> Iterator[Any]:
    """A page in a Chromium that draws scrollbars as macOS does: over the content, hidden
    until scrolled. Chromium does so when it emulates a mobile device (``is_mobile``; the
    screen stays 1 440 px wide). Playwright's headless default hides every scrollbar, so it
    is turned off: the screenshot shows what a user sees."""
    chromium = browser.browser_type.launch(
        executable_path=str(CHROMIUM), ignore_default_args=["--hide-scrollbars"],
        args=CHROMIUM_ARGS)
    context = chromium.new_context(viewport=SCREEN, is_mobile=True, timezone_id=ZONE,
                                   locale="en-US")
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
    finally:
        context.close()
        chromium.close()


GEOMETRY = """() => {
  const box = document.querySelector('#breakdown .table-wrap');
  const last = document.querySelector('#breakdown-table thead th:last-child');
  const cost = document.querySelector('#breakdown-table thead th[data-col=cost]');
  const style = getComputedStyle(box);
  const borders = parseFloat(style.borderTopWidth) + parseFloat(style.borderBottomWidth);
  const rect = box.getBoundingClientRect();
  return {
    overflowX: style.overflowX,
    scrollWidth: box.scrollWidth, clientWidth: box.clientWidth,
    // The height the horizontal scrollbar takes: 0 when it is drawn over the content.
    scrollbar: box.offsetHeight - box.clientHeight - borders,
    boxBottom: rect.bottom, boxRight: rect.right, viewport: innerHeight,
    lastRight: last.getBoundingClientRect().right,
    costRight: cost.getBoundingClientRect().right,
  };
}"""


def test_the_breakdown_shows_its_scrollbar_and_reaches_its_last_column(
        overlay_page: Any, site: Site, tmp_path: Path) -> None:
    page = overlay_page
    # Two groups: the most columns, and a row per key and model (a tall table).
    sign_in(page, site, path="/?group_by=api_key,model")
    page.wait_for_selector("#breakdown .table-wrap[data-state=ready]")
    assert page.locator("#breakdown-table tbody tr").count() > 15
    assert page.evaluate("() => [innerWidth, innerHeight]") == [1440, 900]
    page.evaluate("() => document.querySelector('#breakdown').scrollIntoView()")
    before = page.evaluate(GEOMETRY)

    # Too wide for the screen, so it scrolls sideways ...
    assert before["scrollWidth"] > before["clientWidth"]
    assert before["overflowX"] in ("auto", "scroll")
    assert before["lastRight"] > before["boxRight"]
    # ... with a scrollbar drawn before anyone scrolls, and on screen with the table's top.
    assert before["scrollbar"] >= 8, before
    assert before["boxBottom"] <= before["viewport"], before

    # Scrolled to the end, the last column and Cost are inside the visible box.
    page.evaluate("() => { const b = document.querySelector('#breakdown .table-wrap'); "
                  "b.scrollLeft = b.scrollWidth; }")
    after = page.evaluate(GEOMETRY)
    assert after["lastRight"] <= after["boxRight"] + 1, after
    assert after["costRight"] <= after["boxRight"] + 1, after
    page.screenshot(path=str(tmp_path / "breakdown-1440.png"))
