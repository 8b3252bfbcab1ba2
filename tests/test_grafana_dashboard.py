"""docs/grafana/tallygate.json: a Grafana dashboard model whose every query asks for a series
that ``/metrics`` really exposes (checked against a running app's scrape, not a list)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tallygate.config import Route
from tallygate.fake_upstream import FakeSettings, FakeUpstream
from tallygate.store.database import Database
from tests.api.support import ADMIN_TOKEN, bearer, forget_tallygate_environment, running_app
from tests.servers import serve_app

DASHBOARD = Path(__file__).resolve().parents[1] / "docs" / "grafana" / "tallygate.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
CHAT = "cltech/deepseek-r1-32b"

# Words of PromQL that are not metric names where they stand alone (functions are told apart
# by the parenthesis that follows them).
_KEYWORDS = {"bool", "and", "or", "unless", "offset", "inf", "nan"}


@pytest.fixture(autouse=True)
def _no_settings_from_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    forget_tallygate_environment(monkeypatch)


def metric_names(expr: str) -> set[str]:
    """The series names a PromQL expression selects."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values may hold anything
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # range and subquery windows
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ",
                  text)  # label lists
    text = re.sub(r"\$\w+|\$\{[^}]*\}", " ", text)  # Grafana's variables
    names = set()
    for match in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", text):
        rest = text[match.end():].lstrip()
        if rest.startswith("(") or match.group().lower() in _KEYWORDS:
            continue  # a function or an operator
        names.add(match.group())
    return names


def test_metric_names_reads_promql_as_promql() -> None:
    assert metric_names('histogram_quantile(0.95, sum by (le, model) (rate('
                        'x_seconds_bucket{model=~"$model", a="b}{c"}[$__rate_interval])))') \
        == {"x_seconds_bucket"}
    assert metric_names("sum(rate(a_total[5m])) / sum without (status) (rate(b_total[5m])) "
                        "* 3600 > bool 1e3") == {"a_total", "b_total"}
    assert metric_names("up") == {"up"}
    assert metric_names("sum by (currency) (increase(c_total{x='y'}[$__range]))") == \
        {"c_total"}


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return loaded


def queries(dashboard: dict[str, Any]) -> list[str]:
    """Every PromQL expression: the panels' targets and the variables' label_values."""
    found = [target["expr"] for panel in _panels(dashboard["panels"])
             for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            text = query["query"] if isinstance(query, dict) else query
            inner = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", text)
            assert inner, text
            found.append(inner.group(1))
    return found


def test_it_is_a_grafana_dashboard_on_a_prometheus_variable() -> None:
    dashboard = _dashboard()
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert dashboard["uid"] and dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [panel["id"] for panel in _panels(dashboard["panels"])]
    assert len(ids) == len(set(ids))
    for panel in _panels(dashboard["panels"]):
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE
    # The panels the operations docs promise.
    titles = " ".join(panel["title"] for panel in _panels(dashboard["panels"])).lower()
    for subject in ("request rate by model", "request rate by status", "latency (p50",
                    "time to first token", "tokens per second", "cost per hour",
                    "queue depth", "batch write time", "failures", "refusals"):
        assert subject in titles, subject
    quantiles = [q for q in queries(dashboard) if q.startswith("histogram_quantile(")]
    assert {re.match(r"histogram_quantile\(([\d.]+)", q).group(1)  # type: ignore[union-attr]
            for q in quantiles} == {"0.5", "0.95", "0.99"}


def _exposed(db: Database) -> set[str]:
    """The series names of a running app's /metrics after calls through its gateway: one
    streamed answer, and one refused by the key's rate limit."""
    with serve_app(FakeUpstream(FakeSettings(chunks=2))) as upstream, \
            running_app(db, routes=[Route(model=CHAT, base_url=f"{upstream}/v1",
                                          category="chat")]) as api:
        key = api.create_key(name="scraped", rpm_limit=1)
        body = {"model": CHAT, "stream": True,
                "messages": [{"role": "user", "content": "hello"}]}
        answered = api.client.post("/v1/chat/completions", json=body, headers=bearer(key["key"]))
        assert answered.status_code == 200, answered.text
        refused = api.client.post("/v1/chat/completions", json=body, headers=bearer(key["key"]))
        assert refused.status_code == 429, refused.text
        portal = api.client.portal
        assert portal is not None
        portal.call(api.client.app.state.recorder.flush)  # type: ignore[attr-defined]
        scrape = api.get("/metrics", token=ADMIN_TOKEN)
        assert scrape.status_code == 200
        return {sample.name for family in text_string_to_metric_families(scrape.text)
                for sample in family.samples}


def test_every_queried_metric_is_exposed(db: Database) -> None:
    exposed = _exposed(db)
    assert "tallygate_requests_total" in exposed  # the scrape really has the call in it
    asked: dict[str, set[str]] = {}
    for expr in queries(_dashboard()):
        names = metric_names(expr)
        assert names, f"no metric found in {expr!r}"
        for name in names:
            asked.setdefault(name, set()).add(expr)
    missing = {name: sorted(exprs) for name, exprs in asked.items() if name not in exposed}
    assert not missing, f"queried but not in /metrics: {missing}"
    # Every family /metrics exposes has a panel (a new metric needs one too).
    families = {re.sub(r"_(bucket|count|sum|total|created)$", "", n) for n in exposed
                if n.startswith("tallygate_")}
    shown = {re.sub(r"_(bucket|count|sum|total|created)$", "", n) for n in asked}
    assert families <= shown, families - shown
