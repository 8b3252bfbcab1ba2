"""The price table and the per-key discounts, each a history of values with start times."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select

from tallygate.domain.pricing import Discount, Price
from tallygate.store.database import Database
from tallygate.store.schema import key_discounts, prices


def list_prices(db: Database) -> list[Price]:
    with db.read() as conn:
        rows = conn.execute(select(prices).order_by(prices.c.model, prices.c.effective_from))
        return [
            Price(
                model=row.model,
                effective_from_us=row.effective_from,
                input_per_million=Decimal(row.input_per_million),
                output_per_million=Decimal(row.output_per_million),
                cached_input_per_million=None if row.cached_input_per_million is None
                else Decimal(row.cached_input_per_million),
                per_call=Decimal(row.per_call),
                currency=row.currency,
                cache_write_per_million=None if row.cache_write_per_million is None
                else Decimal(row.cache_write_per_million),
                per_unit=Decimal(row.per_unit),
            )
            for row in rows
        ]


def set_price(db: Database, price: Price) -> None:
    """Add a price from ``effective_from_us`` on (replacing one with the same start)."""
    values = price.rates()
    with db.write() as conn:
        existing = conn.execute(select(prices.c.model).where(
            prices.c.model == price.model,
            prices.c.effective_from == price.effective_from_us)).first()
        if existing:
            conn.execute(prices.update().where(
                prices.c.model == price.model,
                prices.c.effective_from == price.effective_from_us).values(**values))
        else:
            conn.execute(prices.insert().values(model=price.model,
                                                effective_from=price.effective_from_us, **values))


def list_discounts(db: Database) -> list[Discount]:
    with db.read() as conn:
        rows = conn.execute(select(key_discounts).order_by(key_discounts.c.api_key_id,
                                                           key_discounts.c.effective_from))
        return [Discount(row.api_key_id, row.effective_from, Decimal(row.percent))
                for row in rows]


def set_discount(db: Database, discount: Discount) -> None:
    """A key's discount from ``effective_from_us`` on (replacing one with the same start)."""
    with db.write() as conn:
        where = (key_discounts.c.api_key_id == discount.api_key_id,
                 key_discounts.c.effective_from == discount.effective_from_us)
        if conn.execute(select(key_discounts.c.api_key_id).where(*where)).first():
            conn.execute(key_discounts.update().where(*where)
                         .values(percent=str(discount.percent)))
        else:
            conn.execute(key_discounts.insert().values(
                api_key_id=discount.api_key_id, effective_from=discount.effective_from_us,
                percent=str(discount.percent)))
