"""Deterministic, realistic call records for the demo ledger.

Volume per key, model and hour follows the key's rhythm (Asia/Shanghai working hours and
weekdays, see :mod:`tallygate.demo.profiles`), a day-to-day wobble and a steady growth. Within
an hour, calls arrive in runs of consecutive requests of the Azure trace, so both the bursts
(their real spacing) and the token sizes are real traffic's, not uniform noise. One spike is
injected on purpose (:func:`plan_spike`) for anomaly detection to find.

Records come out in time order, one hour at a time, so memory stays flat whatever the range.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from zoneinfo import ZoneInfo

from tallygate.demo.profiles import DEMO_KEYS, KEYS_BY_NAME, LOCAL_ZONE, RHYTHM_WEIGHTS, DemoKey
from tallygate.demo.routes import (
    DEMO_ROUTES,
    R1_32B,
    ROUTES_BY_MODEL,
    DemoRoute,
    demo_price_table,
)
from tallygate.demo.shapes import (
    MODEL_SHAPES,
    CallShape,
    ModelShape,
    failed_call_latency_ms,
    successful_call,
)
from tallygate.demo.trace import load_trace
from tallygate.domain.pricing import PriceTable
from tallygate.domain.records import CallRecord
from tallygate.fake_upstream.call import served_model

__all__ = [
    "DEFAULT_DAYS", "DEFAULT_SEED", "DEMO_ROUTES", "SPIKE_KEY", "SPIKE_MODEL",
    "SPIKE_MULTIPLIER", "Spike", "generate_calls", "plan_spike",
]

DEFAULT_SEED = 20231116  # the day the Azure trace was recorded
DEFAULT_DAYS = 60
HOUR_US = 3_600_000_000
DAY_US = 24 * HOUR_US
GROWTH_WINDOW_US = 60 * DAY_US  # a key's ``growth`` is its change over this window

SPIKE_KEY = "mobile-app"  # a retry loop gone wild in a release of the app
SPIKE_MODEL = R1_32B
SPIKE_MULTIPLIER = 10  # the spike hour's volume over the key's mean hour on that model
SPIKE_HOURS_BEFORE_NOW = 84  # three and a half days

SERVER_ERROR_SHARE = 0.008
CLIENT_ERROR_SHARE = 0.005
_SERVER_ERRORS = (502, 502, 502, 504, 504, 500, 503)
_CLIENT_ERRORS = (400, 400, 400, 400, 400, 400, 400, 400, 413, 422)


@dataclass(frozen=True, slots=True)
class Spike:
    """The injected anomaly: ``extra_calls`` more calls of one key on one model in one hour."""

    key_name: str
    model: str
    start_us: int
    end_us: int
    extra_calls: int


def growth_factor(profile: DemoKey, ts_us: int, now_us: int) -> float:
    """A key's volume at ``ts_us`` relative to its volume now (1 at ``now_us``)."""
    return float((1 + profile.growth) ** ((ts_us - now_us) / GROWTH_WINDOW_US))


def plan_spike(now_us: int) -> Spike:
    """Where and how big the injected spike is, for a ledger that ends at ``now_us``."""
    start = (now_us - SPIKE_HOURS_BEFORE_NOW * HOUR_US) // HOUR_US * HOUR_US
    profile = KEYS_BY_NAME[SPIKE_KEY]
    mean_hourly = (profile.calls_per_day / 24 * profile.model_mix[SPIKE_MODEL]
                   * growth_factor(profile, start, now_us))
    extra = round((SPIKE_MULTIPLIER - 1) * mean_hourly)
    return Spike(SPIKE_KEY, SPIKE_MODEL, start, start + HOUR_US, extra)


