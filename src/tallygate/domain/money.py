"""Exact money. Amounts are stored as integer nano-units (1e-9 of the currency)."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

NANO = Decimal(1_000_000_000)


def to_nano(amount: Decimal) -> int:
    """Round half to even to the nano-unit, the ledger's exact resolution."""
    return int((amount * NANO).to_integral_value(rounding=ROUND_HALF_EVEN))


def format_amount(nano: int) -> str:
    """A decimal string with at least two places and no trailing noise: ``"12.50"``."""
    amount = (Decimal(nano) / NANO).normalize()
    if amount == amount.to_integral_value():
        return f"{amount:.2f}"
    exponent = amount.as_tuple().exponent
    places = max(2, -exponent if isinstance(exponent, int) else 2)
    return f"{amount:.{places}f}"


def money(nano: int | None, currency: str) -> dict[str, str] | None:
    if nano is None:
        return None
    return {"amount": format_amount(nano), "currency": currency}
