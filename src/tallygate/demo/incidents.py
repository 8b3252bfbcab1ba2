"""Known incidents injected into demo traffic, so anomaly detection can be measured: every
injected incident should be found, and nothing else in normal traffic should be flagged.

An incident is one key misbehaving: a burst of calls, of tokens (a few huge prompts), a whole
day of extra traffic, a burst of failed calls, or a first call of a model it never used. Its
size is relative to the key's own mean volume (:data:`profiles.DEMO_KEYS`), like the demo's
own spike (:func:`generate.plan_spike`).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, replace

from tallygate.demo.generate import DAY_US, HOUR_US, growth_factor
from tallygate.demo.profiles import DEMO_KEYS, KEYS_BY_NAME
from tallygate.demo.routes import ROUTES_BY_MODEL
from tallygate.domain.records import CallRecord
from tallygate.ledger.anomalies import Anomaly
from tallygate.ledger.service import Ledger
from tallygate.store.usage import Aggregate, CallFilter, aggregate, iter_calls

KINDS = ("calls", "tokens", "day", "errors", "new_model")
# What anomaly detection should report for each kind of incident.
EXPECTED = {"calls": "spike", "tokens": "spike", "day": "spike", "errors": "error_burst",
            "new_model": "new_model"}
MAX_TOKENS_PER_CALL = 200_000


@dataclass(frozen=True, slots=True)
class Incident:
    kind: str
    key_name: str
    model: str
    start_us: int
    end_us: int
    extra_calls: int
    multiplier: float


def _mean_hourly(key_name: str, at_us: int, now_us: int) -> float:
    profile = KEYS_BY_NAME[key_name]
    return profile.calls_per_day / 24 * growth_factor(profile, at_us, now_us)


def plan_incidents(rng: random.Random, *, now_us: int, first_us: int, kinds: Sequence[str],
                   multiplier: float = 10.0, avoid_us: Sequence[int] = ()) -> list[Incident]:
    """One incident of each of ``kinds``, each on its own UTC day in ``[first_us, now_us)``
    (none on a day of ``avoid_us``), at a random key, model and hour."""
    first_day = -(-first_us // DAY_US)
    last_day = now_us // DAY_US - 1
    taken = {t // DAY_US for t in avoid_us}
    days = [d for d in range(first_day, last_day) if d not in taken]
    rng.shuffle(days)
    if len(days) < len(kinds):
        raise ValueError("kinds: more incidents than whole days to put them on")
    incidents = []
    for kind, day in zip(kinds, days, strict=False):
        if kind == "new_model":
            candidates = [(k.name, m) for k in DEMO_KEYS for m in ROUTES_BY_MODEL
                          if m not in k.model_mix]
            key_name, model = rng.choice(candidates)
        else:
            profile = rng.choice(DEMO_KEYS)
            key_name, model = profile.name, rng.choice(sorted(profile.model_mix))
        hour = rng.randrange(24)
        incidents.append(incident(kind, key_name, model, day * DAY_US + hour * HOUR_US,
                                  now_us=now_us, multiplier=multiplier))
    return incidents


def incident(kind: str, key_name: str, model: str, at_us: int, *, now_us: int,
             multiplier: float = 10.0) -> Incident:
    """An incident of ``kind`` at ``at_us`` (its hour; a ``day`` incident covers the UTC day),
    sized relative to the key's mean volume then."""
    if kind == "day":
        start, end = at_us // DAY_US * DAY_US, (at_us // DAY_US + 1) * DAY_US
    else:
        start = at_us // HOUR_US * HOUR_US
        end = start + HOUR_US
    mean = _mean_hourly(key_name, start, now_us)
    extra = {
        "calls": max(30, round((multiplier - 1) * mean)),
        "tokens": max(10, round(mean)),
        "day": max(48, round((multiplier - 1) * mean * 24)),
        "errors": max(20, round(mean)),
        "new_model": 10,
    }[kind]
    return Incident(kind, key_name, model, start, end, extra, multiplier)


def _template(ledger: Ledger, key_id: str, model: str, before_us: int) -> CallRecord:
    """A successful call of the model shortly before, by this key if it ever called it."""
    for keys in ((key_id,), ()):
        for record in iter_calls(ledger.db, CallFilter(api_key_ids=keys, models=(model,)),
                                 0, before_us, limit=200):
            if record.status_code == 200:
                return record
    raise LookupError(f"no call of {model} to copy")


