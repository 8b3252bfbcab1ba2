"""``/api/v1/keys``: API key management (admin only). The secret is returned once."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request, Response

from tallygate.api.auth import Principal, admin_principal
from tallygate.api.errors import ApiError
from tallygate.keys.schemas import CreatedKey, KeyCreate, KeyOut, KeyUpdate
from tallygate.keys.service import KeyNotFound, KeyService

router = APIRouter(prefix="/api/v1/keys", tags=["keys"])
Admin = Annotated[Principal, Depends(admin_principal)]


def _keys(request: Request) -> KeyService:
    keys: KeyService = request.app.state.keys
    return keys


def _not_found(key_id: str) -> ApiError:
    return ApiError(404, f"No API key with id {key_id!r}", code="key_not_found", param="id")


def _id(key_id: str) -> str:
    """An id no key can have is not looked up: PostgreSQL refuses NUL characters outright."""
    if len(key_id) > 64 or "\x00" in key_id:
        raise _not_found(key_id)
    return key_id


@router.get("", summary="List keys (prefixes only, never secrets), with live figures")
def list_keys(
    request: Request, _: Admin,
    flagged: Annotated[bool, Query(
        description="Only keys near a limit (80 % used, or forecast to run out before the "
                    "period resets) or their expiry (within 7 days).")] = False,
) -> dict[str, list[KeyOut]]:
    return {"data": _keys(request).list(flagged=flagged)}


@router.post("", status_code=201, summary="Create a key; the secret is in this answer only")
def create_key(request: Request, body: KeyCreate, principal: Admin) -> CreatedKey:
    return _keys(request).create(body, principal.actor)


@router.get("/{key_id}", summary="One key, with its live figures and forecast")
def get_key(request: Request, key_id: str, _: Admin) -> KeyOut:
    try:
        return _keys(request).get(_id(key_id))
    except KeyNotFound:
        raise _not_found(key_id) from None


@router.patch("/{key_id}", summary="Change a key's name, status or limits")
def update_key(request: Request, key_id: str, body: KeyUpdate, principal: Admin) -> KeyOut:
    try:
        return _keys(request).update(_id(key_id), body, principal.actor)
    except KeyNotFound:
        raise _not_found(key_id) from None
    except ValueError as exc:
        param = str(exc).split(":", 1)[0]
        raise ApiError(400, str(exc), code="invalid_parameter", param=param) from None


@router.post("/{key_id}/rotate", summary="Replace the secret; the new one is shown once")
def rotate_key(request: Request, key_id: str, principal: Admin) -> CreatedKey:
    try:
        return _keys(request).rotate(_id(key_id), principal.actor)
    except KeyNotFound:
        raise _not_found(key_id) from None


@router.delete("/{key_id}", status_code=204, summary="Delete a key (its usage stays)")
def delete_key(request: Request, key_id: str, principal: Admin) -> Response:
    try:
        _keys(request).delete(_id(key_id), principal.actor)
    except KeyNotFound:
        raise _not_found(key_id) from None
    return Response(status_code=204)
