"""The ledger as a FinOps FOCUS 1.2 cost and usage dataset, for chargeback tools.

One row per UTC day x API key x model x *meter* (what the charge is billed by: uncached
input tokens, cached input tokens, cache-write tokens, output tokens, each per-unit kind of
``categories.UNITS``, and the per-call price), further split only when a price or the key's
discount changed during the day (so that every row has one list and one contracted unit
price). Only usage is exported: ``ChargeCategory`` "Usage", no commitments, no taxes.

The ledger stores one rounded cost per call, not per meter, so a row's ``BilledCost`` is the
day's stored cost of its calls divided among its meters in proportion to their exact
discounted amounts under the price table (``ContractedCost``): each row gets the floor of its
share in nano-units and the few nano-units left over go to the row with the largest share.
The rows' ``BilledCost`` therefore add up to the ledger's cost exactly, whatever the stored
costs are (an imported record may carry its own); a day whose calls have a cost but no
priced quantity gets one "Requests" row carrying it.

Column rules are FOCUS 1.2, read in the specification's repository
(github.com/FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec, ``specification/columns/<name>.md``
and ``specification/attributes/{datetime_format,numeric_format,unit_format,
key_value_format}.md``). Conditional 1.2 columns that do not apply are left out:
commitment discounts, capacity reservations, regions and availability zones, invoices,
``BillingAccountType``, and the ``PricingCurrency*`` columns (prices are always in the
billing currency, ``pricing.check_price``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal, localcontext
from fractions import Fraction
from typing import Any

from tallygate.domain.pricing import HUNDRED, ZERO, DiscountTable, Price, PriceTable
from tallygate.domain.records import CallRecord
from tallygate.ledger import export
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import UsageQuery
from tallygate.ledger.timerange import BadParameter
from tallygate.store.export import stream_calls

FOCUS_VERSION = "1.2"
PROVIDER = "tallygate"
SUBACCOUNT_TYPE = "API Key"
RESOURCE_TYPE = "Model"
SERVICE_CATEGORY = "AI and Machine Learning"
# specification/columns/servicesubcategory.md: the "AI and Machine Learning" children.
SUBCATEGORY_BY_MODEL_CATEGORY = {
    "chat": "Generative AI", "completion": "Generative AI", "image": "Generative AI",
    "audio": "Generative AI", "embedding": "Natural Language Processing",
    "rerank": "Natural Language Processing",
}
OTHER_SUBCATEGORY = "Other (AI and Machine Learning)"

# In FOCUS 1.2 column order (alphabetical, as the specification lists them).
COLUMNS = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart",
    "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "ContractedUnitPrice",
    "EffectiveCost", "InvoiceIssuerName", "ListCost", "ListUnitPrice", "PricingCategory",
    "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "ResourceId",
    "ResourceName", "ResourceType", "ServiceCategory", "ServiceName", "ServiceSubcategory",
    "SkuId", "SkuMeter", "SkuPriceId", "SubAccountId", "SubAccountName", "SubAccountType",
    "Tags",
)
DECIMAL_COLUMNS = ("BilledCost", "ConsumedQuantity", "ContractedCost", "ContractedUnitPrice",
                   "EffectiveCost", "ListCost", "ListUnitPrice", "PricingQuantity")
DATETIME_COLUMNS = ("BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd",
                    "ChargePeriodStart")
FILE_FORMATS = ("csv", "parquet")

_DAY_US = 86_400_000_000
_MILLION = Decimal(1_000_000)


@dataclass(frozen=True, slots=True)
class Meter:
    """One thing a charge is billed by. Token meters are priced per million tokens
    (``PricingUnit`` "1000000 Tokens", the price table's own unit); the others per one."""

    name: str  # part of SkuId
    label: str  # SkuMeter and ChargeDescription
    consumed_unit: str
    pricing_unit: str
    per_million: bool

    def list_unit_price(self, price: Price | None) -> Decimal:
        if price is None:
            return ZERO
        if self.name == "input-tokens":
            return price.input_per_million
        if self.name == "cached-input-tokens":
            return (price.input_per_million if price.cached_input_per_million is None
                    else price.cached_input_per_million)
        if self.name == "cache-write-tokens":
            return (price.input_per_million if price.cache_write_per_million is None
                    else price.cache_write_per_million)
        if self.name == "output-tokens":
            return price.output_per_million
        if self.name == "requests":
            return price.per_call
        return price.per_unit


def _unit_meter(unit: str) -> Meter:
    # specification/attributes/unit_format.md: capitalised plural count nouns.
    plural = " ".join(word.capitalize() for word in unit.split("_")) + "s"
    return Meter(f"{unit.replace('_', '-')}-units", plural, plural, plural, False)


TOKEN_METERS = (
    Meter("input-tokens", "Input Tokens", "Tokens", "1000000 Tokens", True),
    Meter("cached-input-tokens", "Cached Input Tokens", "Tokens", "1000000 Tokens", True),
    Meter("cache-write-tokens", "Cache Write Tokens", "Tokens", "1000000 Tokens", True),
    Meter("output-tokens", "Output Tokens", "Tokens", "1000000 Tokens", True),
)
REQUEST_METER = Meter("requests", "Requests", "Requests", "Requests", False)


@dataclass(frozen=True, slots=True)
class SubAccount:
    """What the export shows of an API key: its name and its tags."""

    name: str
    tags: tuple[str, ...] = ()


def focus_tags(tags: Iterable[str]) -> dict[str, str | bool] | None:
    """A key's tags as a FOCUS ``Tags`` object (specification/columns/tags.md): "team:alpha"
    is ``{"team": "alpha"}`` (split at the first colon), a tag without a value such as
    "prod" is ``{"prod": true}`` (valueless tags MUST carry true). These are user-defined
    tags of tallygate's only tag scheme, so their keys are not prefixed. A key repeated with
    another value keeps its first value (a finalized tag has one value). No tags: null."""
    result: dict[str, str | bool] = {}
    for tag in tags:
        name, colon, value = tag.partition(":")
        if not colon or not name:
            name, value_or_true = tag, True
            result.setdefault(name, value_or_true)
        else:
            result.setdefault(name, value)
    return result or None


@dataclass
class _Group:
    """The calls of one day, key, model and price in force."""

    price: Price | None
    quantities: dict[Meter, int] = field(default_factory=dict)
    cost_nano: int = 0
    calls: int = 0

    def add(self, meter: Meter, quantity: int) -> None:
        if quantity > 0:
            self.quantities[meter] = self.quantities.get(meter, 0) + quantity


_GroupKey = tuple[int, str | None, str, str, int | None, Decimal]


def _meter_quantities(group: _Group, record: CallRecord) -> None:
    write = record.cache_write_tokens
    cached = record.cached_input_tokens
    # The same split as Price.amount: cache reads and writes are part of input_tokens.
    group.add(TOKEN_METERS[0], max(record.input_tokens - cached - write, 0))
    group.add(TOKEN_METERS[1], cached)
    group.add(TOKEN_METERS[2], write)
    group.add(TOKEN_METERS[3], record.output_tokens)
    if record.unit and record.units:
        group.add(_unit_meter(record.unit), record.units)
    if group.price is not None and group.price.per_call and record.status_code < 400:
        group.add(REQUEST_METER, record.repeats)  # a record may stand for several calls


def group_calls(records: Iterable[CallRecord], prices: PriceTable,
                discounts: DiscountTable) -> dict[_GroupKey, _Group]:
    """The calls by UTC day, key, model, category, price version and discount."""
    groups: dict[_GroupKey, _Group] = {}
    for record in records:
        price = prices.price_at(record.model, record.ts_us)
        key: _GroupKey = (record.ts_us - record.ts_us % _DAY_US, record.api_key_id,
                          record.model, record.model_category,
                          None if price is None else price.effective_from_us,
                          discounts.percent_at(record.api_key_id, record.ts_us))
        group = groups.get(key)
        if group is None:
            group = groups[key] = _Group(price)
        group.cost_nano += record.cost_nano
        group.calls += record.repeats
        _meter_quantities(group, record)
    return groups


def _decimal_text(value: Decimal) -> str:
    """Numeric Format: plain digits, no exponent, no sign on positives, no "-0"."""
    if value == 0:
        return "0"
    text = f"{value:f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text


def _moment(us: int) -> str:
    """Date/Time Format: 'YYYY-MM-DDTHH:mm:ssZ' (whole seconds, UTC)."""
    return datetime.fromtimestamp(us // 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _billing_month(day_us: int) -> tuple[int, int]:
    day = datetime.fromtimestamp(day_us // 1_000_000, UTC)
    start = day.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    end = (start + timedelta(days=32)).replace(day=1)
    return int(start.timestamp()) * 1_000_000, int(end.timestamp()) * 1_000_000


def split_cost(cost_nano: int, weights: list[Decimal]) -> list[int]:
    """``cost_nano`` divided in proportion to ``weights``: each part the floor of its share,
    the remainder on the largest weight (the first of equals; all on the first when every
    weight is 0). The parts add up to ``cost_nano`` exactly."""
    total = sum(weights, ZERO)
    if total == 0:
        return [cost_nano] + [0] * (len(weights) - 1)
    parts = [int(Fraction(cost_nano) * Fraction(w) / Fraction(total) // 1) for w in weights]
    largest = max(range(len(weights)), key=lambda i: (weights[i], -i))
    parts[largest] += cost_nano - sum(parts)
    return parts


@dataclass(frozen=True, slots=True)
class FocusContext:
    """Everything a row needs besides the calls."""

    currency: str
    start_us: int
    end_us: int
    accounts: Mapping[str, SubAccount]
    billing_account: str = PROVIDER


def _group_rows(key: _GroupKey, group: _Group, context: FocusContext) -> list[dict[str, Any]]:
    day_us, api_key_id, model, category, _, percent = key
    meters = sorted(group.quantities, key=_meter_order)
    if not meters:
        if group.cost_nano == 0:
            return []
        # A cost without a priced quantity (an imported record's own cost): one row.
        meters = [REQUEST_METER]
        group.quantities[REQUEST_METER] = group.calls
    with localcontext() as ctx:
        ctx.prec = 120  # exact: prices have at most 40 characters, quantities 19 digits
        lines = []
        for meter in meters:
            quantity = group.quantities[meter]
            pricing_quantity = (Decimal(quantity) / _MILLION if meter.per_million
                                else Decimal(quantity))
            list_price = meter.list_unit_price(group.price)
            contracted_price = list_price * (HUNDRED - percent) / HUNDRED
            lines.append((meter, quantity, pricing_quantity, list_price, contracted_price,
                          list_price * pricing_quantity, contracted_price * pricing_quantity))
    billed = split_cost(group.cost_nano, [line[6] for line in lines])
    period_start = max(day_us, context.start_us)
    period_end = min(day_us + _DAY_US, context.end_us)
    period_end_s = -(-period_end // 1_000_000) * 1_000_000  # whole seconds, covering
    billing_start, billing_end = _billing_month(day_us)
    account = context.accounts.get(api_key_id) if api_key_id else None
    tags = focus_tags(account.tags) if account else None
    rows = []
    for (meter, quantity, pricing_quantity, list_price, contracted_price, list_cost,
         contracted_cost), billed_nano in zip(lines, billed, strict=True):
        cost = _decimal_text(Decimal(billed_nano).scaleb(-9))
        rows.append({
            "BilledCost": cost, "BillingAccountId": context.billing_account,
            "BillingAccountName": context.billing_account,
            "BillingCurrency": context.currency,
            "BillingPeriodEnd": _moment(billing_end),
            "BillingPeriodStart": _moment(billing_start),
            "ChargeCategory": "Usage", "ChargeClass": None,
            "ChargeDescription": f"{model} {meter.label.lower()}",
            "ChargeFrequency": "Usage-Based",
            "ChargePeriodEnd": _moment(period_end_s),
            "ChargePeriodStart": _moment(period_start),
            "ConsumedQuantity": str(quantity), "ConsumedUnit": meter.consumed_unit,
            "ContractedCost": _decimal_text(contracted_cost),
            "ContractedUnitPrice": _decimal_text(contracted_price),
            "EffectiveCost": cost, "InvoiceIssuerName": context.billing_account,
            "ListCost": _decimal_text(list_cost), "ListUnitPrice": _decimal_text(list_price),
            "PricingCategory": "Standard",
            "PricingQuantity": _decimal_text(pricing_quantity),
            "PricingUnit": meter.pricing_unit, "ProviderName": context.billing_account,
            "PublisherName": context.billing_account, "ResourceId": model,
            "ResourceName": model, "ResourceType": RESOURCE_TYPE,
            "ServiceCategory": SERVICE_CATEGORY, "ServiceName": model,
            "ServiceSubcategory": SUBCATEGORY_BY_MODEL_CATEGORY.get(category,
                                                                    OTHER_SUBCATEGORY),
            "SkuId": f"{model}/{meter.name}", "SkuMeter": meter.label,
            "SkuPriceId": f"{model}/{meter.name}",
            "SubAccountId": api_key_id,
            "SubAccountName": (account.name if account else api_key_id),
            "SubAccountType": SUBACCOUNT_TYPE if api_key_id else None,
            "Tags": None if tags is None else json.dumps(tags, separators=(",", ":"),
                                                         ensure_ascii=False),
        })
    return rows


def _meter_order(meter: Meter) -> tuple[int, str]:
    if meter in TOKEN_METERS:
        return TOKEN_METERS.index(meter), ""
    return (len(TOKEN_METERS) + (meter == REQUEST_METER)), meter.name


def focus_rows(records: Iterable[CallRecord], prices: PriceTable, discounts: DiscountTable,
               context: FocusContext) -> Iterator[dict[str, Any]]:
    """The FOCUS rows of ``records`` (all of ``[context.start_us, context.end_us)``), by
    day, key, model and meter."""
    groups = group_calls(records, prices, discounts)
    for key in sorted(groups, key=lambda k: (k[0], k[1] or "", k[2], k[3], k[4] or 0, k[5])):
        yield from _group_rows(key, groups[key], context)


def focus_export(ledger: Ledger, query: UsageQuery, accounts: Mapping[str, SubAccount],
                 file_format: str = "csv") -> Iterator[bytes]:
    """The FOCUS dataset of the query's calls as ``file_format`` (csv or parquet). It is
    built from raw call records: a range reaching back before raw retention or a purge
    is refused rather than exported short."""
    if file_format not in FILE_FORMATS:
        raise BadParameter("focus_format", f"must be one of {', '.join(FILE_FORMATS)}")
    if file_format == "parquet" and not export.parquet_available():
        raise BadParameter("focus_format", export.PARQUET_MISSING)
    raw_from_us = max(ledger.raw_floor_us() or 0, ledger.purge_floor_us())
    if raw_from_us > query.range.start_us:
        raise BadParameter("start", "the FOCUS export needs raw call records, kept only "
                           f"from {_moment(raw_from_us)}; start at or after it")
    context = FocusContext(ledger.currency, query.range.start_us, query.range.end_us,
                           accounts)
    records = stream_calls(ledger.db, query.filter, query.range.start_us, query.range.end_us)
    return export.focus_stream(file_format, focus_rows(records, ledger.prices(),
                                                       ledger.discounts(), context))
