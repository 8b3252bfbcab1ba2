"""The Usage Statistics page in Chromium: its figures are the API's, its state is the URL's."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from tests.web.conftest import CHAT, ZONE, Site, query_of, wait_until_ready

CARDS = ("model_calls", "service_calls", "internal_calls", "total_tokens", "input_tokens",
         "output_tokens", "cost", "success_rate", "cache_hit_rate", "peak_rpm", "peak_tpm")
RATES = ("success_rate", "cache_hit_rate")

SHOWN_CARDS = """() => Object.fromEntries([...document.querySelectorAll("[data-card]")].map(
  (card) => [card.dataset.card, {
    value: card.dataset.value,
    text: card.querySelector(".value").textContent,
    nodata: card.querySelector(".value").classList.contains("nodata"),
    change: card.querySelector(".change").dataset.change ?? null,
    changeText: card.querySelector(".change").textContent,
  }]))"""
CHART_SERIES = """() => echarts.getInstanceByDom(document.getElementById("chart")).getOption()
  .series.map((s) => ({name: s.name, type: s.type, data: s.data}))"""
LEGEND_SELECTED = """(name) => echarts.getInstanceByDom(document.getElementById("chart"))
  .getOption().legend[0].selected[name] !== false"""
# The middle of the plot above a bucket, in page coordinates.
BUCKET_POINT = """(index) => {
  const chart = echarts.getInstanceByDom(document.getElementById("chart"));
  const x = chart.convertToPixel({xAxisIndex: 0}, index);
  const box = chart.getDom().getBoundingClientRect();
  return {x: box.left + x, y: box.top + box.height / 2};
}"""
# Where a legend item is drawn on the canvas, in page coordinates, for a real mouse click.
LEGEND_ITEM_CENTRE = """(name) => {
  const chart = echarts.getInstanceByDom(document.getElementById("chart"));
  const text = chart.getZr().storage.getDisplayList()
    .find((el) => el.style && el.style.text === name);
  const rect = text.getBoundingRect().clone();
  const transform = text.getComputedTransform();
  if (transform) rect.applyTransform(transform);
  const box = chart.getDom().getBoundingClientRect();
  return {x: box.left + rect.x + rect.width / 2, y: box.top + rect.y + rect.height / 2};
}"""


def _number(text: str) -> Decimal:
    match = re.search(r"[+\-−]?[\d,]+(\.\d+)?", text)
    assert match, text
    return Decimal(match.group(0).replace(",", "").replace("−", "-"))


def _money_shown(amount: str) -> Decimal:
    """How the page rounds a cost: cents from 1 up, six decimals below."""
    value = Decimal(amount)
    places = Decimal("0.01") if abs(value) >= 1 else Decimal("0.000001")
    return value.quantize(places, ROUND_HALF_UP)


def _percent(ratio: float, places: str) -> Decimal:
    return (Decimal(str(ratio)) * 100).quantize(Decimal(places), ROUND_HALF_UP)


def assert_cards_match(page: Any, summary: dict[str, Any]) -> None:
    """The cards show ``summary``'s figures, and the changes of the summary the page itself
    was answered: the previous period ends a period before *now*, so its count moves with
    the clock between the page's request and the test's (the current one cannot: no call
    is made after the seed)."""
    answers = page.context.summaries
    displayed = answers[-1].json() if answers else summary
    assert (displayed["start"], displayed["tz"]) == (summary["start"], summary["tz"])
    assert displayed["cards"] == summary["cards"]
    shown = page.evaluate(SHOWN_CARDS)
    for name in CARDS:
        expected, card = summary["cards"][name], shown[name]
        if expected is None:
            assert card["nodata"] and card["text"] == "No data", (name, card)
            continue
        assert not card["nodata"], name
        if name == "cost":
            assert card["value"] == expected["amount"]
            assert _number(card["text"]) == _money_shown(expected["amount"]), card
        elif name in RATES:
            assert float(card["value"]) == expected
            assert _number(card["text"]) == _percent(expected, "0.01"), card
        else:
            assert int(card["text"].replace(",", "")) == expected, (name, card)
        change = displayed["change"].get(name)
        if name.startswith("peak"):
            continue
        if change is None:
            assert card["change"] is None, name
            continue
        assert float(card["change"]) == change, name
        places = "0.01" if name in RATES else "0.1"
        assert _number(card["changeText"]) == _percent(change, places), (name, card)


def _filters(**extra: Any) -> dict[str, Any]:
    return {"tz": ZONE, **extra}


def test_cards_equal_the_api_summary(page: Any, site: Site) -> None:
    summary = site.summary(_filters(period="7d"))
    assert summary["cards"]["model_calls"] > 0
    assert_cards_match(page, summary)
    assert "Asia/Shanghai" in page.inner_text("#range-text")


def test_quick_buttons_and_a_custom_range_change_the_url_and_the_cards(
        page: Any, site: Site) -> None:
    seen = set()
    for period in ("1d", "3d", "30d", "7d"):
        page.click(f"#quick [data-period='{period}']")
        wait_until_ready(page)
        assert query_of(page)["period"] == [period]
        assert page.get_attribute(f"#quick [data-period='{period}']", "aria-pressed") == "true"
        summary = site.summary(_filters(period=period))
        assert_cards_match(page, summary)
        seen.add(summary["cards"]["model_calls"])
    assert len(seen) == 4  # each period really showed other figures

    start, last = _days_ago(site, 6), _days_ago(site, 4)
    page.fill("#start", start)
    page.fill("#end", last)  # the last day shown, inclusive; the API's end is the day after
    page.click("#query")
    wait_until_ready(page)
    query = query_of(page)
    assert query["start"] == [start] and query["end"] == [_days_ago(site, 3)]
    assert "period" not in query
    summary = site.summary(_filters(start=start, end=_days_ago(site, 3)))
    assert summary["cards"]["model_calls"] not in seen
    assert_cards_match(page, summary)


def _days_ago(site: Site, days: int) -> str:
    from datetime import datetime, timedelta
    from zoneinfo import ZoneInfo

    end = datetime.fromtimestamp(site.seed.end_us / 1e6, ZoneInfo(ZONE))
    return (end - timedelta(days=days)).date().isoformat()


def _choose(page: Any, select: str, values: list[str]) -> None:
    page.click(f"{select} summary")
    for value in values:
        page.check(f"{select} input[value='{value}']")
    page.click(f"{select} summary")


def test_query_applies_the_filters_and_clear_returns_to_the_default(page: Any,
                                                                    site: Site) -> None:
    key_id = site.seed.key_ids["acme-prod"]
    _choose(page, "#key-select", [key_id])
    _choose(page, "#calltype-select", ["model"])
    page.click("#quick [data-period='3d']")
    wait_until_ready(page)
    query = query_of(page)
    assert query["api_key_id"] == [key_id] and query["call_type"] == ["model"]
    assert query["period"] == ["3d"]
    assert page.inner_text("#key-select summary") == "acme-prod"
    assert_cards_match(page, site.summary(_filters(period="3d", api_key_id=key_id,
                                                   call_type="model")))
    # service calls are a real zero here, not "no data"
    assert page.inner_text("[data-card=service_calls] .value") == "0"

    page.click("#clear")
    wait_until_ready(page)
    assert query_of(page) == {"period": ["7d"], "tz": [ZONE]}  # the browser's zone
    assert page.inner_text("#key-select summary") == "All keys"
    assert page.get_attribute("#quick [data-period='7d']", "aria-pressed") == "true"
    assert_cards_match(page, site.summary(_filters(period="7d")))


def test_no_data_is_shown_apart_from_zero(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/?start=2001-01-01&end=2001-01-03&tz={ZONE}")
    wait_until_ready(page)
    summary = site.summary(_filters(start="2001-01-01", end="2001-01-03"))
    assert summary["cards"]["model_calls"] is None
    assert_cards_match(page, summary)
    assert page.get_attribute(".chart-box", "data-state") == "empty"
    assert page.inner_text("#chart-state") == "No calls in this range"
    assert page.get_attribute("#breakdown-table >> xpath=..", "data-state") == "empty"
    assert page.get_attribute("#calls-table >> xpath=..", "data-state") == "empty"


def test_an_api_error_is_shown_with_its_message(page: Any, site: Site) -> None:
    page.goto(f"{site.url}/?start=2026-02-30&tz={ZONE}")
    page.wait_for_selector("#page-error:not([hidden])")
    message = site.api.get("/api/v1/usage/summary",
                           params={"start": "2026-02-30", "tz": ZONE}).json()["error"]["message"]
    assert message in page.inner_text("#page-error")
    assert page.get_attribute("#cards", "data-state") == "error"
    assert message in page.inner_text("#chart-state")


def test_switching_the_metric_shows_the_api_trend(page: Any, site: Site) -> None:
    before = page.evaluate(CHART_SERIES)
    page.click("#metric [data-metric=total_tokens]")
    wait_until_ready(page)
    after = page.evaluate(CHART_SERIES)
    assert after != before
    assert query_of(page)["metric"] == ["total_tokens"]
    trend = site.get("/api/v1/usage/trend", _filters(period="7d", metric="total_tokens",
                                                     granularity="day"))
    assert [s["name"] for s in after] == [s["label"] for s in trend["series"]]
    for shown, series in zip(after, trend["series"], strict=True):
        assert shown["data"] == ["-" if v is None else v for v in series["values"]]
        assert shown["type"] == "line"

    page.click("#chart-type [data-chart=bar]")
    assert {s["type"] for s in page.evaluate(CHART_SERIES)} == {"bar"}
    page.click("#quick [data-period='1d']")
    wait_until_ready(page)
    assert page.is_enabled("#granularity [data-granularity=minute]")
    page.click("#granularity [data-granularity=minute]")
    wait_until_ready(page)
    minute = site.get("/api/v1/usage/trend", _filters(period="1d", metric="total_tokens",
                                                      granularity="minute"))
    shown = page.evaluate(CHART_SERIES)
    # The page asked a moment before the test did: a new minute may have begun in between.
    drawn = len(shown[0]["data"])
    assert len(minute["buckets"]) - drawn in (0, 1)
    # a minute without calls is a gap in the chart, not a zero
    assert any(v is None for v in minute["series"][0]["values"])
    assert shown[0]["data"] == ["-" if v is None else v
                                for v in minute["series"][0]["values"][:drawn]]
    page.click("#quick [data-period='7d']")
    wait_until_ready(page)
    assert not page.is_enabled("#granularity [data-granularity=minute]")


def test_a_legend_click_hides_a_model_and_a_second_click_shows_it(page: Any) -> None:
    page.wait_for_timeout(400)  # the chart's entry animation
    name = page.evaluate(CHART_SERIES)[0]["name"]
    assert page.evaluate(LEGEND_SELECTED, name)
    for expected in (False, True):
        point = page.evaluate(LEGEND_ITEM_CENTRE, name)
        page.mouse.click(point["x"], point["y"])
        page.wait_for_function(f"([name, expected]) => ({LEGEND_SELECTED})(name) === expected",
                               arg=[name, expected])


def test_hovering_the_chart_shows_the_exact_values(page: Any, site: Site) -> None:
    page.click("#metric [data-metric=cost]")
    wait_until_ready(page)
    trend = site.get("/api/v1/usage/trend", _filters(period="7d", metric="cost"))
    index = 2
    point = page.evaluate(BUCKET_POINT, index)
    page.mouse.move(point["x"], point["y"])
    page.wait_for_selector(".chart-tip", state="visible")
    tip = page.inner_text(".chart-tip")
    assert trend["buckets"][index] in tip
    for series in trend["series"]:
        value = series["values"][index]
        shown = re.search(re.escape(series["label"]) + r"\s+(No data|\S+)", tip)
        assert shown, (series, tip)
        if value is None:
            assert shown.group(1) == "No data"
        else:  # every decimal the API gave, none lost to a float
            assert _number(shown.group(1)) == Decimal(value), (series, tip)


def test_the_breakdown_sorts_and_drills_down(page: Any, site: Site) -> None:
    page.click("#breakdown-table th[data-col=cost] button")
    wait_until_ready(page)
    assert query_of(page)["sort"] == ["-cost"]
    rows = page.eval_on_selector_all("#breakdown-table tbody th",
                                     "els => els.map(e => e.dataset.value)")
    api = site.get("/api/v1/usage/breakdown", _filters(period="7d", sort="-cost"))
    assert rows == [row["model"] for row in api["rows"]]

    page.select_option("#group2", "api_key")
    wait_until_ready(page)
    assert query_of(page)["group_by"] == ["model,api_key"]
    headers = page.eval_on_selector_all("#breakdown-table thead th",
                                        "els => els.map(e => e.innerText)")
    assert headers[:2] == ["Model", "API key"]

    page.select_option("#group2", "")
    wait_until_ready(page)
    page.locator("#breakdown-table tbody tr", has_text=CHAT).get_by_role(
        "button", name="Calls").click()
    wait_until_ready(page)
    models = page.eval_on_selector_all("#calls-table tbody tr td:nth-child(3)",
                                       "els => els.map(e => e.textContent)")
    assert models and set(models) == {CHAT}
    assert "Model = " in page.inner_text("#calls-scope")

    page.locator("#breakdown-table tbody tr", has_text=CHAT).get_by_role(
        "button", name="Filter").click()
    wait_until_ready(page)
    assert query_of(page)["model"] == [CHAT]
    assert_cards_match(page, site.summary(_filters(period="7d", model=CHAT)))


def test_the_breakdown_shows_the_exact_percentiles_after_the_table(page: Any,
                                                                     site: Site) -> None:
    page.wait_for_function("() => document.querySelector('#breakdown-table tbody tr') "
                           "&& !document.querySelector('#breakdown-table td.pending')")
    api = site.get("/api/v1/usage/breakdown", _filters(period="7d", percentiles="true"))
    assert api["percentiles"]["available"] is True
    shown = page.eval_on_selector_all(
        "#breakdown-table tbody tr",
        "rows => rows.map(r => [r.querySelector('th').dataset.value, "
        "...['p50_latency_ms', 'p95_latency_ms', 'p50_ttft_ms', 'p95_ttft_ms'].map("
        "c => r.querySelector(`td[data-col=${c}]`).textContent)])")
    expected = {row["model"]: row for row in api["rows"]}
    assert shown and {model for model, *_ in shown} == set(expected)
    fields = ("p50_latency_ms", "p95_latency_ms", "p50_ttft_ms", "p95_ttft_ms")
    for model, *texts in shown:
        for field, text in zip(fields, texts, strict=True):
            value = expected[model][field]
            assert text == "—" if value is None else re.sub(r"\D", "", text) == str(value)
    assert any(expected[model]["p95_ttft_ms"] is not None for model in expected)
    page.click("#breakdown-table th[data-col=p95_latency_ms] button")
    wait_until_ready(page)
    assert query_of(page)["sort"] == ["-p95_latency_ms"]
    models = page.eval_on_selector_all("#breakdown-table tbody th",
                                       "els => els.map(e => e.dataset.value)")
    sorted_api = site.get("/api/v1/usage/breakdown", _filters(period="7d",
                                                              sort="-p95_latency_ms"))
    assert models == [row["model"] for row in sorted_api["rows"]]


def test_call_records_page_with_the_api_cursor(page: Any, site: Site) -> None:
    first = site.get("/api/v1/usage/calls", _filters(period="7d", limit=100))
    ids = page.eval_on_selector_all("#calls-table tbody tr", "els => els.map(e => e.dataset.id)")
    assert ids == [r["id"] for r in first["data"][:50]]
    page.click("#calls-more")
    wait_until_ready(page)
    ids = page.eval_on_selector_all("#calls-table tbody tr", "els => els.map(e => e.dataset.id)")
    assert ids == [r["id"] for r in first["data"]]


def test_the_csv_download_equals_the_api_export(page: Any, site: Site, tmp_path: Path) -> None:
    _choose(page, "#model-select", [CHAT])
    page.click("#query")
    wait_until_ready(page)
    page.click("#downloads summary")
    with page.expect_download() as download:
        page.click("a.dl[data-what=breakdown][data-format=csv]")
    saved = tmp_path / "breakdown.csv"
    download.value.save_as(saved)
    expected = site.api.get("/api/v1/usage/export", params=_filters(
        period="7d", model=CHAT, what="breakdown", format="csv", group_by="model"))
    assert expected.status_code == 200
    assert saved.read_bytes() == expected.content
    assert CHAT in saved.read_text()

    with page.expect_download() as download:
        page.click("#calls-csv")
    calls = tmp_path / "calls.csv"
    download.value.save_as(calls)
    expected = site.api.get("/api/v1/usage/export", params=_filters(
        period="7d", model=CHAT, what="calls", format="csv"))
    assert calls.read_bytes() == expected.content

    with page.expect_download() as download:
        page.click("#chart-png")
    assert download.value.suggested_filename.endswith(".png")
    png = tmp_path / "chart.png"
    download.value.save_as(png)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_bookmarked_url_restores_the_view_and_back_forward_work(page: Any,
                                                                  site: Site) -> None:
    key_id = site.seed.key_ids["mobile-app"]
    bookmark = (f"/?api_key_id={key_id}&model={CHAT}&period=30d&tz=Europe%2FBerlin"
                "&metric=cost&chart=bar&group_by=api_key,model&sort=-cost")
    page.goto(site.url + bookmark)
    wait_until_ready(page)
    assert page.inner_text("#key-select summary") == "mobile-app"
    assert page.inner_text("#model-select summary") == CHAT
    assert page.input_value("#tz") == "Europe/Berlin"
    assert page.get_attribute("#quick [data-period='30d']", "aria-pressed") == "true"
    assert page.get_attribute("#metric [data-metric=cost]", "aria-pressed") == "true"
    assert {s["type"] for s in page.evaluate(CHART_SERIES)} == {"bar"}
    assert page.input_value("#group2") == "model"
    filters = {"api_key_id": key_id, "model": CHAT, "period": "30d", "tz": "Europe/Berlin"}
    assert_cards_match(page, site.summary(filters))

    page.click("#quick [data-period='1d']")
    wait_until_ready(page)
    assert_cards_match(page, site.summary({**filters, "period": "1d"}))
    page.go_back()
    wait_until_ready(page)
    assert query_of(page)["period"] == ["30d"]
    assert page.get_attribute("#quick [data-period='30d']", "aria-pressed") == "true"
    assert_cards_match(page, site.summary(filters))
    page.go_forward()
    wait_until_ready(page)
    assert query_of(page)["period"] == ["1d"]
    assert_cards_match(page, site.summary({**filters, "period": "1d"}))


def test_the_language_switches_and_is_remembered(page: Any, site: Site) -> None:
    page.click("#lang-switch")
    assert page.inner_text("h1") == "用量统计"
    assert page.inner_text("[data-card=model_calls] h2") == "累计模型调用次数"
    page.reload()
    wait_until_ready(page)
    assert page.inner_text("h1") == "用量统计"
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert_cards_numbers_only(page, site)
    page.click("#lang-switch")
    assert page.inner_text("h1") == "Usage Statistics"


def assert_cards_numbers_only(page: Any, site: Site) -> None:
    summary = site.summary(_filters(period="7d"))
    text = page.inner_text("[data-card=model_calls] .value")
    assert int(text.replace(",", "")) == summary["cards"]["model_calls"]


def test_no_horizontal_scroll_at_390_pixels(page: Any, site: Site) -> None:
    page.set_viewport_size({"width": 390, "height": 844})
    for path in ("/", "/keys"):
        page.goto(site.url + path)
        wait_until_ready(page)
        assert page.evaluate("document.documentElement.scrollWidth") <= 390, path


def test_the_pages_load_nothing_from_outside_the_server(page: Any, site: Site) -> None:
    for path in ("/", "/keys"):
        page.goto(site.url + path)
        wait_until_ready(page)
        assert page.evaluate("window.__cspViolations") == [], path
    outside = [url for url in site.requests
               if not url.startswith(site.url) and not url.startswith(("data:", "blob:"))]
    assert outside == []
    assert any(url.endswith("/static/vendor/echarts/echarts.min.js") for url in site.requests)


CHART_MARKS = """() => echarts.getInstanceByDom(document.getElementById("chart")).getOption()
  .series.flatMap((s) => [...(s.markPoint?.data ?? []).map((d) => ({index: d.coord[0],
    series: s.id, name: d.name})), ...(s.markLine?.data ?? []).map((d) => ({index: d.xAxis,
    series: null, name: d.name}))])"""


def test_the_demo_spike_is_marked_on_the_trend_chart(page: Any, site: Site) -> None:
    spike = site.seed.spike
    assert spike is not None
    key_id = site.seed.key_ids[spike.key_name]
    params = {"api_key_id": key_id, "period": "7d", "tz": ZONE, "granularity": "hour"}
    trend = site.get("/api/v1/usage/trend", {**params, "metric": "requests", "group_by": "model"})
    index = next(i for i, b in enumerate(trend["buckets"])
                 if datetime.fromisoformat(b).timestamp() * 1_000_000 == spike.start_us)
    found = site.get("/api/v1/anomalies", {**params, "kind": "spike", "metric": "requests"})
    assert any(a["start"] and datetime.fromisoformat(a["start"]).timestamp() * 1_000_000
               == spike.start_us for a in found["data"]), found
    page.goto(f"{site.url}/?api_key_id={key_id}&period=7d&tz={ZONE}&granularity=hour")
    wait_until_ready(page)
    page.wait_for_function(f"() => ({CHART_MARKS})().length > 0")
    marks = page.evaluate(CHART_MARKS)
    assert any(m["index"] == index and m["series"] == spike.model for m in marks), (index, marks)
    assert all(m["name"].startswith("Spike") for m in marks), marks
    # The admin also sees the keys near a limit or expiry (the demo's beta-labs expires soon).
    notice = page.locator("#key-warnings")
    assert notice.is_visible() and "beta-labs" in notice.inner_text()
    assert notice.locator("a").first.get_attribute("href") == "/keys"


# Ratios whose percentage is a tie at the shown places, and whose nearest double lies below
# it: float arithmetic rounds them down, the decimal the API wrote rounds them up.
TIES = (-0.00115, 0.00115, 0.977245, -0.000005, 0.014355, 1e-7, -0.0000125, 0.5, 0)


def test_rates_and_changes_round_the_decimal_the_api_wrote(page: Any) -> None:
    shown = page.evaluate("""async (values) => {
      const fmt = await import("/static/format.js");
      return values.map((v) => [fmt.rate(v), fmt.change(v, true), fmt.change(v, false)]);
    }""", list(TIES))
    for value, (rate, points, relative) in zip(TIES, shown, strict=True):
        assert _number(rate) == _percent(value, "0.01"), (value, rate)
        assert _number(points) == _percent(value, "0.01"), (value, points)
        assert _number(relative) == _percent(value, "0.1"), (value, relative)
