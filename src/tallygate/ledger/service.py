"""The ledger as one object: the database plus what the statistics need to know about it."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from tallygate.domain.pricing import DiscountTable, Price, PriceTable, check_price
from tallygate.domain.records import CallRecord, now_us
from tallygate.store import prices as price_store
from tallygate.store.calls import InsertResult, insert_calls
from tallygate.store.database import Database
from tallygate.store.retention import purge_floor_us

if TYPE_CHECKING:
    from tallygate.config import Route, Settings

log = logging.getLogger("tallygate.ledger")
# Minutes every process keeps: a day (the least minute_retention_days) less an hour.
RECENT_MINUTES_S = 23 * 3600


@dataclass
class Ledger:
    db: Database
    currency: str = "USD"
    minute_retention_days: int = 7
    raw_retention_days: int = 0
    percentile_max_calls: int = 250_000
    prices_ttl_s: float = 10.0
    _prices: PriceTable | None = field(default=None, repr=False)
    _discounts: DiscountTable | None = field(default=None, repr=False)
    _prices_loaded: float = field(default=0.0, repr=False)

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> Ledger:
        return cls(db, currency=settings.currency,
                   minute_retention_days=settings.minute_retention_days,
                   raw_retention_days=settings.raw_retention_days,
                   percentile_max_calls=settings.percentile_max_calls)

    def minute_floor_s(self, now_s: float | None = None) -> int:
        """The earliest minute whose rollup is guaranteed complete."""
        now = time.time() if now_s is None else now_s
        return (int(now) - self.minute_retention_days * 86400) // 60 * 60 + 60

    def recent_minutes_floor_s(self, now_s: float | None = None) -> int:
        """The earliest minute no process's retention can have purged from the minute
        rollups: ``minute_retention_days`` is at least 1 everywhere, and an hour is left for
        clocks that disagree. Totals read the minute rollups from here on, so the raw
        records they read are only those of the range's partial minutes."""
        now = time.time() if now_s is None else now_s
        return -(-(int(now) - RECENT_MINUTES_S) // 60) * 60

    def raw_floor_us(self, now_s: float | None = None) -> int | None:
        """The oldest instant whose raw records are surely all still kept (None: all are)."""
        if not self.raw_retention_days:
            return None
        now = time.time() if now_s is None else now_s
        return int((now - self.raw_retention_days * 86400) * 1_000_000)

    def purge_floor_us(self) -> int:
        """The recorded purge floor (0: nothing ever purged): raw records are complete from
        it on, and records older than it are refused."""
        return purge_floor_us(self.db)

    def store(self, records: Sequence[CallRecord]) -> InsertResult:
        """Write records (and their rollups) once per id; records older than the purge floor
        are refused (``InsertResult.refused``)."""
        return insert_calls(self.db, records, minute_cutoff_s=self.minute_floor_s() - 60)

    def prices(self) -> PriceTable:
        """The price table, re-read every ``prices_ttl_s`` so a price set by another process
        (or the CLI) is used within that time."""
        self._fresh_prices()
        assert self._prices is not None
        return self._prices

    def discounts(self) -> DiscountTable:
        """Every key's discount over time, re-read with the price table."""
        self._fresh_prices()
        assert self._discounts is not None
        return self._discounts

    def _fresh_prices(self) -> None:
        """Re-read the tables when they are older than ``prices_ttl_s``. While the database
        cannot be read, the tables last read stay in use (calls are still priced and
        recorded, and spooled if need be) and the read is tried again a TTL later; only a
        ledger that never read them has nothing to fall back on, and raises."""
        if (self._prices is not None
                and time.monotonic() - self._prices_loaded <= self.prices_ttl_s):
            return
        try:
            prices = PriceTable(price_store.list_prices(self.db))
            discounts = DiscountTable(price_store.list_discounts(self.db))
        except Exception:
            if self._prices is None:
                raise
            log.warning("cannot re-read the price table; pricing with the one read before",
                        exc_info=True)
        else:
            self._prices, self._discounts = prices, discounts
        self._prices_loaded = time.monotonic()

    def prices_changed(self) -> None:
        """Re-read the tables at next use (the current ones stay as a fallback)."""
        self._prices_loaded = -math.inf

    def cost_of(self, model: str, ts_us: int, input_tokens: int, cached_input_tokens: int,
                output_tokens: int, status_code: int = 200,
                api_key_id: str | None = None, *, cache_write_tokens: int = 0,
                units: int = 0, calls: int = 1) -> int:
        """A call's cost in nano-units: the model's price in force at ``ts_us``, less the
        key's discount in force then. 0 for a model without a price. The one way the gateway,
        ingest and ``pricing recompute`` price a call."""
        prices = self.prices()
        discounts = self.discounts()
        return prices.cost_nano(model, ts_us, input_tokens, cached_input_tokens, output_tokens,
                                status_code, discounts.percent_at(api_key_id, ts_us),
                                cache_write_tokens=cache_write_tokens, units=units,
                                calls=calls)

    def set_price(self, price: Price) -> None:
        """Put ``price`` in the table from its ``effective_from_us`` on. Calls already stored
        keep their cost until ``reprice`` (``tallygate pricing recompute``) is run."""
        check_price(price, self.currency)
        price_store.set_price(self.db, price)
        self.prices_changed()

    def sync_route_prices(self, routes: Sequence[Route]) -> list[str]:
        """Put each route's configured price in the price table when it differs from the
        price in force: from the epoch for a model without any price, else from now (so
        past calls keep the price they were made at). Returns the models that changed.

        Every route's price passes ``set_price``'s rule (``check_price``) before any is
        written; a route price without a currency is in the ledger's. Raises ``ValueError``
        naming the route and field (``routes[1] (model 'm'): price.currency: ...``)."""
        wanted_prices = []
        for index, route in enumerate(routes):
            if route.price is None:
                continue
            wanted = Price(
                model=route.model, effective_from_us=0,
                input_per_million=route.price.input_per_million,
                output_per_million=route.price.output_per_million,
                cached_input_per_million=route.price.cached_input_per_million,
                per_call=route.price.per_call,
                currency=route.price.currency or self.currency,
                cache_write_per_million=route.price.cache_write_per_million,
                per_unit=route.price.per_unit,
            )
            try:
                check_price(wanted, self.currency)
            except ValueError as exc:
                raise ValueError(f"routes[{index}] (model {route.model!r}): price.{exc}") \
                    from None
            wanted_prices.append(wanted)
        table = self.prices()
        now = now_us()
        changed = []
        for wanted in wanted_prices:
            current = table.price_at(wanted.model, now)
            if current is not None and replace(current, effective_from_us=0) == wanted:
                continue
            start = 0 if not table.price_at(wanted.model, 2**62) else now
            self.set_price(replace(wanted, effective_from_us=start))
            changed.append(wanted.model)
        return changed
