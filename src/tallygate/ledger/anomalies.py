"""Anomalies in the ledger: spikes, error bursts, and keys using a model for the first time.

**Spikes.** Per key and per model, each hour's (and each day's) calls and total tokens are
compared with that series' own trailing history by :func:`baseline.robust_score`: the median
and MAD of ``log(1 + x)`` over the same hour of the previous days (``hour_seasonality =
"daily"``), of the previous weeks (``"weekly"``), or simply the preceding hours (``"none"``);
days against the preceding days. A bucket is a spike when its score reaches ``threshold`` and
it exceeds the baseline by at least ``min_excess_calls`` calls (``min_excess_tokens`` tokens),
so that a quiet series going from 1 call to 4 is not an alarm.

**Error bursts.** An hour whose failed calls (status >= 400 except 429) number at least
``min_errors``, are at least ``min_error_rate`` of its calls, and at least
``error_rate_factor`` times the series' error rate over the preceding week.

**New models.** A key's first call of a model, when the key itself has been calling for at
least ``new_model_grace_hours`` (a new key trying its models is not news).

Everything is read from the rollups (plus raw records for the edges of a range), so it costs
the same whatever the number of calls. docs/anomalies.md has the method, its parameters and
its measured false-alarm rate.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from tallygate.domain.records import now_us as current_us
from tallygate.ledger.baseline import robust_score, seasonal_history
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import UsageQuery
from tallygate.ledger.timerange import (
    BadParameter,
    check_bucket_count,
    local_midnight,
    offset_segments,
)
from tallygate.store import keys as key_store
from tallygate.store.anomalies import first_call_at, first_use
from tallygate.store.usage import Aggregate, Bucketing, CallFilter, aggregate

KINDS = ("spike", "error_burst", "new_model")
GRANULARITIES = ("hour", "day")
SCOPES = ("api_key", "model")
METRICS = ("requests", "total_tokens")
SEASONALITIES = ("daily", "weekly", "none")
_DIMENSION = {"api_key": "api_key_id", "model": "model"}
US = 1_000_000
HOUR_S = 3600
DAY_S = 86400
_EPOCH = date(1970, 1, 1)


@dataclass(frozen=True, slots=True)
class AnomalyParams:
    """Every knob of the detection; docs/anomalies.md explains each and its default."""

    threshold: float = 5.0
    min_sigma: float = 0.15
    hour_seasonality: str = "daily"
    hour_baseline_days: int = 14
    day_seasonality: str = "none"
    day_baseline_days: int = 28
    min_history_share: float = 0.5
    min_excess_calls: int = 20
    min_excess_tokens: int = 30_000
    min_errors: int = 10
    min_error_rate: float = 0.25
    error_rate_factor: float = 5.0
    error_baseline_hours: int = 168
    new_model_grace_hours: int = 24
    neighbours: int = 0

    def __post_init__(self) -> None:
        for name in ("hour_seasonality", "day_seasonality"):
            if getattr(self, name) not in SEASONALITIES:
                raise ValueError(f"{name}: must be one of {', '.join(SEASONALITIES)}")

    def history(self, granularity: str) -> tuple[int, int, int]:
        """(period, cycles, spread) of the buckets a bucket is compared with."""
        if granularity == "hour":
            days = self.hour_baseline_days
            return {"daily": (24, days, self.neighbours),
                    "weekly": (168, max(4, days // 7), self.neighbours),
                    "none": (1, 48, 0)}[self.hour_seasonality]
        days = self.day_baseline_days
        return (7, max(1, days // 7), 0) if self.day_seasonality == "weekly" else (1, days, 0)


@dataclass(frozen=True, slots=True)
class Anomaly:
    kind: str  # spike, error_burst, new_model
    scope: str  # api_key or model: whose series it was found in
    subject: str  # the key's id or the model's name
    start_us: int
    end_us: int
    granularity: str | None = None  # hour or day (None for new_model)
    metric: str | None = None  # requests, total_tokens, error_rate
    value: float | None = None
    baseline: float | None = None
    score: float | None = None
    model: str | None = None  # new_model: the model
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def id(self) -> str:
        """Stable: the same anomaly found again (by another process, on another day) has the
        same id, which is how a webhook sends each one once."""
        text = "|".join(str(part) for part in (self.kind, self.scope, self.subject,
                                               self.model, self.granularity, self.start_us,
                                               self.metric))
        return hashlib.sha256(text.encode()).hexdigest()[:24]

    def as_dict(self, tz: ZoneInfo, key_names: dict[str, str]) -> dict[str, Any]:
        key = self.subject if self.scope == "api_key" else None
        return {
            "id": self.id, "kind": self.kind, "scope": self.scope,
            "api_key_id": key, "api_key_name": None if key is None else key_names.get(key),
            "model": self.subject if self.scope == "model" else self.model,
            "granularity": self.granularity,
            "start": _local(self.start_us, tz), "end": _local(self.end_us, tz),
            "metric": self.metric, "value": self.value, "baseline": self.baseline,
            "score": self.score, "message": self.message(key_names), **self.details,
        }

    def message(self, key_names: dict[str, str]) -> str:
        who = (f"key {key_names.get(self.subject, self.subject)}" if self.scope == "api_key"
               else f"model {self.subject}")
        if self.kind == "new_model":
            return f"{who} called {self.model} for the first time"
        if self.kind == "error_burst":
            return (f"{who}: {self.details.get('failed_calls')} of "
                    f"{self.details.get('calls')} calls failed in one hour")
        what = "calls" if self.metric == "requests" else "tokens"
        return (f"{who}: {self.value:,.0f} {what} in one {self.granularity}, "
                f"against a usual {self.baseline:,.0f}")


def _local(ts_us: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ts_us // US, UTC).astimezone(tz).isoformat()


# -- the grids buckets live on ---------------------------------------------------------------

class _HourGrid:
    """Hours of the zone's wall clock (UTC hours, or half-hours past them in +05:30)."""

    name = "hour"

    def __init__(self, tz: ZoneInfo, at_s: int) -> None:
        offset = datetime.fromtimestamp(at_s, UTC).astimezone(tz).utcoffset()
        self.phase = int(offset.total_seconds()) % HOUR_S if offset is not None else 0

    def index(self, t_s: int) -> int:
        return (t_s + self.phase) // HOUR_S

    def start_s(self, index: int) -> int:
        return index * HOUR_S - self.phase

    def bucketing(self, start_s: int, end_s: int) -> Bucketing:
        return Bucketing(HOUR_S, ((start_s, self.phase),))


