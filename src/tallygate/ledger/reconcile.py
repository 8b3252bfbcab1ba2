"""Reconciliation: the ledger against a provider's own report, per UTC day x upstream model.

The provider's buckets are UTC days, so the ledger is summed the same way, over the calls of
the routes whose ``provider`` is the one reconciled (every call type: an internal key's calls
are billed too), read from the per-UTC-day upstream-model rollups (exact, and kept after raw
records are purged). A call recorded without the upstream's model counts under its route's
``upstream_model`` (or public name). Our ``requests`` are calls answered below 400 (refusals
and upstream failures are not billed; a call whose client left is, so 499s make it differ);
tokens and cost are those of every call.

Each cell (one measure of one day x model) is ``match`` (equal), ``within_tolerance`` (apart
by at most ``tolerance`` of the larger figure), ``mismatch``, ``missing_here`` (the provider
billed a day x model the ledger has no call for) or ``missing_there`` (the reverse, or a
cost the provider's cost report does not attribute to that model). Today is left out: both
sides are still filling it (docs/reconciliation.md).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from tallygate.domain.money import format_amount, to_nano
from tallygate.domain.records import format_ts, now_us
from tallygate.ledger.service import Ledger
from tallygate.ledger.timerange import BadParameter
from tallygate.providers.report import MEASURES, ProviderReport
from tallygate.store.usage import Aggregate, Bucketing, CallFilter, aggregate

if TYPE_CHECKING:
    from tallygate.config import Provider

STATUSES = ("match", "within_tolerance", "mismatch", "missing_here", "missing_there")
# A row's status is its worst cell's.
_SEVERITY = {"match": 0, "within_tolerance": 1, "missing_there": 2, "missing_here": 2,
             "mismatch": 3}
DAY_S = 86400
_NOTHING = (None, 0, "0.00")
US = 1_000_000
MAX_DAYS = 366
_PERIOD = re.compile(r"^(\d{1,3})d$")
# Ledger measure behind each compared measure (cost in nano-units).
_LEDGER_MEASURES = {"requests": "success_calls", "input_tokens": "input_tokens",
                    "cached_input_tokens": "cached_input_tokens",
                    "cache_write_tokens": "cache_write_tokens",
                    "output_tokens": "output_tokens", "cost": "cost_nano"}


def days_of_period(period: str, today: date | None = None) -> tuple[date, date]:
    """``Nd``: the N whole UTC days before today (today, still filling, left out)."""
    match = _PERIOD.match(period or "")
    days = int(match.group(1)) if match else 0
    if not 1 <= days <= MAX_DAYS:
        raise BadParameter("period", f"must be Nd, N whole UTC days before today (1 to "
                                     f"{MAX_DAYS}), e.g. 30d")
    end = today or datetime.now(UTC).date()
    return end - timedelta(days=days), end


@dataclass(slots=True)
class LedgerDay:
    """The ledger's figures of one UTC day x upstream model (cost in nano-units)."""

    figures: dict[str, int] = field(default_factory=lambda: dict.fromkeys(MEASURES, 0))
    estimated_calls: int = 0
    models: set[str] = field(default_factory=set)


def ledger_days(ledger: Ledger, upstream_of: Mapping[str, str], start: date,
                end: date) -> dict[tuple[date, str], LedgerDay]:
    """Sums per (UTC day, upstream model) over the calls of the public models in
    ``upstream_of`` (public model -> the upstream name a call without one counts under)."""
    if not upstream_of:
        return {}
    start_s, end_s = _unix(start), _unix(end)
    measures = (*_LEDGER_MEASURES.values(), "estimated_calls")
    rows = aggregate(ledger.db, Aggregate(
        start_s * US, end_s * US, CallFilter(models=tuple(sorted(upstream_of))),
        ("model", "upstream_model"), Bucketing(DAY_S, ((start_s, 0),)), measures=measures))
    out: dict[tuple[date, str], LedgerDay] = {}
    for bucket, _offset, model, upstream, *sums in rows:
        day = date(1970, 1, 1) + timedelta(days=int(bucket))
        cell = out.setdefault((day, upstream or upstream_of[model]), LedgerDay())
        cell.models.add(model)
        for name, value in zip(MEASURES, sums, strict=False):
            cell.figures[name] += int(value)
        cell.estimated_calls += int(sums[-1])
    return out


