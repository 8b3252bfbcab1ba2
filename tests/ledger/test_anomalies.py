"""Anomaly detection on generated traffic with known incidents: each one found, nothing else.

The traffic is the demo's (``seed_demo``: keys with their own rhythms, growth, bursts and
errors, and one injected spike), at a fixed moment so every run sees the same calls. The
false-alarm rate over many seeds is measured by ``bench/anomalies.py`` (docs/anomalies.md).
"""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tallygate.demo.generate import DAY_US, HOUR_US, plan_spike
from tallygate.demo.incidents import Incident, evaluate, incident, inject
from tallygate.demo.routes import BGE_M3, QWEN_CODER, R1_32B, R1_LLAMA_70B
from tallygate.demo.seed import seed_demo
from tallygate.domain.records import CallRecord
from tallygate.keys.service import KeyService
from tallygate.ledger.anomalies import AnomalyParams, find_anomalies, parse_choices
from tallygate.ledger.baseline import median, robust_score, seasonal_history
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import UsageQuery
from tallygate.ledger.timerange import BadParameter, resolve_range
from tallygate.store.database import Database
from tallygate.store.usage import CallFilter

US = 1_000_000
NOW_US = int(datetime(2026, 11, 20, 12, 0, tzinfo=UTC).timestamp()) * US
DAYS = 20


def _query(start_us: int, end_us: int, tz: str = "UTC",
           call_filter: CallFilter | None = None) -> UsageQuery:
    def iso(ts_us: int) -> str:
        return datetime.fromtimestamp(ts_us // US, UTC).isoformat()

    return UsageQuery(call_filter or CallFilter(), resolve_range(None, iso(start_us),
                                                                 iso(end_us), tz))


def test_median_and_seasonal_history() -> None:
    assert median([3, 1, 2]) == 2 and median([4, 1, 3, 2]) == 2.5
    with pytest.raises(ValueError):
        median([])
    series = list(range(100))
    assert seasonal_history(series, 50, period=24, cycles=3, spread=1) == [25, 26, 27, 1, 2, 3]
    assert seasonal_history(series, 50, period=24, cycles=3, spread=0, first=10) == [26]
    assert seasonal_history(series, 5, period=1, cycles=3, spread=0) == [4, 3, 2]


@given(st.lists(st.integers(0, 10_000), min_size=5, max_size=60), st.integers(0, 10_000))
def test_a_larger_value_never_scores_lower(history: list[int], value: int) -> None:
    low = robust_score(value, history, 0.15, 20)
    high = robust_score(value + 1, history, 0.15, 20)
    assert high.z > low.z and low.sigma >= 0.15
    if len(history) % 2:  # an odd count's median is one of its values, on either scale
        assert low.baseline == pytest.approx(median(history))


def test_parse_choices() -> None:
    assert parse_choices(None, ("a", "b"), "kind") == ("a", "b")
    assert parse_choices(["b,a", "b"], ("a", "b"), "kind") == ("b", "a")
    with pytest.raises(BadParameter, match="kind"):
        parse_choices(["c"], ("a", "b"), "kind")


def test_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="hour_seasonality"):
        AnomalyParams(hour_seasonality="yearly")


@pytest.fixture
def demo(db: Database) -> tuple[Ledger, dict[str, str]]:
    ledger = Ledger(db)
    seeded = seed_demo(ledger, KeyService(db), now_us=NOW_US, days=DAYS)
    return ledger, dict(seeded.key_ids)


def test_the_demo_spike_and_every_injected_incident_are_found(
        demo: tuple[Ledger, dict[str, str]]) -> None:
    ledger, key_ids = demo
    today = NOW_US // DAY_US * DAY_US
    window = _query(NOW_US - 5 * DAY_US, NOW_US)
    spike = plan_spike(NOW_US)
    demo_spike = Incident("calls", spike.key_name, spike.model, spike.start_us, spike.end_us,
                          spike.extra_calls, 10)

    normal = evaluate(find_anomalies(ledger, window, now_us=NOW_US), [demo_spike], key_ids)
    assert normal.found == [demo_spike], "the demo's spike"
    assert normal.false_alarms == []

    incidents = [
        incident("calls", "beta-labs", QWEN_CODER, today - 5 * DAY_US + 15 * HOUR_US,
                 now_us=NOW_US),
        incident("tokens", "acme-prod", R1_32B, today - 4 * DAY_US + 9 * HOUR_US,
                 now_us=NOW_US),
        incident("errors", "research-team", R1_LLAMA_70B, today - 2 * DAY_US + 6 * HOUR_US,
                 now_us=NOW_US),
        incident("day", "eval-pipeline", R1_LLAMA_70B, today - DAY_US, now_us=NOW_US),
        incident("new_model", "beta-labs", BGE_M3, today + 3 * HOUR_US, now_us=NOW_US),
    ]
    inject(ledger, incidents, key_ids)
    found = find_anomalies(ledger, window, now_us=NOW_US)
    outcome = evaluate(found, [demo_spike, *incidents], key_ids)
    assert outcome.missed == []
    assert outcome.false_alarms == []
    kinds = {a.kind for a in found}
    assert kinds == {"spike", "error_burst", "new_model"}
    day_spikes = [a for a in found if a.granularity == "day"]
    assert {a.start_us for a in day_spikes} == {today - DAY_US}

    # The filters narrow what is looked at: another key sees none of it.
    others = _query(NOW_US - 5 * DAY_US, NOW_US,
                    call_filter=CallFilter(api_key_ids=(key_ids["acme-staging"],)))
    assert find_anomalies(ledger, others, now_us=NOW_US) == []
    beta = _query(NOW_US - 5 * DAY_US, NOW_US,
                  call_filter=CallFilter(api_key_ids=(key_ids["beta-labs"],)))
    assert {(a.kind, a.model or a.subject) for a in find_anomalies(
        ledger, beta, kinds=("new_model",), now_us=NOW_US)} == {("new_model", BGE_M3)}


