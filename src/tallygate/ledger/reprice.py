"""``pricing recompute``: after a price correction, reprice the calls of a time range.

Each raw record in the range gets the cost its model's price (and its key's discount) in
force at its time gives now; the rollups' cost moves by exactly the same amounts in the same
transaction, so every figure stays equal to the sum of the records. The range is repriced in
bounded transactions (``store.reprice.BATCH`` records each), each consistent on its own, and
safe to run twice at once (see ``store.reprice``). Calls of a model without
any price at their time keep their cost (a cost reported with an event is left alone
rather than zeroed). Rollups whose raw records are past their retention cannot be repriced;
the report says from when raw records exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tallygate.domain.money import format_amount
from tallygate.domain.records import format_ts
from tallygate.ledger.service import Ledger
from tallygate.store.reprice import reprice_calls
from tallygate.store.rollup_check import raw_time_span
from tallygate.store.usage import CallFilter

US = 1_000_000


@dataclass(frozen=True, slots=True)
class RepriceReport:
    start_us: int
    end_us: int
    examined: int
    changed: int
    unpriced: int
    before_nano: int
    after_nano: int
    written: bool
    raw_from_us: int | None  # the oldest raw record, when retention cut into the range
    by_model: dict[str, tuple[int, int, int]] = field(default_factory=dict)

    def as_dict(self, currency: str) -> dict[str, Any]:
        return {
            "start": format_ts(self.start_us), "end": format_ts(self.end_us),
            "written": self.written, "examined": self.examined, "changed": self.changed,
            "unpriced": self.unpriced, "currency": currency,
            "before": format_amount(self.before_nano), "after": format_amount(self.after_nano),
            "difference": format_amount(self.after_nano - self.before_nano),
            "raw_records_from": None if self.raw_from_us is None else format_ts(self.raw_from_us),
            "models": [{"model": model, "changed": changed, "before": format_amount(before),
                        "after": format_amount(after)}
                       for model, (changed, before, after) in sorted(self.by_model.items())],
        }


def reprice(ledger: Ledger, start_us: int, end_us: int,
            call_filter: CallFilter | None = None, *, dry_run: bool = False) -> RepriceReport:
    """Reprice the calls of ``[start_us, end_us)`` (matching ``call_filter``) from the price
    table and discounts as they are now; with ``dry_run`` only report what would change."""
    if end_us <= start_us:
        raise ValueError("end: must be after start")
    ledger.prices_changed()  # the correction may have been made a moment ago, elsewhere
    prices, discounts = ledger.prices(), ledger.discounts()

    def new_cost(row: Any) -> int | None:
        if prices.price_at(row.model, row.ts) is None:
            return None
        return prices.cost_nano(row.model, row.ts, row.input_tokens, row.cached_input_tokens,
                                row.output_tokens, row.status_code,
                                discounts.percent_at(row.api_key_id, row.ts),
                                cache_write_tokens=row.cache_write_tokens, units=row.units,
                                calls=row.repeats)

    # Minute rows older than the ones a new record would still get are past retention.
    counts = reprice_calls(ledger.db, start_us, end_us, call_filter or CallFilter(), new_cost,
                           write=not dry_run, minute_cutoff_s=ledger.minute_floor_s() - 60)
    span = raw_time_span(ledger.db)
    raw_from = None
    if span is not None and ledger.raw_retention_days and span[0] * US > start_us:
        raw_from = span[0] * US
    return RepriceReport(
        start_us=start_us, end_us=end_us, examined=counts.examined, changed=counts.changed,
        unpriced=counts.skipped, before_nano=counts.before_nano, after_nano=counts.after_nano,
        written=not dry_run and counts.changed > 0, raw_from_us=raw_from,
        by_model={model: (v[0], v[1], v[2]) for model, v in counts.by_model.items()},
    )
