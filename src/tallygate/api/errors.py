"""Every error of the API in OpenAI's shape (tallygate/errors.py)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from tallygate.errors import error_body
from tallygate.ledger.timerange import BadParameter


class ApiError(Exception):
    def __init__(self, status: int, message: str, *, code: str | None = None,
                 param: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers = headers


def error_response(status: int, message: str, code: str | None = None, param: str | None = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(error_body(status, message, code, param), status_code=status,
                        headers=headers)


def _param_of(location: tuple[Any, ...]) -> str | None:
    parts = [str(p) for p in location if p not in ("query", "body", "path", "header")]
    return ".".join(parts) or None


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.code, exc.param, exc.headers)

    @app.exception_handler(BadParameter)
    async def _bad_parameter(_: Request, exc: BadParameter) -> JSONResponse:
        return error_response(400, str(exc), "invalid_parameter", exc.param)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0]
        # An unreadable body has no parameter to name (its "location" is a byte offset).
        param = None if first.get("type") == "json_invalid" else \
            _param_of(tuple(first.get("loc", ())))
        message = str(first.get("msg", "invalid value")).removeprefix("Value error, ")
        text = f"{param}: {message}" if param else message
        return error_response(400, text, "invalid_parameter", param)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:
            # Starlette names only the first route's methods; a path can have several.
            headers["Allow"] = ", ".join(_allowed_methods(request))
        return error_response(exc.status_code, str(exc.detail), None, None, headers or None)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method some route of the application takes on the request's path: each is
    tried against the routes as they match (routers included in routers too)."""
    routes = request.app.router.routes
    return [method for method in _METHODS
            if any(route.matches({**request.scope, "method": method})[0] == Match.FULL
                   for route in routes)]