def test_an_error_burst_needs_many_failures_and_a_jump_in_rate(ledger: Ledger) -> None:
    hour = NOW_US // HOUR_US * HOUR_US - 3 * HOUR_US
    records = []
    for h in range(24 * 8):  # a steady week: 40 calls an hour, 1 failing
        start = hour - h * HOUR_US
        records += [CallRecord(id=f"h{h}-{i}", ts_us=start + i * 60 * US, model="m",
                               call_type="model", api_key_id="k",
                               status_code=500 if i == 0 else 200) for i in range(40)]
    records += [CallRecord(id=f"burst-{i}", ts_us=hour + i * 1000, model="m",
                           call_type="model", api_key_id="k", status_code=502)
                for i in range(15)]
    ledger.store(records)
    found = find_anomalies(ledger, _query(hour - DAY_US, NOW_US), kinds=("error_burst",),
                           now_us=NOW_US)
    assert {(a.scope, a.start_us) for a in found} == {("api_key", hour), ("model", hour)}
    burst = found[0]
    assert burst.details == {"calls": 55, "failed_calls": 16}
    assert burst.value == round(16 / 55, 4) and burst.baseline == 0.025
    # Fewer failures than min_errors: no burst.
    strict = AnomalyParams(min_errors=20)
    assert find_anomalies(ledger, _query(hour - DAY_US, NOW_US), strict,
                          kinds=("error_burst",), now_us=NOW_US) == []


def test_day_spikes_are_calendar_days_of_the_zone(ledger: Ledger) -> None:
    """A spike within one local day of Asia/Kathmandu (+05:45) is one day there."""
    tz = ZoneInfo("Asia/Kathmandu")
    day = datetime(2026, 11, 18, tzinfo=tz)
    day_us = int(day.timestamp()) * US
    records = []
    for d in range(1, 30):
        for i in range(100):
            records.append(CallRecord(id=f"d{d}-{i}", ts_us=day_us - d * DAY_US + i * 800 * US,
                                      model="m", call_type="model", api_key_id="k"))
    records += [CallRecord(id=f"x{i}", ts_us=day_us + i * 80 * US, model="m",
                           call_type="model", api_key_id="k") for i in range(1000)]
    ledger.store(records)
    query = _query(day_us - 2 * DAY_US, day_us + 2 * DAY_US, "Asia/Kathmandu")
    found = find_anomalies(ledger, query, granularities=("day",), kinds=("spike",),
                           now_us=day_us + 3 * DAY_US)
    assert {(a.scope, a.metric) for a in found} == {("api_key", "requests"),
                                                    ("model", "requests")}
    assert {(a.start_us, a.end_us) for a in found} == {(day_us, day_us + DAY_US)}
    shown = found[0].as_dict(tz, {"k": "the key"})
    assert shown["start"] == "2026-11-18T00:00:00+05:45"
    assert shown["api_key_name"] in (None, "the key")


def test_a_new_key_trying_its_models_is_not_news(ledger: Ledger) -> None:
    start = NOW_US - 3 * DAY_US
    records = [CallRecord(id=f"a{i}", ts_us=start + i * HOUR_US, model=model,
                          call_type="model", api_key_id="k")
               for i, model in enumerate(("m1", "m2", "m1", "m1"))]
    records.append(CallRecord(id="late", ts_us=NOW_US - HOUR_US, model="m3",
                              call_type="model", api_key_id="k"))
    ledger.store(records)
    found = find_anomalies(ledger, _query(start - DAY_US, NOW_US), kinds=("new_model",),
                           now_us=NOW_US)
    assert [(a.subject, a.model, a.start_us) for a in found] == [("k", "m3", NOW_US - HOUR_US)]
    assert found[0].message({"k": "key k"}) == "key key k called m3 for the first time"
