"""The FOCUS rows: the column rules, the unit rows, and BilledCost adding up to the
ledger's cost exactly (brute force over the raw calls)."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tallygate.domain.pricing import Discount, DiscountTable, Price, PriceTable
from tallygate.domain.records import CallRecord
from tallygate.ledger.focus import (
    COLUMNS,
    FocusContext,
    SubAccount,
    focus_rows,
    focus_tags,
    split_cost,
)
from tests.ledger.focus_rules import check_focus_rows

US = 1_000_000
DAY = 86_400 * US
START = int(datetime(2026, 10, 30, tzinfo=UTC).timestamp()) * US  # spans a month end
END = START + 4 * DAY
PRICES = PriceTable([
    Price("chat-m", 0, Decimal("2.5"), Decimal("10"), Decimal("1.25"),
          cache_write_per_million=Decimal("3.75")),
    Price("chat-m", START + DAY + 12 * 3600 * US, Decimal("3"), Decimal("12")),  # mid-day
    Price("img-m", 0, Decimal(0), Decimal(0), per_call=Decimal("0.001"),
          per_unit=Decimal("0.04")),
])
DISCOUNTS = DiscountTable([Discount("k1", START + 2 * DAY + 5 * US, Decimal("12.5"))])
ACCOUNTS = {"k1": SubAccount("team one", ("team:alpha", "prod", "team:beta", "url:http://x")),
            "k2": SubAccount("no tags")}

calls = st.builds(
    lambda i, offset, key, model, inp, cached, write, out, units, status, own_cost: (
        i, offset, key, model, inp, min(cached, inp), min(write, inp - min(cached, inp)),
        out, units, status, own_cost),
    st.integers(0, 10**9), st.integers(0, END - START - 1),
    st.sampled_from(["k1", "k2", None, "deleted"]),
    st.sampled_from(["chat-m", "img-m", "unpriced"]),
    st.integers(0, 200_000), st.integers(0, 50_000), st.integers(0, 50_000),
    st.integers(0, 100_000), st.integers(0, 4), st.sampled_from([200, 200, 500]),
    st.one_of(st.none(), st.integers(0, 10**10)),
)


def _record(n: int, spec: tuple[Any, ...]) -> CallRecord:
    _, offset, key, model, inp, cached, write, out, units, status, own_cost = spec
    ts = START + offset
    unit = "image" if model == "img-m" else "second" if units and n % 2 else None
    cost = own_cost if own_cost is not None else PRICES.cost_nano(
        model, ts, inp, cached, out, status, DISCOUNTS.percent_at(key, ts),
        cache_write_tokens=write, units=units if unit else 0)
    return CallRecord(id=f"c{n}", ts_us=ts, model=model, call_type="model", api_key_id=key,
                      model_category="image" if model == "img-m" else "chat",
                      status_code=status, input_tokens=inp, output_tokens=out,
                      cached_input_tokens=cached, cache_write_tokens=write,
                      units=units if unit else 0, unit=unit, cost_nano=cost)


def _rows(records: list[CallRecord], start: int = START, end: int = END
          ) -> list[dict[str, Any]]:
    inside = [r for r in records if start <= r.ts_us < end]
    return list(focus_rows(inside, PRICES, DISCOUNTS, FocusContext("USD", start, end,
                                                                     ACCOUNTS)))


@settings(max_examples=150, deadline=None)
@given(st.lists(calls, max_size=40), st.integers(0, 3 * DAY), st.integers(1, 3 * DAY))
def test_billed_cost_adds_up_to_the_ledger_exactly(specs: list[tuple[Any, ...]], cut: int,
                                                   length: int) -> None:
    records = [_record(n, spec) for n, spec in enumerate(specs)]
    start, end = START + cut, min(START + cut + length, END)
    rows = _rows(records, start, end)
    check_focus_rows(rows)
    inside = [r for r in records if start <= r.ts_us < end]
    assert sum(Decimal(r["BilledCost"]) for r in rows) == \
        Decimal(sum(r.cost_nano for r in inside)).scaleb(-9)
    # ... and per day, key and model; the quantities per meter too.
    by_group: dict[tuple[Any, ...], int] = defaultdict(int)
    tokens: dict[tuple[Any, ...], int] = defaultdict(int)
    for r in inside:
        day = datetime.fromtimestamp(max(r.ts_us - r.ts_us % DAY, start) // US, UTC)
        group = (day.strftime("%Y-%m-%dT%H:%M:%SZ"), r.api_key_id, r.model)
        by_group[group] += r.cost_nano
        tokens[(*group, "Output Tokens")] += r.output_tokens
        tokens[(*group, "Cached Input Tokens")] += r.cached_input_tokens
    shown: dict[tuple[Any, ...], Decimal] = defaultdict(Decimal)
    shown_tokens: dict[tuple[Any, ...], int] = defaultdict(int)
    for row in rows:
        group = (row["ChargePeriodStart"], row["SubAccountId"], row["ServiceName"])
        shown[group] += Decimal(row["BilledCost"])
        if row["SkuMeter"] in ("Output Tokens", "Cached Input Tokens"):
            shown_tokens[(*group, row["SkuMeter"])] += int(row["ConsumedQuantity"])
        assert start // US <= datetime.strptime(row["ChargePeriodStart"], "%Y-%m-%dT%H:%M:%SZ"
                                                ).replace(tzinfo=UTC).timestamp()
    assert {g: Decimal(c).scaleb(-9) for g, c in by_group.items() if c} == \
        {g: c for g, c in shown.items() if c}
    assert {k: v for k, v in tokens.items() if v} == dict(shown_tokens)


def test_one_row_per_meter_with_list_and_contracted_prices() -> None:
    ts = START + 2 * DAY + 3600 * US  # k1's 12.5 % discount is in force, second chat price
    records = [_record(0, (0, ts - START, "k1", "chat-m", 10_000, 0, 0, 2_000, 0, 200, None)),
               _record(1, (0, ts - START, "k1", "img-m", 0, 0, 0, 0, 3, 200, None))]
    rows = _rows(records)
    check_focus_rows(rows)
    assert [list(r) for r in rows] == [list(COLUMNS)] * len(rows)
    meters = {(r["ServiceName"], r["SkuMeter"]): r for r in rows}
    assert set(meters) == {("chat-m", "Input Tokens"), ("chat-m", "Output Tokens"),
                           ("img-m", "Images"), ("img-m", "Requests")}
    output = meters[("chat-m", "Output Tokens")]
    assert (output["PricingUnit"], output["PricingQuantity"], output["ListUnitPrice"],
            output["ListCost"], output["ContractedUnitPrice"], output["ContractedCost"],
            output["BilledCost"]) == ("1000000 Tokens", "0.002", "12", "0.024", "10.5",
                                      "0.021", "0.021")
    images = meters[("img-m", "Images")]
    assert (images["ConsumedQuantity"], images["ConsumedUnit"], images["ListCost"],
            images["BilledCost"], images["SkuId"]) == ("3", "Images", "0.12", "0.105",
                                                        "img-m/image-units")
    assert meters[("img-m", "Requests")]["BilledCost"] == "0.000875"
    assert output["Tags"] == '{"team":"alpha","prod":true,"url":"http://x"}'
    assert (output["SubAccountId"], output["SubAccountName"]) == ("k1", "team one")
    assert output["ChargePeriodStart"] == "2026-11-01T00:00:00Z"
    assert output["BillingPeriodStart"] == "2026-11-01T00:00:00Z"
    assert output["BillingPeriodEnd"] == "2026-12-01T00:00:00Z"
    assert images["ServiceSubcategory"] == "Generative AI"


def test_a_price_change_during_the_day_splits_the_rows() -> None:
    day = START + DAY
    records = [_record(0, (0, DAY + 3600 * US, "k2", "chat-m", 1000, 0, 0, 0, 0, 200, None)),
               _record(1, (0, DAY + 20 * 3600 * US, "k2", "chat-m", 1000, 0, 0, 0, 0, 200,
                           None))]
    rows = _rows(records, day, day + DAY)
    check_focus_rows(rows)
    assert [(r["ListUnitPrice"], r["BilledCost"]) for r in rows] == [("2.5", "0.0025"),
                                                                     ("3", "0.003")]
    assert rows[0]["Tags"] is None and rows[0]["SubAccountName"] == "no tags"


def test_a_cost_without_a_priced_quantity_gets_a_requests_row() -> None:
    record = _record(0, (0, 5, None, "unpriced", 0, 0, 0, 0, 0, 200, 123_456))
    [row] = _rows([record])
    check_focus_rows([row])
    assert (row["SkuMeter"], row["ConsumedQuantity"], row["ListCost"], row["BilledCost"],
            row["SubAccountId"], row["SubAccountType"]) == ("Requests", "1", "0",
                                                             "0.000123456", None, None)


def test_tags_mapping() -> None:
    assert focus_tags([]) is None
    assert focus_tags(["team:alpha", "prod", ":odd", "team:beta", "a:b:c"]) == {
        "team": "alpha", "prod": True, ":odd": True, "a": "b:c"}


@given(st.integers(-10**12, 10**12),
       st.lists(st.decimals(0, 10**6, places=12), min_size=1, max_size=8))
def test_split_cost_is_exact(cost: int, weights: list[Decimal]) -> None:
    parts = split_cost(cost, weights)
    assert sum(parts) == cost and len(parts) == len(weights)
    if cost >= 0:
        assert all(p >= 0 for p in parts)


def test_a_record_of_several_calls_is_that_many_requests() -> None:
    # An aggregate (refusals, or an event that says so) stands for ``repeats`` calls.
    record = replace(_record(0, (0, 5, None, "unpriced", 0, 0, 0, 0, 0, 200, 123_456)),
                     repeats=4)
    [row] = _rows([record])
    check_focus_rows([row])
    assert (row["SkuMeter"], row["ConsumedQuantity"]) == ("Requests", "4")
