"""The common filter parameters of every usage endpoint, parsed once."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import Depends, Query

from tallygate.api.auth import Principal, usage_principal
from tallygate.api.errors import ApiError
from tallygate.ledger.categories import CALL_TYPES, MODEL_CATEGORIES
from tallygate.ledger.statistics import UsageQuery
from tallygate.ledger.timerange import BadParameter, TimeRange, resolve_range
from tallygate.store.usage import CallFilter

# Previous periods and local days are computed with datetime, which ends at years 1 and 9999:
# far from those ends every range is safe. Both accepted forms begin with the year.
YEARS = range(1970, 9000)


def _checked(values: list[str] | None, allowed: tuple[str, ...], param: str) -> tuple[str, ...]:
    for value in values or []:
        if value not in allowed:
            raise BadParameter(param, f"{value!r} is not one of {', '.join(allowed)}")
    return tuple(values or ())


_YEAR = re.compile("[0-9]{4}")


def checked_range(period: str | None, start: str | None, end: str | None,
                  tz: str | None) -> TimeRange:
    for param, value in (("start", start), ("end", end)):
        # ASCII digits only: str.isdigit() is also true of "¹" and "２", which int() refuses.
        if value is not None and _YEAR.fullmatch(value[:4]) and int(value[:4]) not in YEARS:
            raise BadParameter(param, f"the year must be between {YEARS.start} and "
                                      f"{YEARS.stop - 1}")
    return resolve_range(period, start, end, tz)


def usage_query(
    principal: Annotated[Principal, Depends(usage_principal)],
    api_key_id: Annotated[list[str] | None, Query(
        description="Only these keys (repeatable).", max_length=200)] = None,
    model: Annotated[list[str] | None, Query(
        description="Only these models (repeatable).", max_length=200)] = None,
    call_type: Annotated[list[str] | None, Query(
        description="Only these call types: model, service, internal (repeatable).")] = None,
    model_category: Annotated[list[str] | None, Query(
        description="Only these categories: chat, completion, embedding, rerank, image, "
                    "audio, other (repeatable).")] = None,
    period: Annotated[str | None, Query(
        description="1d, 3d, 7d or 30d: the last N calendar days in tz, today included. "
                    "The default when neither period nor start/end is given is 7d.")] = None,
    start: Annotated[str | None, Query(
        description="RFC 3339 instant or YYYY-MM-DD (local midnight in tz).")] = None,
    end: Annotated[str | None, Query(
        description="Exclusive; RFC 3339 instant or YYYY-MM-DD.")] = None,
    tz: Annotated[str | None, Query(description="IANA time zone; default UTC.")] = None,
) -> UsageQuery:
    keys = tuple(api_key_id or ())
    if not principal.is_admin:
        others = [k for k in keys if k != principal.api_key_id]
        if others:
            raise ApiError(403, "An API key may only read its own usage", code="forbidden_key",
                           param="api_key_id")
        keys = (principal.api_key_id,)  # type: ignore[assignment]
    for value in (*keys, *(model or ())):
        if not value or len(value) > 200 or "\x00" in value:
            raise BadParameter("model" if value in (model or ()) else "api_key_id",
                               "must be between 1 and 200 characters, without NUL")
    call_filter = CallFilter(
        api_key_ids=keys,
        models=tuple(model or ()),
        call_types=_checked(call_type, CALL_TYPES, "call_type"),
        model_categories=_checked(model_category, MODEL_CATEGORIES, "model_category"),
    )
    return UsageQuery(call_filter, checked_range(period, start, end, tz))
