from __future__ import annotations

import itertools
import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from tallygate.config import Route, RoutePrice
from tallygate.demo.generate import (
    DEMO_ROUTES,
    HOUR_US,
    SPIKE_KEY,
    SPIKE_MODEL,
    generate_calls,
    plan_spike,
)
from tallygate.demo.profiles import DEMO_KEYS, INTERNAL_KEY, RHYTHM_WEIGHTS
from tallygate.demo.routes import demo_price_table, gateway_routes
from tallygate.demo.shapes import MODEL_SHAPES
from tallygate.domain.categories import CALL_TYPES, category_for_endpoint
from tallygate.domain.records import CallRecord

NOW_US = int(datetime(2026, 11, 20, 9, 41, 7, 123456, tzinfo=UTC).timestamp() * 1_000_000)
KEY_IDS = {key.name: f"id-{key.name}" for key in DEMO_KEYS}
NAMES = {key_id: name for name, key_id in KEY_IDS.items()}
SHANGHAI = ZoneInfo("Asia/Shanghai")
ROUTES = {route.model: route for route in DEMO_ROUTES}
PRICES = demo_price_table()


@dataclass
class Tally:
    """One pass over 60 days of generated calls, kept small (not the records themselves)."""

    records: int = 0
    per_key: Counter[str] = field(default_factory=Counter)
    per_model: Counter[str] = field(default_factory=Counter)
    per_type: Counter[str] = field(default_factory=Counter)
    per_status: Counter[int] = field(default_factory=Counter)
    per_key_hour: Counter[tuple[str, int]] = field(default_factory=Counter)
    per_local_hour: Counter[int] = field(default_factory=Counter)
    per_weekday: Counter[int] = field(default_factory=Counter)
    streamed: int = 0
    cached: int = 0
    reasoning: int = 0
    estimated: int = 0
    tagged: int = 0
    cache_writes: int = 0
    units: Counter[str] = field(default_factory=Counter)
    unit_calls: Counter[str] = field(default_factory=Counter)
    upstream_models: Counter[tuple[str, str | None]] = field(default_factory=Counter)
    first_ts: int = 0
    last_ts: int = 0
    problems: list[str] = field(default_factory=list)


def _problems(record: CallRecord) -> list[str]:
    r = record
    route = ROUTES[r.model]
    found = []
    if not (0 <= r.cached_input_tokens + r.cache_write_tokens <= r.input_tokens):
        found.append("cached + cache writes > input")
    if (r.unit is None) != (r.status_code != 200 or MODEL_SHAPES[r.model].unit is None) or (
            r.units and r.unit != MODEL_SHAPES[r.model].unit):
        found.append(f"unit {r.unit}")
    if r.unit is not None and (r.input_tokens or r.output_tokens):
        found.append("a call billed by units with tokens")
    if not (0 <= r.reasoning_tokens <= r.output_tokens):
        found.append("reasoning > output")
    if r.total_tokens != r.input_tokens + r.output_tokens:
        found.append("total != input + output")
    expected_type = ("internal" if NAMES[r.api_key_id or ""] == INTERNAL_KEY
                     else route.kind)
    if r.call_type != expected_type:
        found.append(f"call_type {r.call_type}")
    if r.model_category != route.category or r.endpoint != route.endpoint:
        found.append("category or endpoint")
    if r.status_code >= 400 and (r.total_tokens or r.cost_nano):
        found.append("a failure with usage or cost")
    if r.status_code == 200 and r.cost_nano != PRICES.cost_nano(
            r.model, r.ts_us, r.input_tokens, r.cached_input_tokens, r.output_tokens,
            cache_write_tokens=r.cache_write_tokens, units=r.units):
        found.append("cost not from the price table")
    latency = r.latency_ms or 0
    if latency < 1:
        found.append("no latency")
    if r.ttft_ms is not None and (r.ttft_ms > latency or route.category != "chat"
                                  and r.model != "qwen2.5-coder-7b"):
        found.append("ttft")
    if r.status_code == 200 and route.category == "embedding" and r.output_tokens:
        found.append("embedding with output")
    return [f"{r.id}: {problem}" for problem in found]