def incident_records(incident: Incident, key_id: str, template: CallRecord,
                     rng: random.Random, *, internal: bool,
                     tokens_per_call: int = 0) -> Iterator[CallRecord]:
    span = incident.end_us - incident.start_us
    for n in range(incident.extra_calls):
        ts = incident.start_us + (span * n + rng.randrange(span)) // incident.extra_calls
        record = replace(template, id=f"incident-{incident.kind}-{incident.start_us}-{n}",
                         ts_us=ts, api_key_id=key_id, metadata={"incident": incident.kind},
                         call_type="internal" if internal else template.call_type)
        if incident.kind == "errors":
            record = replace(record, status_code=rng.choice((500, 502, 503)), input_tokens=0,
                             output_tokens=0, cached_input_tokens=0, reasoning_tokens=0,
                             total_tokens=0, cost_nano=0, cache_write_tokens=0, units=0,
                             unit=None, upstream_model=None)
        elif incident.kind == "tokens":
            inputs = min(MAX_TOKENS_PER_CALL, tokens_per_call * 3 // 4)
            outputs = min(MAX_TOKENS_PER_CALL, tokens_per_call - inputs)
            record = replace(record, input_tokens=inputs, output_tokens=outputs,
                             cached_input_tokens=0, reasoning_tokens=0, cache_write_tokens=0,
                             total_tokens=inputs + outputs)
        yield record


def _mean_hourly_tokens(ledger: Ledger, key_id: str, before_us: int) -> float:
    week = 7 * DAY_US
    rows = aggregate(ledger.db, Aggregate(before_us - week, before_us,
                                          CallFilter(api_key_ids=(key_id,)),
                                          measures=("total_tokens",)))
    return float(sum(row[2] for row in rows)) / (7 * 24)


def inject(ledger: Ledger, incidents: Sequence[Incident], key_ids: Mapping[str, str],
           seed: int = 0) -> int:
    """Store every incident's extra calls; returns how many."""
    rng = random.Random(seed)
    stored = 0
    for incident in incidents:
        key_id = key_ids[incident.key_name]
        template = _template(ledger, key_id, incident.model, incident.start_us)
        # A burst of tokens: (multiplier - 1) times the key's mean hourly tokens of the
        # week before, in a handful of huge calls.
        hourly_tokens = _mean_hourly_tokens(ledger, key_id, incident.start_us)
        per_call = round((incident.multiplier - 1) * hourly_tokens / incident.extra_calls)
        records = [replace(r, cost_nano=ledger.cost_of(
                       r.model, r.ts_us, r.input_tokens, r.cached_input_tokens,
                       r.output_tokens, r.status_code, r.api_key_id,
                       cache_write_tokens=r.cache_write_tokens, units=r.units))
                   for r in incident_records(incident, key_id, template, rng,
                                             internal=KEYS_BY_NAME[incident.key_name].internal,
                                             tokens_per_call=per_call)]
        stored += ledger.store(records).accepted
    return stored


def explains(incident: Incident, key_id: str, anomaly: Anomaly) -> bool:
    """Whether ``anomaly`` is this incident showing: in its key's or its model's series,
    in a bucket that overlaps it."""
    if anomaly.kind == "new_model":
        return (incident.kind == "new_model" and anomaly.subject == key_id
                and anomaly.model == incident.model)
    subject = key_id if anomaly.scope == "api_key" else incident.model
    overlaps = anomaly.start_us < incident.end_us and incident.start_us < anomaly.end_us
    return anomaly.subject == subject and overlaps


@dataclass(frozen=True, slots=True)
class Evaluation:
    found: list[Incident]
    missed: list[Incident]
    false_alarms: list[Anomaly]  # anomalies no incident explains


def evaluate(anomalies: Sequence[Anomaly], incidents: Sequence[Incident],
             key_ids: Mapping[str, str]) -> Evaluation:
    found, missed = [], []
    for incident in incidents:
        expected = EXPECTED[incident.kind]
        if any(a.kind == expected and explains(incident, key_ids[incident.key_name], a)
               for a in anomalies):
            found.append(incident)
        else:
            missed.append(incident)
    unexplained = [a for a in anomalies
                   if not any(explains(i, key_ids[i.key_name], a) for i in incidents)]
    return Evaluation(found, missed, unexplained)
