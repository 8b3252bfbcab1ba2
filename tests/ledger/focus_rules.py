"""The FOCUS 1.2 column rules a tallygate export must pass, as read in the specification
(github.com/FinOps-Open-Cost-and-Usage-Spec/FOCUS_Spec, specification/columns/*.md and
specification/attributes/*.md): presence, nullability, types and formats, allowed values,
and the relations between the cost and price columns."""

from __future__ import annotations

import json
import re
from decimal import Decimal
from typing import Any

# Mandatory in 1.2 for every dataset, or conditional and applicable to tallygate (it has
# sub accounts, measures usage, publishes list prices and supports tags).
REQUIRED = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeClass",
    "ChargeDescription", "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart",
    "ConsumedQuantity", "ConsumedUnit", "ContractedCost", "ContractedUnitPrice",
    "EffectiveCost", "InvoiceIssuerName", "ListCost", "ListUnitPrice", "PricingCategory",
    "PricingQuantity", "PricingUnit", "ProviderName", "PublisherName", "ResourceId",
    "ServiceCategory", "ServiceName", "ServiceSubcategory", "SkuId", "SkuPriceId",
    "SubAccountId", "SubAccountName", "Tags",
)
NOT_NULL = (
    "BilledCost", "BillingAccountId", "BillingAccountName", "BillingCurrency",
    "BillingPeriodEnd", "BillingPeriodStart", "ChargeCategory", "ChargeDescription",
    "ChargeFrequency", "ChargePeriodEnd", "ChargePeriodStart", "ContractedCost",
    "EffectiveCost", "InvoiceIssuerName", "ListCost", "ProviderName", "PublisherName",
    "ServiceCategory", "ServiceName", "ServiceSubcategory",
    # not null for ChargeCategory "Usage" and a ChargeClass other than "Correction":
    "ConsumedQuantity", "ConsumedUnit", "ContractedUnitPrice", "ListUnitPrice",
    "PricingCategory", "PricingQuantity", "PricingUnit", "SkuId", "SkuPriceId",
)
DECIMALS = ("BilledCost", "ConsumedQuantity", "ContractedCost", "ContractedUnitPrice",
            "EffectiveCost", "ListCost", "ListUnitPrice", "PricingQuantity")
DATETIMES = ("BillingPeriodEnd", "BillingPeriodStart", "ChargePeriodEnd", "ChargePeriodStart")
ALLOWED = {
    "ChargeCategory": {"Usage", "Purchase", "Tax", "Credit", "Adjustment"},
    "ChargeClass": {None, "Correction"},
    "ChargeFrequency": {"One-Time", "Recurring", "Usage-Based"},
    "PricingCategory": {"Standard", "Dynamic", "Committed", "Other"},
    "ServiceCategory": {"AI and Machine Learning"},
    "ServiceSubcategory": {"Bots", "Generative AI", "Machine Learning",
                           "Natural Language Processing", "Other (AI and Machine Learning)"},
}
NUMERIC = re.compile(r"-?\d+(\.\d+)?")  # numeric_format.md: no exponent, "+" or commas
MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z")  # datetime_format.md
UNIT = re.compile(r"(\d+ )?[A-Z][A-Za-z]*( [A-Z][A-Za-z]*)*")  # unit_format.md, simple units


def check_focus_rows(rows: list[dict[str, Any]], currency: str = "USD") -> None:
    """Every rule above on every row (CSV's empty strings read as null)."""
    for raw in rows:
        row = {k: (None if v == "" else v) for k, v in raw.items()}
        missing = [name for name in REQUIRED if name not in row]
        assert not missing, missing
        for name in NOT_NULL:
            assert row[name] is not None, (name, row)
        for name in DECIMALS:
            assert row[name] is None or NUMERIC.fullmatch(str(row[name])), (name, row[name])
        for name in DATETIMES:
            assert MOMENT.fullmatch(row[name]), (name, row[name])
        for name, allowed in ALLOWED.items():
            assert row[name] in allowed, (name, row[name])
        assert row["BillingCurrency"] == currency
        for name in ("ConsumedUnit", "PricingUnit"):
            assert UNIT.fullmatch(row[name]), (name, row[name])
        d = {name: Decimal(str(row[name])) for name in DECIMALS}
        # Usage without commitments: amortized cost is the billed cost.
        assert d["EffectiveCost"] == d["BilledCost"]
        assert d["ConsumedQuantity"] > 0
        assert d["ListUnitPrice"] >= 0 and d["ContractedUnitPrice"] >= 0
        # listunitprice.md, contractedunitprice.md, pricingquantity.md: exact products.
        assert d["ListUnitPrice"] * d["PricingQuantity"] == d["ListCost"]
        assert d["ContractedUnitPrice"] * d["PricingQuantity"] == d["ContractedCost"]
        # Periods: start inclusive, end exclusive, the charge within its billing period.
        assert row["ChargePeriodStart"] < row["ChargePeriodEnd"]
        assert row["BillingPeriodStart"] <= row["ChargePeriodStart"]
        assert row["ChargePeriodEnd"] <= row["BillingPeriodEnd"]
        assert row["BillingPeriodStart"][8:] == "01T00:00:00Z"
        # key_value_format.md: a JSON object of scalar values.
        if row["Tags"] is not None:
            tags = json.loads(row["Tags"])
            assert isinstance(tags, dict)
            assert all(isinstance(v, str | int | float | bool) or v is None
                       for v in tags.values())
        assert row["SkuPriceId"] == row["SkuId"]