@pytest.fixture(scope="module")
def tally() -> Tally:
    seen = Tally(first_ts=NOW_US)
    for record in generate_calls(KEY_IDS, now_us=NOW_US, days=60):
        seen.records += 1
        name = NAMES[record.api_key_id or ""]
        seen.per_key[name] += 1
        seen.per_model[record.model] += 1
        seen.per_type[record.call_type] += 1
        seen.per_status[record.status_code] += 1
        seen.per_key_hour[(name, record.ts_us // HOUR_US)] += 1
        local = datetime.fromtimestamp(record.ts_us / 1_000_000, SHANGHAI)
        seen.per_local_hour[local.hour] += 1
        seen.per_weekday[local.weekday()] += 1
        seen.streamed += record.ttft_ms is not None
        seen.cached += record.cached_input_tokens > 0
        seen.reasoning += record.reasoning_tokens > 0
        seen.estimated += record.estimated
        seen.tagged += record.metadata is not None
        seen.cache_writes += record.cache_write_tokens > 0
        if record.unit is not None:
            seen.units[record.unit] += record.units
            seen.unit_calls[record.unit] += 1
        seen.upstream_models[(record.model, record.upstream_model)] += 1
        if record.ts_us < seen.last_ts:
            seen.problems.append(f"{record.id}: out of time order")
        seen.first_ts = min(seen.first_ts, record.ts_us)
        seen.last_ts = record.ts_us
        if len(seen.problems) < 20:
            seen.problems.extend(_problems(record))
    return seen


def test_the_same_seed_gives_the_same_records_and_another_seed_others() -> None:
    def first_days(seed: int) -> list[CallRecord]:
        return list(generate_calls(KEY_IDS, now_us=NOW_US, days=2, seed=seed))

    again = first_days(7)
    assert again == first_days(7)
    assert [r.metadata for r in again] == [r.metadata for r in first_days(7)]
    assert again != first_days(8)
    assert len({r.id for r in again}) == len(again)


def test_it_streams_records_rather_than_building_a_list() -> None:
    calls = generate_calls(KEY_IDS, now_us=NOW_US, days=60)
    assert len(list(itertools.islice(calls, 10))) == 10


def test_sixty_days_of_calls_in_time_order_with_consistent_fields(tally: Tally) -> None:
    assert tally.problems == []
    assert 150_000 <= tally.records <= 300_000
    assert NOW_US - 60 * 24 * HOUR_US <= tally.first_ts < NOW_US - 59 * 24 * HOUR_US
    assert NOW_US - HOUR_US < tally.last_ts < NOW_US


def test_keys_models_and_call_types(tally: Tally) -> None:
    assert len(tally.per_key) >= 5
    assert sum(key.internal for key in DEMO_KEYS) == 1
    assert len({tuple(key.model_mix) for key in DEMO_KEYS}) == len(DEMO_KEYS)
    assert len(set(tally.per_key.values())) == len(tally.per_key)
    assert {"cltech/deepseek-r1-32b", "deepseek-r1-distill-llama-70b"} <= set(tally.per_model)
    assert len(tally.per_model) >= 4
    assert set(tally.per_type) == set(CALL_TYPES)
    assert tally.per_type["internal"] == tally.per_key[INTERNAL_KEY]


def test_failures_rate_limits_and_the_rarer_fields_all_occur(tally: Tally) -> None:
    failed = sum(n for status, n in tally.per_status.items() if status >= 400 and status != 429)
    assert 0.008 <= failed / tally.records <= 0.025
    assert 0.002 <= tally.per_status[429] / tally.records <= 0.03
    assert any(status >= 500 for status in tally.per_status)
    assert any(400 <= status < 500 and status != 429 for status in tally.per_status)
    for count in (tally.streamed, tally.cached, tally.reasoning):
        assert 0.05 * tally.records < count < 0.9 * tally.records
    assert 0 < tally.estimated < 0.02 * tally.records
    assert 0.01 * tally.records < tally.tagged < 0.5 * tally.records


def test_anthropic_cache_writes_units_and_upstream_models(tally: Tally) -> None:
    claude = tally.per_model["claude-sonnet-4-5"]
    assert 0.05 * claude < tally.cache_writes < 0.3 * claude
    assert set(tally.units) == {"page", "second"}
    assert 1.5 < tally.units["page"] / tally.unit_calls["page"] < 4  # mostly one-page scans
    assert 30 < tally.units["second"] / tally.unit_calls["second"] < 120
    names: dict[str, set[str]] = {}
    for model, name in tally.upstream_models:
        if name is not None:
            names.setdefault(model, set()).add(name)
    assert all(len(found) == 1 for found in names.values())  # one upstream name a model
    assert names["claude-sonnet-4-5"] == {"claude-sonnet-4-5-20250929"}
    assert names["bge-m3"] == {"BAAI/bge-m3"}
    unnamed = sum(n for (_, name), n in tally.upstream_models.items() if name is None)
    assert unnamed == tally.records - tally.per_status[200]  # failures ran nothing upstream


def test_busy_working_hours_and_quiet_weekends_in_shanghai(tally: Tally) -> None:
    hours = tally.per_local_hour
    assert min(hours[h] for h in (10, 11, 14, 15, 16)) > 3 * max(hours[h] for h in (3, 4, 5))
    weekday_mean = sum(tally.per_weekday[d] for d in range(5)) / 5
    assert max(tally.per_weekday[5], tally.per_weekday[6]) < 0.75 * weekday_mean


def test_the_one_spike_stands_out_of_its_keys_hours(tally: Tally) -> None:
    spike = plan_spike(NOW_US)
    assert (spike.key_name, spike.model) == (SPIKE_KEY, SPIKE_MODEL)
    assert 3 * 24 * HOUR_US <= NOW_US - spike.start_us <= 4 * 24 * HOUR_US
    assert spike.end_us - spike.start_us == HOUR_US and spike.start_us % HOUR_US == 0
    hours = {hour: n for (key, hour), n in tally.per_key_hour.items() if key == SPIKE_KEY}
    spike_hour = hours.pop(spike.start_us // HOUR_US)
    assert spike_hour >= 5 * statistics.median(hours.values())
    assert spike_hour > 1.5 * max(hours.values())  # and it is the only one of its kind


def test_routes_are_valid_gateway_routes_with_known_shapes() -> None:
    routes = {r.model: r for r in gateway_routes("http://127.0.0.1:9/v1")}
    for route in DEMO_ROUTES:
        gateway = routes[route.model]
        assert isinstance(gateway, Route) and isinstance(gateway.price, RoutePrice)
        assert gateway.price.per_unit == route.per_unit
        assert gateway.price.cache_write_per_million == route.cache_write_per_million
        assert isinstance(route.input_per_million, Decimal)
        assert route.model in MODEL_SHAPES
        known = category_for_endpoint(route.endpoint)
        assert known in (route.category, "other")
    assert any(route.kind == "service" and route.per_call > 0 for route in DEMO_ROUTES)
    assert routes["claude-sonnet-4-5"].protocol == "anthropic"
    ocr = routes["cltech/ocr-service"]
    assert (ocr.kind, ocr.path, ocr.unit, ocr.units_from) == (
        "service", "/v1/ocr", "page", "/usage/pages")
    for key in DEMO_KEYS:
        assert sum(key.model_mix.values()) == pytest.approx(1)
        assert set(key.model_mix) <= set(ROUTES)
    for week in RHYTHM_WEIGHTS.values():
        assert sum(map(sum, week)) / 168 == pytest.approx(1)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(ValueError, match="no id for the demo keys"):
        next(generate_calls({"acme-prod": "x"}, now_us=NOW_US))
