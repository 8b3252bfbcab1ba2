"""Who is calling ``/api/v1``: the admin, or a key holder who may only see its own usage."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Request

from tallygate.api.errors import ApiError
from tallygate.keys.access import ip_allowed
from tallygate.keys.secrets import hash_secret, same_hash
from tallygate.keys.service import KeyService, effective_status
from tallygate.store.keys import StoredKey, get_key
from tallygate.web.sessions import COOKIE, CSRF_HEADER, Sessions


@dataclass(frozen=True, slots=True)
class Principal:
    """``api_key_id`` is None for the admin; a key holder is scoped to its key."""

    api_key_id: str | None

    @property
    def is_admin(self) -> bool:
        return self.api_key_id is None

    @property
    def actor(self) -> str:
        return "admin" if self.api_key_id is None else f"key:{self.api_key_id}"


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "Missing credential: send Authorization: Bearer <admin token or "
                            "API key>", code="missing_credential",
                       headers={"WWW-Authenticate": "Bearer"})
    return token.strip()


def is_admin_token(request: Request, token: str) -> bool:
    """Whether ``token`` is the admin credential now in effect (never an empty one)."""
    expected: str | None = request.app.state.admin_token_hash
    return bool(token) and expected is not None and same_hash(hash_secret(token), expected)


SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _session_principal(request: Request) -> Principal | None:
    """A signed-in page's session, if the request carries its cookie. A state-changing
    request must also carry the session's CSRF token in ``X-CSRF-Token``."""
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    sessions: Sessions = request.app.state.sessions
    session = sessions.find(token)
    if session is None:
        raise ApiError(401, "Your session has ended; sign in again", code="session_expired")
    if request.method not in SAFE_METHODS and not same_hash(
            request.headers.get(CSRF_HEADER, ""), session.csrf_token):
        raise ApiError(403, "Missing or wrong CSRF token", code="csrf_failed")
    if session.api_key_id is None:
        return Principal(None)
    key = get_key(request.app.state.db, session.api_key_id)
    if key is None or effective_status(key) != "active":
        raise ApiError(403, "This API key is no longer active", code="key_inactive")
    return _key_principal(request, key)


def key_usable_here(request: Request, key: StoredKey) -> bool:
    """Whether the key's ``allowed_ips`` let it be used from this request's address (the
    same rule as the gateway's, behind the same trusted proxies)."""
    return ip_allowed(key.allowed_ips, request.client.host if request.client else None)


def _key_principal(request: Request, key: StoredKey) -> Principal:
    if not key_usable_here(request, key):
        raise ApiError(403, "This API key may not be used from this address",
                       code="ip_not_allowed")
    return Principal(key.id)


def usage_principal(request: Request) -> Principal:
    """The admin, or an active API key (scoped to its own usage): by bearer token, or by the
    session cookie of a signed-in page."""
    if "authorization" not in request.headers:
        from_session = _session_principal(request)
        if from_session is not None:
            return from_session
    token = _bearer(request)
    if is_admin_token(request, token):
        return Principal(None)
    keys: KeyService = request.app.state.keys
    key = keys.authenticate(token)
    if key is None:
        raise ApiError(401, "Invalid credential", code="invalid_credential",
                       headers={"WWW-Authenticate": "Bearer"})
    if effective_status(key) != "active":
        raise ApiError(403, f"This API key is {effective_status(key)}", code="key_inactive")
    return _key_principal(request, key)


def admin_principal(request: Request) -> Principal:
    """Only the admin credential; a key holder is refused with 403."""
    principal = usage_principal(request)
    if not principal.is_admin:
        raise ApiError(403, "This endpoint needs the admin credential", code="admin_only")
    return principal
