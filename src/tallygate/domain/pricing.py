"""Prices in force over time, per-key discounts, and the cost of one call.

Every step is exact: prices are decimals, the amount of a call is a decimal, and only the
final amount (after the key's discount) is rounded, half to even, to the ledger's nano-unit.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from tallygate.domain.money import to_nano

MILLION = Decimal(1_000_000)
HUNDRED = Decimal(100)
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price from ``effective_from_us`` on, until the next price of the same model."""

    model: str
    effective_from_us: int
    input_per_million: Decimal
    output_per_million: Decimal
    cached_input_per_million: Decimal | None = None
    per_call: Decimal = ZERO
    currency: str = "USD"
    cache_write_per_million: Decimal | None = None  # None: the input price
    per_unit: Decimal = ZERO  # a call's units (images, seconds, pages, ...) each

    def rates(self) -> dict[str, str | None]:
        """The rates as exact decimal strings, and the currency: as stored and as shown."""
        return {
            "input_per_million": str(self.input_per_million),
            "cached_input_per_million": None if self.cached_input_per_million is None
            else str(self.cached_input_per_million),
            "output_per_million": str(self.output_per_million),
            "per_call": str(self.per_call),
            "currency": self.currency,
            "cache_write_per_million": None if self.cache_write_per_million is None
            else str(self.cache_write_per_million),
            "per_unit": str(self.per_unit),
        }

    def amount(self, input_tokens: int, cached_input_tokens: int, output_tokens: int,
               succeeded: bool = True, *, cache_write_tokens: int = 0,
               units: int = 0, calls: int = 1) -> Decimal:
        """The exact list price of a call (or of a record of ``calls`` calls, whose tokens and
        units are their totals). ``input_tokens`` counts every input token: cache
        reads and cache writes are part of it, each at its own price. Tokens and units are
        charged whatever the outcome (a stream cut short was still generated); the per-call
        price only for a call that succeeded."""
        cached_price = (self.input_per_million if self.cached_input_per_million is None
                        else self.cached_input_per_million)
        write_price = (self.input_per_million if self.cache_write_per_million is None
                       else self.cache_write_per_million)
        uncached = max(input_tokens - cached_input_tokens - cache_write_tokens, 0)
        return (
            uncached * self.input_per_million
            + cached_input_tokens * cached_price
            + cache_write_tokens * write_price
            + output_tokens * self.output_per_million
        ) / MILLION + units * self.per_unit + (self.per_call * calls if succeeded else 0)

    def cost_nano(self, input_tokens: int, cached_input_tokens: int, output_tokens: int,
                  succeeded: bool = True, *, cache_write_tokens: int = 0,
                  units: int = 0) -> int:
        return to_nano(self.amount(input_tokens, cached_input_tokens, output_tokens, succeeded,
                                   cache_write_tokens=cache_write_tokens, units=units))


RATE_FIELDS = ("input_per_million", "output_per_million", "cached_input_per_million",
               "per_call", "cache_write_per_million", "per_unit")


def check_price(price: Price, currency: str) -> None:
    """The one rule every price passes before it enters the table, whoever sets it (the
    CLI, the API, a route's configured price): the ledger's currency, and finite
    non-negative rates of a sane length. Raises ``ValueError("field: why")``."""
    if price.currency != currency:
        raise ValueError(f"currency: the ledger counts in {currency}, not {price.currency}")
    for name in RATE_FIELDS:
        value = getattr(price, name)
        if value is not None and (not value.is_finite() or value < 0 or len(str(value)) > 40):
            raise ValueError(f"{name}: must be a non-negative decimal")


@dataclass(frozen=True, slots=True)
class Discount:
    """``percent`` off the price table for a key's calls from ``effective_from_us`` on."""

    api_key_id: str
    effective_from_us: int
    percent: Decimal


def discounted(amount: Decimal, percent: Decimal) -> Decimal:
    return amount if not percent else amount * (HUNDRED - percent) / HUNDRED


class PriceTable:
    """Answers "what did this call cost" with the price in force when it was made."""

    def __init__(self, prices: Iterable[Price]) -> None:
        self._by_model: dict[str, list[Price]] = {}
        for price in sorted(prices, key=lambda p: (p.model, p.effective_from_us)):
            self._by_model.setdefault(price.model, []).append(price)
        self._starts = {model: [p.effective_from_us for p in history]
                        for model, history in self._by_model.items()}

    def price_at(self, model: str, ts_us: int) -> Price | None:
        history = self._by_model.get(model)
        if not history:
            return None
        index = bisect.bisect_right(self._starts[model], ts_us) - 1
        return history[index] if index >= 0 else None

    def cost_nano(self, model: str, ts_us: int, input_tokens: int, cached_input_tokens: int,
                  output_tokens: int, status_code: int = 200,
                  discount_percent: Decimal = ZERO, *, cache_write_tokens: int = 0,
                  units: int = 0, calls: int = 1) -> int:
        """0 when the model has no price at that time (the call is still counted)."""
        price = self.price_at(model, ts_us)
        if price is None:
            return 0
        amount = price.amount(input_tokens, cached_input_tokens, output_tokens,
                              succeeded=status_code < 400,
                              cache_write_tokens=cache_write_tokens, units=units,
                              calls=calls)
        return to_nano(discounted(amount, discount_percent))

    def all_prices(self) -> list[Price]:
        return [price for history in self._by_model.values() for price in history]

    def history(self, model: str) -> list[Price]:
        return list(self._by_model.get(model, ()))


class DiscountTable:
    """Each key's discount over time; 0 for a key without any."""

    def __init__(self, discounts: Iterable[Discount]) -> None:
        self._by_key: dict[str, list[Discount]] = {}
        for discount in sorted(discounts, key=lambda d: (d.api_key_id, d.effective_from_us)):
            self._by_key.setdefault(discount.api_key_id, []).append(discount)
        self._starts = {key: [d.effective_from_us for d in history]
                        for key, history in self._by_key.items()}

    def __bool__(self) -> bool:
        return bool(self._by_key)

    def percent_at(self, api_key_id: str | None, ts_us: int) -> Decimal:
        if api_key_id is None:
            return ZERO
        history = self._by_key.get(api_key_id)
        if not history:
            return ZERO
        index = bisect.bisect_right(self._starts[api_key_id], ts_us) - 1
        return history[index].percent if index >= 0 else ZERO

    def current(self, api_key_id: str, now_us: int) -> Decimal | None:
        """The discount in force now, or None when the key never had one."""
        if api_key_id not in self._by_key:
            return None
        return self.percent_at(api_key_id, now_us)

    def all_discounts(self) -> list[Discount]:
        return [d for history in self._by_key.values() for d in history]
