"""The ledger as one object: the database plus what the statistics need to know about it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from tallygate.ledger.pricing import PriceTable
from tallygate.ledger.records import CallRecord
from tallygate.store import prices as price_store
from tallygate.store.calls import InsertResult, insert_calls
from tallygate.store.database import Database


@dataclass
class Ledger:
    db: Database
    currency: str = "USD"
    minute_retention_days: int = 7
    raw_retention_days: int = 0
    _prices: PriceTable | None = field(default=None, repr=False)

    def minute_floor_s(self, now_s: float | None = None) -> int:
        """The earliest minute whose rollup is guaranteed complete."""
        now = time.time() if now_s is None else now_s
        return (int(now) - self.minute_retention_days * 86400) // 60 * 60 + 60

    def store(self, records: Sequence[CallRecord]) -> InsertResult:
        """Write records (and their rollups) once per id."""
        return insert_calls(self.db, records, minute_cutoff_s=self.minute_floor_s() - 60)

    def prices(self) -> PriceTable:
        if self._prices is None:
            self._prices = PriceTable(price_store.list_prices(self.db))
        return self._prices

    def prices_changed(self) -> None:
        self._prices = None