def compare(ours: dict[tuple[date, str], LedgerDay], theirs: ProviderReport,
            tolerance: Decimal) -> list[dict[str, Any]]:
    """One row per day x model either side has, in day then model order."""
    rows = []
    for day, model in sorted(set(ours) | set(theirs.days)):
        mine = ours.get((day, model))
        billed = theirs.days.get((day, model))
        cells: dict[str, dict[str, Any]] = {}
        for measure in theirs.measures:
            our_value = None if mine is None else mine.figures[measure]
            value = None if billed is None else getattr(billed, measure)
            their_value = None if value is None else (
                to_nano(value) if measure == "cost" else int(value))
            if billed is not None and their_value is None and measure != "cost":
                their_value = 0  # a field the provider left out of a row it gave
            status = _status(our_value, their_value, tolerance, row_here=mine is not None,
                             row_there=billed is not None)
            if status is None:
                continue
            cells[measure] = _cell(measure, status, their_value, our_value)
        if all(c["provider"] in _NOTHING and c["tallygate"] in _NOTHING
               for c in cells.values()):
            continue  # nothing on either side (calls that failed before any token)
        rows.append({
            "day": day.isoformat(), "upstream_model": model,
            "models": sorted(mine.models) if mine else [],
            "status": max((c["status"] for c in cells.values()), key=_SEVERITY.__getitem__),
            "estimated_calls": mine.estimated_calls if mine else 0, "cells": cells})
    return rows


def _status(ours: int | None, theirs: int | None, tolerance: Decimal, *, row_here: bool,
            row_there: bool) -> str | None:
    if not row_here:
        return "missing_here" if theirs else None
    if not row_there or theirs is None:
        return "missing_there" if ours else None
    assert ours is not None
    if ours == theirs:
        return "match"
    if abs(theirs - ours) <= tolerance * max(abs(theirs), abs(ours)):
        return "within_tolerance"
    return "mismatch"


def _cell(measure: str, status: str, theirs: int | None, ours: int | None) -> dict[str, Any]:
    difference = None if theirs is None or ours is None else theirs - ours
    if measure != "cost":
        return {"status": status, "provider": theirs, "tallygate": ours,
                "difference": difference}

    def shown(nano: int | None) -> str | None:
        return None if nano is None else format_amount(nano)

    return {"status": status, "provider": shown(theirs), "tallygate": shown(ours),
            "difference": shown(difference)}


def summarize(rows: Iterable[dict[str, Any]]) -> tuple[str, dict[str, int]]:
    """The run's status (its worst row's; ``match`` when there is nothing) and the number
    of rows of each status."""
    counts = dict.fromkeys(STATUSES, 0)
    for row in rows:
        counts[row["status"]] += 1
    worst = max((s for s, n in counts.items() if n), key=_SEVERITY.__getitem__,
                default="match")
    return ("mismatch" if _SEVERITY[worst] >= 2 else worst), counts


def reconciliation(ledger: Ledger, provider: Provider, upstream_of: Mapping[str, str],
                   report: ProviderReport, start: date, end: date,
                   tolerance: Decimal) -> dict[str, Any]:
    """The whole answer of one reconciliation, as the API, the CLI and the page show it."""
    measures = report.measures
    if ledger.currency != "USD":  # the providers bill in dollars
        measures = tuple(m for m in measures if m != "cost")
    report = ProviderReport(measures, report.days)
    rows = compare(ledger_days(ledger, upstream_of, start, end), report, tolerance)
    status, counts = summarize(rows)
    return {"provider": provider.name, "kind": provider.kind, "start": start.isoformat(),
            "end": end.isoformat(), "days": (end - start).days,
            "generated_at": format_ts(now_us()), "tolerance": str(tolerance),
            "currency": "USD", "measures": list(measures), "models": sorted(upstream_of),
            "status": status, "counts": counts, "rows": rows}


def _unix(day: date) -> int:
    return int(datetime(day.year, day.month, day.day, tzinfo=UTC).timestamp())
