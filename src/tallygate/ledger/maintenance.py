"""Keeping the ledger honest and bounded: retention, and checking rollups against raw records."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from tallygate.ledger.rollups import GRAIN_1M, GRAIN_15M
from tallygate.ledger.service import Ledger
from tallygate.store.calls import purge_before
from tallygate.store.rollup_check import (
    RollupKey,
    raw_time_span,
    rollups_from_raw,
    stored_rollups,
    write_rollups,
)

DAY_S = 86400


@dataclass(frozen=True, slots=True)
class PurgeResult:
    raw_deleted: int
    minute_rows_deleted: int


def purge_expired(ledger: Ledger, now_s: float | None = None) -> PurgeResult:
    """Drop raw records past ``raw_retention_days`` (if set) and minute rollups past theirs.
    The 15-minute rollups are never purged, so every figure outlives its raw records."""
    now = time.time() if now_s is None else now_s
    raw_before = None
    if ledger.raw_retention_days:
        raw_before = int((now - ledger.raw_retention_days * 86400) * 1_000_000)
    raw, minutes = purge_before(ledger.db, raw_before_us=raw_before,
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
    """Rebuild both rollup grains from the raw records, a day at a time, and compare.

    Only buckets whose raw records are all still there are compared: from the first whole
    bucket after the oldest raw record (retention may have cut into the one before) and, for
    minutes, within the minute window. With ``repair`` the stored rows are replaced by the
    rebuilt ones.
    """
    report = CheckReport()
    span = raw_time_span(ledger.db)
    if span is None:
        return report
    first_s, last_s = span
    start = -(-first_s // GRAIN_15M) * GRAIN_15M if ledger.raw_retention_days else \
        first_s // GRAIN_15M * GRAIN_15M
    end = (last_s // GRAIN_15M + 1) * GRAIN_15M
    report.checked_from_s, report.checked_until_s = start, end
    minute_floor = ledger.minute_floor_s()
    days = max(1, -(-(end - start) // DAY_S))
    for day in range(days):
        lo = start + day * DAY_S
        hi = min(lo + DAY_S, end)
        for table, grain in (("rollup_15m", GRAIN_15M), ("rollup_1m", GRAIN_1M)):
            window_lo = lo if grain == GRAIN_15M else max(lo, minute_floor)
            if window_lo >= hi:
                continue
            rebuilt = rollups_from_raw(ledger.db, grain, window_lo, hi)
            stored = stored_rollups(ledger.db, table, window_lo, hi)
            report.rows_compared += len(rebuilt.keys() | stored.keys())
            wrong = {key for key in rebuilt.keys() | stored.keys()
                     if rebuilt.get(key) != stored.get(key)}
            for key in sorted(wrong):
                report.differences.append(Difference(table, key, stored.get(key),
                                                     rebuilt.get(key)))
            if repair and wrong:
                report.repaired += write_rollups(ledger.db, table,
                                                 {key: rebuilt.get(key) for key in wrong})
        if progress is not None:
            progress(day + 1, days)
    return report