class _DayGrid:
    """Calendar days in the zone, 23 or 25 hours long across daylight-saving changes."""

    name = "day"

    def __init__(self, tz: ZoneInfo) -> None:
        self.tz = tz

    def index(self, t_s: int) -> int:
        return (datetime.fromtimestamp(t_s, UTC).astimezone(self.tz).date() - _EPOCH).days

    def start_s(self, index: int) -> int:
        return int(local_midnight(_EPOCH + timedelta(days=index), self.tz).timestamp())

    def bucketing(self, start_s: int, end_s: int) -> Bucketing:
        return Bucketing(DAY_S, offset_segments(self.tz, start_s, end_s))


_Grid = _HourGrid | _DayGrid
# subject → bucket index → (calls, total_tokens, failed_calls)
_Cells = dict[str, dict[int, tuple[int, int, int]]]


def _load(ledger: Ledger, grid: _Grid, scope: str, call_filter: CallFilter, first: int,
          end_us: int) -> _Cells:
    start_s = grid.start_s(first)
    rows = aggregate(ledger.db, Aggregate(
        start_s * US, end_us, call_filter, (_DIMENSION[scope],),
        grid.bucketing(start_s, -(-end_us // US)),
        measures=("calls", "total_tokens", "failed_calls")))
    cells: _Cells = {}
    for index, _offset, subject, calls, tokens, failed in rows:
        if scope == "api_key" and not subject:
            continue  # calls without a key have no key series
        cells.setdefault(subject, {})[int(index)] = (int(calls), int(tokens), int(failed))
    return cells


# -- detection -------------------------------------------------------------------------------

def find_anomalies(ledger: Ledger, query: UsageQuery, params: AnomalyParams | None = None, *,
                   kinds: Sequence[str] = KINDS, granularities: Sequence[str] = GRANULARITIES,
                   scopes: Sequence[str] = SCOPES,
                   now_us: int | None = None) -> list[Anomaly]:
    """Every anomaly whose bucket touches the query's range, among the calls its filters
    select, in time order."""
    params = params or AnomalyParams()
    now = current_us() if now_us is None else now_us
    r = query.range
    found: list[Anomaly] = []
    for granularity in granularities:
        if "spike" not in kinds and ("error_burst" not in kinds or granularity != "hour"):
            continue
        check_bucket_count(granularity, r)
        grid: _Grid = (_HourGrid(r.tz, r.end_us // US) if granularity == "hour"
                       else _DayGrid(r.tz))
        first = grid.index(r.start_us // US)
        last = min(grid.index((r.end_us - 1) // US), grid.index(now // US))
        if last < first:
            continue
        period, cycles, spread = params.history(granularity)
        lookback = period * cycles + spread
        if granularity == "hour" and "error_burst" in kinds:
            lookback = max(lookback, params.error_baseline_hours)
        for scope in scopes:
            cells = _load(ledger, grid, scope, query.filter, first - lookback,
                          min(r.end_us, now + 1))
            for subject, by_index in cells.items():
                if "spike" in kinds:
                    found.extend(_spikes(grid, scope, subject, by_index, first, last, params))
                if "error_burst" in kinds and granularity == "hour":
                    found.extend(_error_bursts(grid, scope, subject, by_index, first, last,
                                               params))
    if "new_model" in kinds and "api_key" in scopes:
        found.extend(_new_models(ledger, query, params, now))
    found.sort(key=lambda a: (a.start_us, a.kind, a.scope, a.subject, a.metric or ""))
    return found


def _dense(by_index: dict[int, tuple[int, int, int]], base: int, last: int,
           position: int) -> list[float]:
    return [float(by_index.get(i, (0, 0, 0))[position]) for i in range(base, last + 1)]


def _spikes(grid: _Grid, scope: str, subject: str, by_index: dict[int, tuple[int, int, int]],
            first: int, last: int, params: AnomalyParams) -> Iterable[Anomaly]:
    base = min(by_index)
    born = min((i for i, cell in by_index.items() if cell[0]), default=last + 1)
    period, cycles, spread = params.history(grid.name)
    needed = params.min_history_share * cycles * (2 * spread + 1)
    for metric, position, min_excess in (("requests", 0, params.min_excess_calls),
                                         ("total_tokens", 1, params.min_excess_tokens)):
        series = _dense(by_index, base, last, position)
        for index in range(max(first, base), last + 1):
            value = series[index - base]
            if value < min_excess:
                continue
            history = seasonal_history(series, index - base, period=period, cycles=cycles,
                                       spread=spread, first=born - base)
            if len(history) < needed:
                continue
            score = robust_score(value, history, params.min_sigma, max(1, min_excess))
            if score.z >= params.threshold and value - score.baseline >= min_excess:
                yield Anomaly("spike", scope, subject, grid.start_s(index) * US,
                              grid.start_s(index + 1) * US, grid.name, metric, value,
                              round(score.baseline, 1), round(score.z, 2))


def _error_bursts(grid: _Grid, scope: str, subject: str,
                  by_index: dict[int, tuple[int, int, int]], first: int, last: int,
                  params: AnomalyParams) -> Iterable[Anomaly]:
    for index in range(first, last + 1):
        calls, _tokens, failed = by_index.get(index, (0, 0, 0))
        if failed < params.min_errors or failed < params.min_error_rate * calls:
            continue
        before = [by_index.get(i, (0, 0, 0))
                  for i in range(index - params.error_baseline_hours, index)]
        past_calls = sum(cell[0] for cell in before)
        past_rate = sum(cell[2] for cell in before) / past_calls if past_calls else 0.0
        rate = failed / calls
        if rate < params.error_rate_factor * past_rate:
            continue
        yield Anomaly("error_burst", scope, subject, grid.start_s(index) * US,
                      grid.start_s(index + 1) * US, "hour", "error_rate", round(rate, 4),
                      round(past_rate, 4), None,
                      details={"calls": calls, "failed_calls": failed})


def _new_models(ledger: Ledger, query: UsageQuery, params: AnomalyParams,
                now: int) -> Iterable[Anomaly]:
    r = query.range
    firsts = first_use(ledger.db, query.filter.api_key_ids)
    key_start: dict[str, int] = {}
    for (key, _model), first in firsts.items():
        key_start[key] = min(first, key_start.get(key, first))
    grace = params.new_model_grace_hours * HOUR_S
    quarter = 900  # the rollup grain the first use is known to
    end_us = min(r.end_us, now + 1)
    for (key, model), first in sorted(firsts.items()):
        if query.filter.models and model not in query.filter.models:
            continue
        if (first + quarter) * US <= r.start_us or first * US >= end_us:
            continue
        if first - key_start[key] < grace:
            continue
        exact = first_call_at(ledger.db, key, model, first * US, (first + quarter) * US)
        start = first * US if exact is None else exact
        if r.start_us <= start < end_us:
            yield Anomaly("new_model", "api_key", key, start, start, model=model,
                          details={"key_first_call": _utc(key_start[key] * US)})


def _utc(ts_us: int) -> str:
    return datetime.fromtimestamp(ts_us // US, UTC).isoformat().replace("+00:00", "Z")


def anomalies_answer(ledger: Ledger, query: UsageQuery, anomalies: Sequence[Anomaly],
                     params: AnomalyParams) -> dict[str, Any]:
    """The API's answer: the window, the parameters used, and the anomalies."""
    names = key_store.key_names(ledger.db)
    return {**query.window(), "parameters": asdict(params),
            "data": [a.as_dict(query.range.tz, names) for a in anomalies]}


def parse_choices(values: Sequence[str] | None, allowed: tuple[str, ...],
                  param: str) -> tuple[str, ...]:
    chosen: list[str] = []
    for value in values or allowed:
        for part in value.split(","):
            part = part.strip()
            if part not in allowed:
                raise BadParameter(param, f"{part!r} is not one of {', '.join(allowed)}")
            if part not in chosen:
                chosen.append(part)
    return tuple(chosen)
