"""Where each key stands: what it used in its current quota period, at what trailing rate,
and when (at that rate) its token quota or cost budget runs out.

Quota periods are the gateway's (``gateway.limits``: calendar periods in UTC), and the usage
is read from the rollups the gateway's own counters start from, so the figures shown next to
a key are the ones its limits are enforced on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from tallygate.ledger.periods import next_period_start, period_of
from tallygate.store.database import Database
from tallygate.store.keys import StoredKey
from tallygate.store.usage import Aggregate, CallFilter, aggregate

US = 1_000_000
HOUR_US = 3600 * US
WINDOW_HOURS = 24  # the trailing window the rate is measured over
NEAR_LIMIT = 0.8  # a key that used this share of its quota or budget is near its limit
NEAR_EXPIRY = timedelta(days=7)
# A total quota never resets: running out within this horizon counts as "near its limit".
TOTAL_HORIZON = timedelta(days=7)
# Calls reported a little ahead of the clock still count in the current period.
_AHEAD_US = 86400 * US


@dataclass(frozen=True, slots=True)
class KeyStanding:
    """A key's current period and what it used in it; rates are per hour over the trailing
    ``WINDOW_HOURS``; ``runs_out_at_us`` only when that happens before the period ends."""

    period: str
    period_start_us: int | None  # None: the key's whole life ("total")
    period_end_us: int | None  # None: never resets
    tokens: int
    cost_nano: int
    tokens_per_hour: float
    cost_nano_per_hour: int
    quota_used: float | None
    budget_used: float | None
    runs_out_at_us: int | None
    runs_out_of: str | None
    exhausted: bool
    warnings: list[str] = field(default_factory=list)
    window_hours: int = WINDOW_HOURS

    @property
    def near_limit(self) -> bool:
        return any(w in self.warnings for w in ("quota_near", "budget_near", "quota_exhausted",
                                                "budget_exhausted", "runs_out_soon"))

    @property
    def near_expiry(self) -> bool:
        return "expires_soon" in self.warnings


def period_bounds(quota_period: str, now_us: int) -> tuple[int | None, int | None]:
    """The current quota period ``[start, end)`` in µs, exactly as the gateway counts it
    (calendar periods in UTC); ``(None, None)`` for a ``total`` quota."""
    if quota_period not in ("daily", "monthly"):
        return None, None
    now = now_us / US
    _, start = period_of(quota_period, now)
    end = next_period_start(quota_period, now)
    assert end is not None
    return start, int(end) * US


def _used(db: Database, ids: Sequence[str], start_us: int, end_us: int) -> dict[str, tuple[int,
                                                                                         int]]:
    rows = aggregate(db, Aggregate(start_us, end_us, CallFilter(api_key_ids=tuple(ids)),
                                   ("api_key_id",), measures=("total_tokens", "cost_nano")))
    return {row[2]: (int(row[3]), int(row[4])) for row in rows}


def key_standings(db: Database, keys: Sequence[StoredKey],
                  now_us: int) -> dict[str, KeyStanding]:
    """Every key's standing: one query per kind of quota period, one for the trailing rate."""
    if not keys:
        return {}
    used: dict[str, tuple[int, int]] = {}
    for period in sorted({key.quota_period for key in keys}):
        ids = [key.id for key in keys if key.quota_period == period]
        start, _ = period_bounds(period, now_us)
        used.update(_used(db, ids, start or 0, now_us + _AHEAD_US))
    window_start = now_us - WINDOW_HOURS * HOUR_US
    trailing = _used(db, [key.id for key in keys], window_start, now_us + _AHEAD_US)
    return {key.id: _standing(key, used.get(key.id, (0, 0)), trailing.get(key.id, (0, 0)),
                              now_us)
            for key in keys}


def _ratio(part: int, whole: int | None) -> float | None:
    # A budget below a nano-unit is stored as 0: used up, with no share to show.
    return None if not whole else round(part / whole, 6)


def _standing(key: StoredKey, used: tuple[int, int], trailing: tuple[int, int],
              now_us: int) -> KeyStanding:
    tokens, cost = used
    tokens_rate = trailing[0] / WINDOW_HOURS  # per hour
    cost_rate = trailing[1] / WINDOW_HOURS
    start, end = period_bounds(key.quota_period, now_us)
    warnings: list[str] = []
    ends: list[tuple[float, str]] = []
    exhausted = False
    for name, limit, spent, rate in (("quota", key.quota_tokens, tokens, tokens_rate),
                                     ("budget", key.budget_nano, cost, cost_rate)):
        if limit is None:
            continue
        if spent >= limit:
            exhausted = True
            warnings.append(f"{name}_exhausted")
            continue
        if spent >= NEAR_LIMIT * limit:
            warnings.append(f"{name}_near")
        if rate > 0:
            ends.append((now_us + (limit - spent) / rate * HOUR_US, name))
    runs_out_at: int | None = None
    runs_out_of: str | None = None
    if ends and not exhausted:
        at, what = min(ends)
        horizon = end if end is not None else now_us + TOTAL_HORIZON.days * 86400 * US
        if at < (end if end is not None else now_us + 3650 * 86400 * US):
            runs_out_at, runs_out_of = int(at), what
        if at < horizon:
            warnings.append("runs_out_soon")
    if key.expires_at is not None and now_us < key.expires_at <= now_us + int(
            NEAR_EXPIRY.total_seconds()) * US:
        warnings.append("expires_soon")
    return KeyStanding(
        period=key.quota_period, period_start_us=start, period_end_us=end, tokens=tokens,
        cost_nano=cost, tokens_per_hour=round(tokens_rate, 3),
        cost_nano_per_hour=round(cost_rate),
        quota_used=_ratio(tokens, key.quota_tokens), budget_used=_ratio(cost, key.budget_nano),
        runs_out_at_us=runs_out_at, runs_out_of=runs_out_of, exhausted=exhausted,
        warnings=warnings,
    )
