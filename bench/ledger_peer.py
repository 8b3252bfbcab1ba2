"""The peer: a usage dashboard answered the way log-table gateways answer it.

One API and LiteLLM's usage page keep one row per call and compute their dashboards with
GROUP BY over that log table. This is the same design on tallygate's own ``calls`` table (and
its ``ts`` and ``api_key_id, ts`` indexes): the summary cards for the range and the previous
period, and requests per model per local day, each computed in SQL over the raw records.
It answers with the same numbers as :func:`tallygate.ledger.statistics.usage_summary` and
``usage_trend``; only where they come from differs.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement, and_, case, func, literal, select

from tallygate.domain.money import to_nano
from tallygate.ledger.timerange import TimeRange, bucketing_for
from tallygate.store.database import Database
from tallygate.store.schema import calls

US = 1_000_000
_STATUS = calls.c.status_code


@dataclass(frozen=True, slots=True)
class PeerAnswer:
    cards: dict[str, int]  # current period
    previous: dict[str, int]
    trend: dict[tuple[int, str], int]  # (local day, model) -> requests


def _in_range(start_us: int, end_us: int, key: str | None) -> list[ColumnElement[bool]]:
    conditions = [calls.c.ts >= start_us, calls.c.ts < end_us]
    if key is not None:
        conditions.append(calls.c.api_key_id == key)
    return conditions


def _cards(db: Database, start_us: int, end_us: int, key: str | None) -> dict[str, int]:
    query = select(
        func.count(),
        func.sum(case((calls.c.call_type == "service", 1), else_=0)),
        func.sum(case((calls.c.call_type == "internal", 1), else_=0)),
        func.sum(case((_STATUS < 400, 1), else_=0)),
        func.sum(case((and_(_STATUS >= 400, _STATUS != 429), 1), else_=0)),
        func.sum(case((_STATUS == 429, 1), else_=0)),
        func.sum(calls.c.input_tokens),
        func.sum(calls.c.output_tokens),
        func.sum(calls.c.cached_input_tokens),
        func.sum(calls.c.total_tokens),
        func.sum(calls.c.cost_nano),
    ).where(*_in_range(start_us, end_us, key))
    names = ("model_calls", "service_calls", "internal_calls", "success_calls",
             "failed_calls", "rate_limited_calls", "input_tokens", "output_tokens",
             "cached_input_tokens", "total_tokens", "cost_nano")
    with db.read() as conn:
        row = conn.execute(query).one()
    return {name: int(value or 0) for name, value in zip(names, row, strict=True)}


def _trend(db: Database, time_range: TimeRange, key: str | None) -> dict[tuple[int, str], int]:
    segments = bucketing_for("day", time_range).segments
    seconds = calls.c.ts // US
    offset: ColumnElement[Any] = literal(segments[-1][1])
    if len(segments) > 1:
        offset = case(*((seconds < segments[i + 1][0], segments[i][1])
                        for i in range(len(segments) - 1)), else_=segments[-1][1])
    inner = select(((seconds + offset) // 86400).label("day"), calls.c.model).where(
        *_in_range(time_range.start_us, time_range.end_us, key)).subquery()
    query = select(inner.c.day, inner.c.model, func.count()).group_by(inner.c.day,
                                                                      inner.c.model)
    with db.read() as conn:
        return {(int(day), model): int(count) for day, model, count in conn.execute(query)}


def peer_dashboard(db: Database, time_range: TimeRange, key: str | None) -> PeerAnswer:
    r = time_range
    return PeerAnswer(_cards(db, r.start_us, r.end_us, key),
                      _cards(db, r.previous_start_us, r.previous_end_us, key),
                      _trend(db, r, key))


def same_numbers(peer: PeerAnswer, summary: dict[str, Any], trend: dict[str, Any]) -> bool:
    """Whether tallygate's answer (``usage_summary``, ``usage_trend``) equals the peer's."""
    for cards, mine in ((summary["cards"], peer.cards), (summary["previous"], peer.previous)):
        for name, value in mine.items():
            if name == "cost_nano":
                cost = cards.get("cost")
                stored = 0 if cost is None else to_nano(Decimal(cost["amount"]))
                if stored != value:
                    return False
            elif (cards.get(name) or 0) != value:
                return False
    epoch = date(1970, 1, 1)
    day_index = [(date.fromisoformat(label) - epoch).days for label in trend["buckets"]]
    theirs: dict[tuple[int, str], int] = {}
    for series in trend["series"]:
        for day, value in zip(day_index, series["values"], strict=True):
            if value is not None:
                theirs[(day, series["name"])] = value
    return theirs == peer.trend
