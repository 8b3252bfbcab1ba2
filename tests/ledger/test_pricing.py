"""Prices over time and key discounts: exact decimal money, the price in force at each call."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tallygate.config import ConfigError, Route, RoutePrice, load_settings
from tallygate.domain.pricing import Discount, DiscountTable, Price, PriceTable
from tallygate.ledger.ingest import ingest_events
from tallygate.ledger.service import Ledger
from tallygate.store import prices as price_store
from tallygate.store.database import Database

US = 1_000_000
T0 = 1_700_000_000 * US


def _price(model: str = "m", start: int = 0, **fields: str) -> Price:
    values = {"input_per_million": "0.50", "output_per_million": "2.00",
              "cached_input_per_million": "0.10", "per_call": "0"} | fields
    return Price(model, start, Decimal(values["input_per_million"]),
                 Decimal(values["output_per_million"]),
                 None if values["cached_input_per_million"] is None
                 else Decimal(values["cached_input_per_million"]),
                 Decimal(values["per_call"]))


def test_a_call_is_priced_at_the_price_in_force_when_it_was_made() -> None:
    table = PriceTable([_price(start=T0, input_per_million="1"), _price(start=0),
                        _price(start=T0 + 10 * US, input_per_million="3")])
    assert table.cost_nano("m", T0 - 1, 1_000_000, 0, 0) == 500_000_000
    assert table.cost_nano("m", T0, 1_000_000, 0, 0) == 1_000_000_000
    assert table.cost_nano("m", T0 + 10 * US, 1_000_000, 0, 0) == 3_000_000_000
    assert table.cost_nano("unpriced", T0, 1_000_000, 0, 0) == 0
    assert [p.effective_from_us for p in table.history("m")] == [0, T0, T0 + 10 * US]


def test_cached_tokens_and_the_per_call_price() -> None:
    service = _price(per_call="0.0015", cached_input_per_million=None)
    # 1000 input of which 400 cached at the input price (no cached price), 0 output.
    assert service.cost_nano(1000, 400, 0) == 500_000 + 1_500_000
    assert service.cost_nano(1000, 400, 0, succeeded=False) == 500_000  # no call fee
    chat = _price()
    assert chat.cost_nano(1000, 400, 100) == (600 * 500 + 400 * 100 + 100 * 2000)


def test_discounts_apply_from_their_start_per_key() -> None:
    table = PriceTable([_price(input_per_million="1")])
    discounts = DiscountTable([Discount("k", T0, Decimal("12.5")),
                               Discount("k", T0 + US, Decimal(0)),
                               Discount("other", 0, Decimal(100))])
    assert discounts.percent_at("k", T0 - 1) == 0
    assert discounts.percent_at("k", T0) == Decimal("12.5")
    assert discounts.percent_at("k", T0 + US) == 0
    assert discounts.percent_at(None, T0) == 0
    assert discounts.current("k", T0 + US) == 0 and discounts.current("nobody", T0) is None
    cost = table.cost_nano("m", T0, 3, 0, 0, discount_percent=discounts.percent_at("k", T0))
    # 3 tokens at 1 per million = 3000 nano; 12.5 % off = 2625 exactly.
    assert cost == 2625
    assert table.cost_nano("m", T0, 3, 0, 0, discount_percent=Decimal(100)) == 0


prices_st = st.decimals(min_value=0, max_value=100, places=6, allow_nan=False)


@given(inputs=st.integers(0, 10**7), cached_share=st.floats(0, 1),
       outputs=st.integers(0, 10**7), input_price=prices_st, cached_price=prices_st,
       output_price=prices_st, per_call=st.decimals(0, 1, places=6), status=st.sampled_from(
           [200, 201, 400, 429, 500]), percent=st.decimals(0, 100, places=3))
def test_cost_is_the_exact_decimal_rounded_once(inputs: int, cached_share: float,
                                                outputs: int, input_price: Decimal,
                                                cached_price: Decimal, output_price: Decimal,
                                                per_call: Decimal, status: int,
                                                percent: Decimal) -> None:
    cached = int(inputs * cached_share)
    price = Price("m", 0, input_price, output_price, cached_price, per_call)
    expected = ((inputs - cached) * input_price + cached * cached_price
                + outputs * output_price) / Decimal(10**6)
    if status < 400:
        expected += per_call
    expected = expected * (100 - percent) / 100
    nano = int((expected * 10**9).to_integral_value(rounding=ROUND_HALF_EVEN))
    assert PriceTable([price]).cost_nano("m", 5, inputs, cached, outputs, status,
                                         percent) == nano


def test_ledger_cost_of_uses_the_stored_prices_and_discounts(ledger: Ledger) -> None:
    price_store.set_price(ledger.db, _price(input_per_million="2"))
    price_store.set_discount(ledger.db, Discount("k", T0, Decimal(25)))
    ledger.prices_changed()
    assert ledger.cost_of("m", T0, 1000, 0, 0, 200, "k") == 1_500_000
    assert ledger.cost_of("m", T0 - 1, 1000, 0, 0, 200, "k") == 2_000_000
    assert ledger.cost_of("m", T0, 1000, 0, 0, 200, None) == 2_000_000
    # Ingested events without a cost are priced the same way, discount included.
    result = ingest_events(ledger, [
        {"id": "e1", "ts": T0 / US, "model": "m", "api_key_id": "k", "input_tokens": 1000},
        {"id": "e2", "ts": T0 / US, "model": "m", "api_key_id": "k", "input_tokens": 1000,
         "cost": "0.5"}])
    assert result.accepted == 2
    from tallygate.store.usage import CallFilter, iter_calls

    costs = {r.id: r.cost_nano for r in iter_calls(ledger.db, CallFilter(), 0, 2**62)}
    assert costs == {"e1": 1_500_000, "e2": 500_000_000}  # a reported cost is kept as it is


def test_set_price_checks_currency_and_amounts(ledger: Ledger) -> None:
    with pytest.raises(ValueError, match="currency"):
        ledger.set_price(Price("m", 0, Decimal(1), Decimal(1), currency="EUR"))
    with pytest.raises(ValueError, match="input_per_million"):
        ledger.set_price(Price("m", 0, Decimal(-1), Decimal(1)))
    ledger.set_price(Price("m", 0, Decimal("0.1"), Decimal(1)))
    assert ledger.prices().price_at("m", 1) == Price("m", 0, Decimal("0.1"), Decimal(1))


def _route(model: str, **price: object) -> Route:
    return Route(model=model, base_url="http://upstream.test/v1",
                 price=RoutePrice.model_validate(price))


def test_route_prices_pass_the_same_rule_as_set_price(db: Database) -> None:
    euro = Ledger(db, currency="EUR")
    good = _route("a", input_per_million="1", output_per_million="2")
    dollars = _route("b", input_per_million="1", currency="USD")
    with pytest.raises(ValueError, match=r"routes\[1\] \(model 'b'\): price\.currency: the "
                                         r"ledger counts in EUR, not USD"):
        euro.sync_route_prices([good, dollars])
    assert price_store.list_prices(db) == []  # checked before anything is written
    huge = _route("c", input_per_million="1." + "1" * 45)
    with pytest.raises(ValueError, match=r"routes\[0\] \(model 'c'\): price\.input_per_mil"):
        euro.sync_route_prices([huge])
    # Without a currency a route's price is in the ledger's; with it, it must be that one.
    assert euro.sync_route_prices([good, _route("b", per_call="0.1", currency="EUR")]) == [
        "a", "b"]
    assert {p.model: p.currency for p in price_store.list_prices(db)} == {"a": "EUR",
                                                                         "b": "EUR"}
    assert euro.sync_route_prices([good]) == []  # unchanged: nothing written again
    assert euro.cost_of("a", T0, 1_000_000, 0, 0) == 1_000_000_000


def test_a_route_price_in_another_currency_is_a_config_error(tmp_path: Path) -> None:
    config = tmp_path / "tallygate.toml"
    config.write_text('currency = "EUR"\n'
                      '[[routes]]\nmodel = "a"\nbase_url = "http://u.test/v1"\n'
                      '[[routes]]\nmodel = "b"\nbase_url = "http://u.test/v1"\n'
                      '[routes.price]\ninput_per_million = "1"\ncurrency = "USD"\n')
    with pytest.raises(ConfigError, match=r"routes\[1\] \(model 'b'\): price\.currency: "
                                          r"the ledger counts in EUR"):
        load_settings(config)
    config.write_text(config.read_text().replace('currency = "USD"\n', ""))
    settings = load_settings(config)
    assert settings.routes[1].price is not None and settings.routes[1].price.currency is None


def test_route_prices_carry_cache_write_and_per_unit_rates(db: Database) -> None:
    ledger = Ledger(db)
    assert ledger.sync_route_prices([
        _route("claude", input_per_million="3", cached_input_per_million="0.3",
               cache_write_per_million="3.75"),
        _route("ocr", per_unit="0.0015")]) == ["claude", "ocr"]
    stored = {p.model: p for p in price_store.list_prices(db)}  # read back from the table
    assert stored["claude"].cache_write_per_million == Decimal("3.75")
    assert stored["ocr"].per_unit == Decimal("0.0015")
    assert stored["ocr"].rates()["per_unit"] == "0.0015"
    assert stored["claude"].rates()["cache_write_per_million"] == "3.75"
    # 0.5 M uncached × 3 + 0.2 M read × 0.3 + 0.3 M written × 3.75; 9 pages × 0.0015
    assert ledger.cost_of("claude", T0, 1_000_000, 200_000, 0,
                          cache_write_tokens=300_000) == 2_685_000_000
    assert ledger.cost_of("ocr", T0, 0, 0, 0, units=9) == 13_500_000
    assert ledger.sync_route_prices([
        _route("claude", input_per_million="3", cached_input_per_million="0.3",
               cache_write_per_million="3.75"),
        _route("ocr", per_unit="0.0015")]) == []  # the same rates: nothing written again
