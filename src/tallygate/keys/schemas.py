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

    _ips = field_validator("allowed_ips")(_check_ips)
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


class CreatedKey(KeyOut):
    key: str = Field(description="The secret. Shown only in this response; store it now.")
