"""Pages and sign-in. Every number a page shows comes from the ``/api/v1`` endpoints; the
pages only lay them out."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates

from tallygate import __version__
from tallygate.api.auth import is_admin_token, key_usable_here
from tallygate.keys.secrets import same_hash
from tallygate.keys.service import KeyService, effective_status
from tallygate.store.keys import get_key
from tallygate.web.sessions import COOKIE, Session, Sessions, SignInBrake

templates = Jinja2Templates(directory=Path(__file__).parent / "templates")
router = APIRouter(include_in_schema=False)


def _session(request: Request) -> tuple[str, Session] | None:
    token = request.cookies.get(COOKIE)
    if not token:
        return None
    sessions: Sessions = request.app.state.sessions
    session = sessions.find(token)
    if session is None:
        return None
    if session.api_key_id is not None:
        key = get_key(request.app.state.db, session.api_key_id)
        if key is None or effective_status(key) != "active":
            sessions.end(token)  # the key was disabled, expired or deleted
            return None
        if not key_usable_here(request, key):
            return None  # not from here (the session stays for where it is allowed)
    return token, session


def _page(request: Request, template: str, session: Session, **context: Any) -> HTMLResponse:
    return templates.TemplateResponse(request, template, {
        "version": __version__, "csrf_token": session.csrf_token,
        "is_admin": session.api_key_id is None, "api_key_id": session.api_key_id, **context})


@router.get("/", response_class=HTMLResponse)
def usage_page(request: Request) -> Response:
    found = _session(request)
    if found is None:
        return RedirectResponse("/login", status_code=303)
    return _page(request, "usage.html", found[1])


@router.get("/keys", response_class=HTMLResponse)
def keys_page(request: Request) -> Response:
    found = _session(request)
    if found is None:
        return RedirectResponse("/login?next=/keys", status_code=303)
    if found[1].api_key_id is not None:
        return RedirectResponse("/", status_code=303)
    return _page(request, "keys.html", found[1], currency=request.app.state.settings.currency)


@router.get("/docs", response_class=HTMLResponse)
def api_docs(request: Request) -> HTMLResponse:
    """Swagger UI from vendored files (FastAPI's own /docs would load it from a CDN)."""
    return templates.TemplateResponse(request, "docs.html", {})


LOGIN_COOKIE = "tallygate_login"
LOGIN_FORM_SECONDS = 3600


def _login_page(request: Request, error: str | None = None, status_code: int = 200,
                headers: dict[str, str] | None = None) -> HTMLResponse:
    """The sign-in form with a fresh CSRF token, also set in a cookie only this site sends
    back (double submit): a form posted from another site carries neither, so it cannot sign
    a visitor's browser in as someone else."""
    form_token = secrets.token_urlsafe(32)
    response = templates.TemplateResponse(
        request, "login.html", {"version": __version__, "error": error,
                                "form_token": form_token},
        status_code=status_code, headers=headers)
    response.set_cookie(LOGIN_COOKIE, form_token, max_age=LOGIN_FORM_SECONDS, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/login")
    return response


@router.get("/login", response_class=HTMLResponse)
def login_form(request: Request) -> HTMLResponse:
    return _login_page(request)


@router.post("/login", response_class=HTMLResponse)
def login(request: Request, token: str = Form(..., max_length=200),
          next: str = Form("/", max_length=200),
          csrf_token: str = Form("", max_length=100)) -> Response:
    if not csrf_token or not same_hash(csrf_token, request.cookies.get(LOGIN_COOKIE, "")):
        return _login_page(request, "form_expired", status_code=403)
    brake: SignInBrake = request.app.state.sign_in_brake
    address = request.client.host if request.client else "unknown"
    wait = brake.retry_after(address)
    if wait is not None:
        return _login_page(request, "too_many", status_code=429,
                           headers={"Retry-After": str(wait)})
    accepted, api_key_id = _who(request, token.strip())
    if not accepted:
        brake.failed(address)
        return _login_page(request, "invalid", status_code=401)
    sessions: Sessions = request.app.state.sessions
    cookie, _ = sessions.start(api_key_id)
    target = next if next.startswith("/") and not next.startswith("//") else "/"
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(COOKIE, cookie, max_age=sessions.lifetime_s, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https", path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login")
    return response


def _who(request: Request, token: str) -> tuple[bool, str | None]:
    """Whether the token may sign in, and as whom: None for the admin, else the key's id."""
    if is_admin_token(request, token):
        return True, None
    keys: KeyService = request.app.state.keys
    key = keys.authenticate(token)
    if key is None or effective_status(key) != "active" or not key_usable_here(request, key):
        # From a refused address a key signs in no more than a wrong token: the answer
        # tells nobody there that the key exists.
        return False, None
    return True, key.id


@router.post("/logout")
def logout(request: Request, csrf_token: str = Form("", max_length=100)) -> Response:
    found = _session(request)
    if found is not None and same_hash(csrf_token, found[1].csrf_token):
        sessions: Sessions = request.app.state.sessions
        sessions.end(found[0])
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE, path="/")
    return response
