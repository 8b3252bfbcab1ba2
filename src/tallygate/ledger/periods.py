"""Quota periods: calendar periods in UTC (``daily`` from 00:00 UTC, ``monthly`` from the
1st, or ``total``). The ledger's forecasts and the gateway's limits both count by them, so
they live here, below both."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

US = 1_000_000


def period_of(quota_period: str, now: float) -> tuple[str, int]:
    """The period's name and its start (µs) for a quota counted ``daily``, ``monthly`` or
    in ``total``."""
    moment = datetime.fromtimestamp(now, UTC)
    if quota_period == "daily":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m-%d"), int(start.timestamp()) * US
    if quota_period == "monthly":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        return start.strftime("%Y-%m"), int(start.timestamp()) * US
    return "total", 0


def next_period_start(quota_period: str, now: float) -> float | None:
    """When a daily or monthly quota starts again (None for a total quota)."""
    moment = datetime.fromtimestamp(now, UTC)
    if quota_period == "daily":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0) + timedelta(days=1)
    elif quota_period == "monthly":
        year, month = (moment.year + 1, 1) if moment.month == 12 else (moment.year,
                                                                        moment.month + 1)
        start = datetime(year, month, 1, tzinfo=UTC)
    else:
        return None
    return start.timestamp()
