"""``/api/v1/pricing``: the price table over time and the discounts in force."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, Field, field_validator

from tallygate.api.auth import Principal, admin_principal, usage_principal
from tallygate.api.errors import ApiError
from tallygate.domain.pricing import DiscountTable, Price, PriceTable
from tallygate.domain.records import format_ts, now_us
from tallygate.ledger.service import Ledger
from tallygate.ledger.timerange import BadParameter, to_us
from tallygate.store import keys as key_store
from tallygate.store import prices as price_store
from tallygate.store.meta import write_audit

router = APIRouter(prefix="/api/v1/pricing", tags=["pricing"])
PriceAmount = Annotated[Decimal, Field(ge=0, le=Decimal(10**9), allow_inf_nan=False)]


class PriceIn(BaseModel):
    """A price per million tokens (and per call), in force from ``effective_from`` (default:
    now) until the model's next price."""

    model_config = {"extra": "forbid"}

    model: str = Field(min_length=1, max_length=200)
    input_per_million: PriceAmount = Decimal(0)
    cached_input_per_million: PriceAmount | None = None
    output_per_million: PriceAmount = Decimal(0)
    per_call: PriceAmount = Decimal(0)
    cache_write_per_million: PriceAmount | None = None  # None: the input price
    per_unit: PriceAmount = Decimal(0)  # each of a call's units (images, seconds, ...)
    currency: str | None = Field(None, min_length=3, max_length=3)
    effective_from: datetime | None = None

    @field_validator("effective_from")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("must carry a time-zone offset (e.g. 2026-11-01T00:00:00Z)")
        return value


def price_dict(price: Price, until_us: int | None, now: int) -> dict[str, Any]:
    return {
        "model": price.model,
        "effective_from": format_ts(price.effective_from_us),
        "effective_until": None if until_us is None else format_ts(until_us),
        "in_force": price.effective_from_us <= now and (until_us is None or now < until_us),
        **price.rates(),
    }


def _ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


@router.get("", summary="The price table (every model's prices over time) and discounts")
def pricing(
    request: Request,
    principal: Annotated[Principal, Depends(usage_principal)],
    model: Annotated[list[str] | None, Query(description="Only these models (repeatable).",
                                             max_length=200)] = None,
    current: Annotated[bool, Query(description="Only the prices in force now.")] = False,
) -> dict[str, Any]:
    ledger = _ledger(request)
    # Read afresh (not the gateway's copy, up to 10 s old): a price just set shows at once.
    table = PriceTable(price_store.list_prices(ledger.db))
    discounts = DiscountTable(price_store.list_discounts(ledger.db))
    now = now_us()
    allowed: list[str] | None = None
    if not principal.is_admin:
        key = key_store.get_key(ledger.db, principal.api_key_id or "")
        allowed = None if key is None else key.allowed_models
    rows = []
    models = sorted({p.model for p in table.all_prices()})
    for name in models:
        if (model and name not in model) or (allowed is not None and name not in allowed):
            continue
        history = table.history(name)
        for i, price in enumerate(history):
            until = history[i + 1].effective_from_us if i + 1 < len(history) else None
            row = price_dict(price, until, now)
            if not current or row["in_force"]:
                rows.append(row)
    if principal.is_admin:
        names = key_store.key_names(ledger.db)
        shown = [{"api_key_id": d.api_key_id, "api_key_name": names.get(d.api_key_id),
                  "percent": format(d.percent.normalize(), "f"),
                  "effective_from": format_ts(d.effective_from_us)}
                 for d in discounts.all_discounts()]
    else:
        key_id = principal.api_key_id or ""
        shown = [{"api_key_id": key_id, "percent": format(d.percent.normalize(), "f"),
                  "effective_from": format_ts(d.effective_from_us)}
                 for d in discounts.all_discounts() if d.api_key_id == key_id]
    return {"currency": ledger.currency, "now": format_ts(now), "data": rows,
            "discounts": shown}


@router.post("", status_code=201, summary="Set a model's price from a moment on")
def set_price(request: Request, body: PriceIn,
              principal: Annotated[Principal, Depends(admin_principal)]) -> dict[str, Any]:
    ledger = _ledger(request)
    start = now_us() if body.effective_from is None else to_us(
        body.effective_from.astimezone(UTC))
    if start < 0:
        raise BadParameter("effective_from", "must be after 1970-01-01")
    price = Price(model=body.model, effective_from_us=start,
                  input_per_million=body.input_per_million,
                  output_per_million=body.output_per_million,
                  cached_input_per_million=body.cached_input_per_million,
                  per_call=body.per_call, currency=body.currency or ledger.currency,
                  cache_write_per_million=body.cache_write_per_million,
                  per_unit=body.per_unit)
    try:
        ledger.set_price(price)
    except ValueError as exc:
        param = str(exc).split(":", 1)[0]
        raise ApiError(400, str(exc), code="invalid_parameter", param=param) from None
    write_audit(ledger.db, principal.actor, "price.set", body.model,
                {"effective_from": start, "input_per_million": str(price.input_per_million),
                 "output_per_million": str(price.output_per_million),
                 "cached_input_per_million": None if price.cached_input_per_million is None
                 else str(price.cached_input_per_million), "per_call": str(price.per_call),
                 "cache_write_per_million": None if price.cache_write_per_million is None
                 else str(price.cache_write_per_million), "per_unit": str(price.per_unit)})
    history = ledger.prices().history(body.model)
    index = next(i for i, p in enumerate(history) if p.effective_from_us == start)
    until = history[index + 1].effective_from_us if index + 1 < len(history) else None
    return price_dict(history[index], until, now_us())