@cache
def _arrival_offsets_us(service: str) -> tuple[int, ...]:
    """The trace's arrival times stretched to exactly one hour, in microseconds."""
    trace = load_trace()[service]
    return tuple(offset * HOUR_US // trace.span_ms for offset in trace.offsets_ms)


def _poisson(rng: random.Random, mean: float) -> int:
    if mean <= 0:
        return 0
    if mean > 30:
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count


def _burst_length(rng: random.Random, mean: float) -> int:
    """Geometric with the given mean (at least 1)."""
    if mean <= 1:
        return 1
    return 1 + int(math.log(1.0 - rng.random()) / math.log(1.0 - 1.0 / mean))


def _call_id(rng: random.Random, ts_us: int) -> str:
    """A UUIDv7 of the call's own time, its random bits from the seeded generator."""
    rand = rng.getrandbits(74)
    value = ((ts_us // 1000) << 80 | 0x7 << 76 | (rand >> 62) << 64 | 0b10 << 62
             | (rand & ((1 << 62) - 1)))
    text = f"{value:032x}"
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


class _HourWriter:
    """Turns trace requests into call records; one seeded generator for every hour."""

    def __init__(self, rng: random.Random, prices: PriceTable) -> None:
        self.rng = rng
        self.prices = prices
        # What the fake upstream answers as its ``model`` for each route.
        self.upstream_models = {r.model: served_model(r.upstream_model or r.model)
                                for r in DEMO_ROUTES}

    def calls(self, hour_start: int, key_id: str, profile: DemoKey, route: DemoRoute,
              count: int, load: float) -> Iterator[CallRecord]:
        rng = self.rng
        shape = MODEL_SHAPES[route.model]
        trace = load_trace()[shape.trace]
        offsets = _arrival_offsets_us(shape.trace)
        size = len(offsets)
        rotation = rng.randrange(HOUR_US)  # each hour replays the trace from its own point
        call_type = ("internal" if profile.internal
                     else "service" if route.kind == "service" else "model")
        rate_limited = profile.rate_limited_share * min(load, 3.0)
        made = 0
        while made < count:
            first = int(rng.random() * size)
            run = min(count - made, _burst_length(rng, profile.burst_mean))
            for row in range(first, first + run):
                row %= size
                jitter_us = int(rng.random() * 1000)
                ts_us = hour_start + (offsets[row] + rotation) % HOUR_US + jitter_us
                yield self._record(ts_us, key_id, profile, route, shape, call_type,
                                   rate_limited, *trace.token_pairs[row])
            made += run

    def _record(self, ts_us: int, key_id: str, profile: DemoKey, route: DemoRoute,
                shape: ModelShape, call_type: str, rate_limited: float, trace_input: int,
                trace_output: int) -> CallRecord:
        rng = self.rng
        draw = rng.random()
        status = 200
        if draw < rate_limited:
            status = 429
        elif draw < rate_limited + SERVER_ERROR_SHARE:
            status = rng.choice(_SERVER_ERRORS)
        elif draw < rate_limited + SERVER_ERROR_SHARE + CLIENT_ERROR_SHARE:
            status = rng.choice(_CLIENT_ERRORS)
        metadata = None
        draw = rng.random()
        for share, tags in profile.call_metadata:
            if draw < share:
                metadata = dict(tags)
                break
            draw -= share
        call_id = _call_id(rng, ts_us)
        if status == 200:
            call = successful_call(rng, shape, trace_input, trace_output)
            cost_nano = self.prices.cost_nano(route.model, ts_us, call.input_tokens,
                                              call.cached_input_tokens, call.output_tokens,
                                              cache_write_tokens=call.cache_write_tokens,
                                              units=call.units)
        else:
            # Failed calls carry no usage and are not billed.
            call = CallShape(0, 0, 0, 0, failed_call_latency_ms(rng, status), None, False)
            cost_nano = 0
        return CallRecord(
            id=call_id, ts_us=ts_us, model=route.model, call_type=call_type,
            api_key_id=key_id, model_category=route.category, endpoint=route.endpoint,
            status_code=status, input_tokens=call.input_tokens,
            output_tokens=call.output_tokens, cached_input_tokens=call.cached_input_tokens,
            reasoning_tokens=call.reasoning_tokens,
            total_tokens=call.input_tokens + call.output_tokens, cost_nano=cost_nano,
            latency_ms=call.latency_ms, ttft_ms=call.ttft_ms, estimated=call.estimated,
            metadata=metadata, cache_write_tokens=call.cache_write_tokens, units=call.units,
            unit=shape.unit if status == 200 else None,
            upstream_model=self.upstream_models[route.model] if status == 200 else None,
        )


def generate_calls(key_ids: Mapping[str, str], *, now_us: int, days: int = DEFAULT_DAYS,
                   seed: int = DEFAULT_SEED,
                   prices: PriceTable | None = None) -> Iterator[CallRecord]:
    """The demo's calls from ``days`` days before ``now_us`` until just before it, in time
    order. ``key_ids`` maps each demo key's name (:data:`DEMO_KEYS`) to its stored id.

    The same arguments give the same records, ids included. Costs come from ``prices``
    (default: the :data:`DEMO_ROUTES` prices), at the price in force at each call's time.
    """
    missing = [key.name for key in DEMO_KEYS if key.name not in key_ids]
    if missing:
        raise ValueError(f"key_ids: no id for the demo keys {', '.join(missing)}")
    if days < 1:
        raise ValueError("days: must be at least 1")
    rng = random.Random(seed)
    writer = _HourWriter(rng, demo_price_table() if prices is None else prices)
    spike = plan_spike(now_us)
    zone = ZoneInfo(LOCAL_ZONE)
    start_us = now_us - days * DAY_US
    day_factors: dict[tuple[str, int], float] = {}
    for hour_start in range(start_us // HOUR_US * HOUR_US, now_us, HOUR_US):
        local = datetime.fromtimestamp(hour_start / 1_000_000, UTC).astimezone(zone)
        local_day = local.toordinal()
        hour_calls: list[CallRecord] = []
        for profile in DEMO_KEYS:
            day_factor = day_factors.get((profile.name, local_day))
            if day_factor is None:
                day_factor = rng.lognormvariate(0.0, profile.day_to_day)
                day_factors[(profile.name, local_day)] = day_factor
            load = RHYTHM_WEIGHTS[profile.rhythm][local.weekday()][local.hour] * day_factor
            hourly = (profile.calls_per_day / 24 * load
                      * growth_factor(profile, hour_start, now_us))
            for model, share in profile.model_mix.items():
                count = _poisson(rng, hourly * share)
                injected = (hour_start == spike.start_us and profile.name == spike.key_name
                            and model == spike.model)
                if injected:
                    count += spike.extra_calls
                hour_calls.extend(writer.calls(hour_start, key_ids[profile.name], profile,
                                               ROUTES_BY_MODEL[model], count, load))
        hour_calls.sort(key=lambda record: (record.ts_us, record.id))
        for record in hour_calls:
            if start_us <= record.ts_us < now_us:
                yield record
