"""The common filter parameters of every usage endpoint, parsed once."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Query

from tallygate.api.auth import Principal, usage_principal
from tallygate.api.errors import ApiError
from tallygate.domain.categories import CALL_TYPES, MODEL_CATEGORIES
from tallygate.ledger.statistics import UsageQuery
from tallygate.ledger.timerange import BadParameter, checked_range
from tallygate.store.usage import CallFilter


def _checked(values: list[str] | None, allowed: tuple[str, ...], param: str) -> tuple[str, ...]:
    for value in values or []:
        if value not in allowed:
            raise BadParameter(param, f"{value!r} is not one of {', '.join(allowed)}")
    return tuple(values or ())


def usage_query(
    principal: Annotated[Principal, Depends(usage_principal)],
    api_key_id: Annotated[list[str] | None, Query(
        description="Only these keys (repeatable).", max_length=200)] = None,
    model: Annotated[list[str] | None, Query(
        description="Only these models (repeatable).", max_length=200)] = None,
    call_type: Annotated[list[str] | None, Query(
        description="Only these call types: model, service, internal (repeatable).")] = None,
    upstream_model: Annotated[list[str] | None, Query(
        description="Only calls whose upstream reported running these models (the answer's "
                    "model; repeatable).", max_length=200)] = None,
    model_category: Annotated[list[str] | None, Query(
        description="Only these categories: chat, completion, embedding, rerank, image, "
                    "audio, other (repeatable).")] = None,
    period: Annotated[str | None, Query(
        description="1d, 3d, 7d or 30d: the last N calendar days in tz, today included. "
                    "The default when neither period nor start/end is given is 7d.")] = None,
    start: Annotated[str | None, Query(
        description="RFC 3339 instant or YYYY-MM-DD (the first instant of that date in tz). "
                    "A time without an offset is read in tz; one the clocks skip moves "
                    "forward by the gap.")] = None,
    end: Annotated[str | None, Query(
        description="Exclusive, after start; RFC 3339 instant or YYYY-MM-DD.")] = None,
    tz: Annotated[str | None, Query(description="IANA time zone; default UTC.")] = None,
) -> UsageQuery:
    keys = tuple(api_key_id or ())
    if not principal.is_admin:
        others = [k for k in keys if k != principal.api_key_id]
        if others:
            raise ApiError(403, "An API key may only read its own usage", code="forbidden_key",
                           param="api_key_id")
        keys = (principal.api_key_id,)  # type: ignore[assignment]
    for param, values in (("api_key_id", keys), ("model", model or ()),
                          ("upstream_model", upstream_model or ())):
        for value in values:
            if not value or len(value) > 200 or "\x00" in value:
                raise BadParameter(param, "must be between 1 and 200 characters, without NUL")
    call_filter = CallFilter(
        api_key_ids=keys,
        models=tuple(model or ()),
        call_types=_checked(call_type, CALL_TYPES, "call_type"),
        model_categories=_checked(model_category, MODEL_CATEGORIES, "model_category"),
        upstream_models=tuple(upstream_model or ()),
    )
    return UsageQuery(call_filter, checked_range(period, start, end, tz))
