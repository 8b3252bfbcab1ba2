"""Keeping the ledger honest and bounded: retention, and checking rollups against raw records."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tallygate.ledger.service import Ledger
from tallygate.store.retention import purge_before, purge_floor_us
from tallygate.store.rollup_check import (
    RollupKey,
    compare_rollups,
    differences,
    raw_time_span,
    repair_rollups,
)
from tallygate.store.schema import TIERS, rollup_15m

DAY_S = 86400
US = 1_000_000


@dataclass(frozen=True, slots=True)
class PurgeResult:
    raw_deleted: int
    minute_rows_deleted: int


def purge_expired(ledger: Ledger, now_s: float | None = None) -> PurgeResult:
    """Drop raw records past ``raw_retention_days`` (if set) and minute rollups past theirs.
    The coarser tiers are never purged, so every figure outlives its raw records.

    Raw records go below the purge floor, first raised to the UTC midnight at or before
    ``now - raw_retention_days`` (so up to a day more than the retention is kept), in short
    transactions; the floor never moves back, whatever the retention says later."""
    now = time.time() if now_s is None else now_s
    raw, minutes = purge_before(ledger.db, raw_before_us=ledger.raw_floor_us(now),
                                minute_before_s=ledger.minute_floor_s(now) - 60)
    return PurgeResult(raw, minutes)


@dataclass(frozen=True, slots=True)
class Difference:
    table: str
    key: RollupKey
    stored: tuple[int, ...] | None  # None: the row is missing
    rebuilt: tuple[int, ...] | None  # None: the row should not exist


@dataclass(slots=True)
class CheckReport:
    checked_from_s: int | None = None
    checked_until_s: int | None = None
    rows_compared: int = 0
    differences: list[Difference] = field(default_factory=list)
    repaired: int = 0

    @property
    def ok(self) -> bool:
        return not self.differences


def check_rollups(ledger: Ledger, *, repair: bool = False,
                  progress: Callable[[int, int], None] | None = None) -> CheckReport:
    """Rebuild every rollup tier from the raw records, a UTC day at a time, and compare.

    Only buckets whose raw records are all still there are compared: from the recorded purge
    floor (from the oldest raw record when nothing was ever purged) and, for minutes, within
    the minute window. With ``repair`` a tier and day found wrong is rebuilt again and
    rewritten in one transaction that holds new records back, so repairing under live
    traffic loses none of them; that transaction reads the floor again, so a purge in
    between cannot make it rewrite what was purged.
    """
    report = CheckReport()
    span = raw_time_span(ledger.db)
    if span is None:
        return report
    first_s, last_s = span
    # Raw records are complete from the recorded purge floor on (a UTC midnight), and only
    # there: neither today's retention setting nor the oldest raw record says so.
    floor_s = purge_floor_us(ledger.db) // US
    minute_floor = ledger.minute_floor_s()
    windows: dict[str, tuple[int, int]] = {}
    for tier in TIERS:
        grain = tier.grain_s
        start = -(-floor_s // grain) * grain if floor_s else first_s // grain * grain
        if tier.windowed:
            start = max(start, minute_floor)
        windows[tier.name] = (start, (last_s // grain + 1) * grain)
    report.checked_from_s, report.checked_until_s = windows[rollup_15m.name]
    first_day = min(start for start, _ in windows.values()) // DAY_S
    last_day = max(end for _, end in windows.values()) // DAY_S
    days = max(1, last_day - first_day + 1)
    for day in range(days):
        day_lo = (first_day + day) * DAY_S
        for tier in TIERS:
            start, end = windows[tier.name]
            lo, hi = max(day_lo, start), min(day_lo + DAY_S, end)
            if lo >= hi:
                continue
            rebuilt, stored = compare_rollups(ledger.db, tier.name, lo, hi)
            report.rows_compared += len(rebuilt.keys() | stored.keys())
            wrong = differences(rebuilt, stored)
            for key in sorted(wrong):
                report.differences.append(Difference(tier.name, key, *wrong[key]))
            if repair and wrong:
                # Read again and written in one locked transaction: the rows found above
                # may have moved on since (live traffic).
                report.repaired += len(repair_rollups(ledger.db, tier.name, lo, hi))
        if progress is not None:
            progress(day + 1, days)
    return report
