"""Request and response shapes of API keys, apart from the stored row.

The secret appears only in :class:`CreatedKey`, which is returned once, at creation or
rotation; :class:`KeyOut` has no field that could carry it.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictBool, StrictInt, field_validator

QuotaPeriod = Literal["total", "daily", "monthly"]
Limit = Annotated[StrictInt, Field(ge=1, le=10**12)]


def _check_ips(value: list[str] | None) -> list[str] | None:
    if value is None:
        return None
    for item in value:
        try:
            ipaddress.ip_network(item, strict=False)
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or CIDR network") from None
    return value


def _check_no_nul(value: str | list[str] | None) -> str | list[str] | None:
    """PostgreSQL refuses NUL in text: refuse it here, with the field's name."""
    texts = value if isinstance(value, list) else [value]
    if any(text is not None and "\x00" in text for text in texts):
        raise ValueError("must not contain NUL characters")
    return value


def _only_text_times(value: object) -> object:
    """An expiry is an RFC 3339 time: a bare number (0 = 1970) is refused, not guessed at."""
    if value is not None and not isinstance(value, str | datetime):
        raise ValueError("must be an RFC 3339 time such as 2027-01-01T00:00:00Z")
    return value


def _check_aware(value: datetime | None) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise ValueError("must carry a time-zone offset (e.g. 2027-01-01T00:00:00Z)")
    return value


class KeyFields(BaseModel):
    """Fields a client may set, at creation or in a PATCH."""

    model_config = {"extra": "forbid", "str_strip_whitespace": True}

    owner: str | None = Field(None, max_length=200)
    tags: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = Field(
        None, max_length=50)
    expires_at: datetime | None = None
    allowed_models: list[Annotated[str, Field(min_length=1, max_length=200)]] | None = None
    allowed_ips: list[str] | None = None
    rpm_limit: Limit | None = None
    tpm_limit: Limit | None = None
    quota_tokens: Limit | None = None
    budget: Decimal | None = Field(None, gt=0, le=Decimal(10**9))
    quota_period: QuotaPeriod = "total"
    max_concurrency: Limit | None = Field(
        None, description="How many of the key's calls may be in flight at once (429 "
        "concurrency_limit_exceeded above it); null: no limit.")
    discount_percent: Decimal | None = Field(
        None, ge=0, le=100, description="A percentage off the price table for this key's "
        "calls, from now on (past calls keep the cost they were made at); null or 0: none.")

    _ips = field_validator("allowed_ips")(_check_ips)
    _text_time = field_validator("expires_at", mode="before")(_only_text_times)
    _aware = field_validator("expires_at")(_check_aware)
    _no_nul = field_validator("name", "owner", "tags", "allowed_models",
                              check_fields=False)(_check_no_nul)


class KeyCreate(KeyFields):
    name: str = Field(min_length=1, max_length=200)
    internal: StrictBool = False


class KeyUpdate(KeyFields):
    """A PATCH: only the fields present are changed; ``null`` clears a limit."""

    name: str | None = Field(None, min_length=1, max_length=200)
    internal: StrictBool | None = None
    status: Literal["active", "disabled"] | None = None
    quota_period: QuotaPeriod | None = None  # type: ignore[assignment]


class KeyUsage(BaseModel):
    """What a key used in its current quota period, and when it runs out at its rate."""

    period: QuotaPeriod
    period_start: datetime | None = Field(
        description="Start of the current period (UTC calendar day or month); null for a "
        "total quota, counted over the key's whole life.")
    period_end: datetime | None = Field(description="When the period resets; null for total.")
    tokens: int = Field(description="Tokens used in the current period.")
    cost: str = Field(description="Cost in the current period, an exact decimal string.")
    window_hours: int = Field(description="The trailing window the rates are measured over.")
    tokens_per_hour: float
    cost_per_hour: str
    quota_used: float | None = Field(description="Share of quota_tokens used (0-1+).")
    budget_used: float | None = Field(description="Share of the budget used (0-1+).")
    exhausted: bool = Field(description="The quota or the budget is used up.")
    runs_out_at: datetime | None = Field(
        description="When the quota or budget runs out at the trailing rate, if before the "
        "period resets; null when it does not (or there is no limit, or no recent use).")
    runs_out_of: Literal["quota", "budget"] | None


class KeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    status: Literal["active", "disabled", "expired"]
    internal: bool
    owner: str | None
    tags: list[str]
    created_at: datetime
    updated_at: datetime
    expires_at: datetime | None
    allowed_models: list[str] | None
    allowed_ips: list[str] | None
    rpm_limit: int | None
    tpm_limit: int | None
    quota_tokens: int | None
    budget: str | None
    quota_period: QuotaPeriod
    max_concurrency: int | None = None
    discount_percent: str | None = Field(
        None, description="The discount in force, a percentage; null: never had one.")
    usage: KeyUsage | None = Field(None, description="Live figures of the current period.")
    near_limit: bool = Field(
        False, description="At least 80 % of the quota or budget used, or forecast to run "
        "out before the period resets (within 7 days for a total quota).")
    near_expiry: bool = Field(False, description="Expires within 7 days.")
    warnings: list[str] = Field(
        default_factory=list, description="Why the key is flagged: quota_near, budget_near, "
        "quota_exhausted, budget_exhausted, runs_out_soon, expires_soon.")


class CreatedKey(KeyOut):
    key: str = Field(description="The secret. Shown only in this response; store it now.")
