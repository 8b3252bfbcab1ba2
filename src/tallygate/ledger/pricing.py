"""Prices in force over time, and the cost of one call."""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal

from tallygate.ledger.money import to_nano

MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price from ``effective_from_us`` on, until the next price of the same model."""

    model: str
    effective_from_us: int
    input_per_million: Decimal
    output_per_million: Decimal
    cached_input_per_million: Decimal | None = None
    per_call: Decimal = Decimal(0)
    currency: str = "USD"

    def cost_nano(self, input_tokens: int, cached_input_tokens: int, output_tokens: int,
                  succeeded: bool = True) -> int:
        """Tokens are charged whatever the outcome (a stream cut short was still generated);
        the per-call price only for a call that succeeded."""
        cached_price = (self.input_per_million if self.cached_input_per_million is None
                        else self.cached_input_per_million)
        amount = (
            (input_tokens - cached_input_tokens) * self.input_per_million
            + cached_input_tokens * cached_price
            + output_tokens * self.output_per_million
        ) / MILLION + (self.per_call if succeeded else 0)
        return to_nano(amount)


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
                  output_tokens: int, status_code: int = 200) -> int:
        """0 when the model has no price at that time (the call is still counted)."""
        price = self.price_at(model, ts_us)
        if price is None:
            return 0
        return price.cost_nano(input_tokens, cached_input_tokens, output_tokens,
                               succeeded=status_code < 400)

    def all_prices(self) -> list[Price]:
        return [price for history in self._by_model.values() for price in history]
