"""The admin application: the ``/api/v1`` API, the pages, the static files and the OpenAPI
document, on FastAPI. app.py builds it the first time one of its paths is asked for; it
shares the running application's state (the database, the ledger, the key service)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import State

from tallygate import __version__
from tallygate.api import (
    anomalies,
    audit,
    dimensions,
    health,
    keys,
    metrics,
    pricing,
    reconciliation,
    usage,
)
from tallygate.api.errors import install_error_handlers
from tallygate.web import pages
from tallygate.web.security import SecurityHeaders


def build_admin_app(state: State) -> FastAPI:
    app = FastAPI(
        title="tallygate",
        version=__version__,
        summary="OpenAI-compatible LLM API gateway with an exact usage ledger",
        docs_url=None,  # served from vendored assets by web/pages.py
        redoc_url=None,
    )
    app.state = state
    install_error_handlers(app)
    app.openapi = _openapi_with_error_answers(app)  # type: ignore[method-assign]
    app.include_router(dimensions.router)
    app.include_router(usage.router)
    app.include_router(keys.router)
    app.include_router(pricing.router)
    app.include_router(anomalies.router)
    app.include_router(audit.router)
    app.include_router(reconciliation.router)
    app.include_router(metrics.router)
    app.include_router(health.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=Path(__file__).parent / "web" / "static"),
              name="static")
    app.add_middleware(SecurityHeaders)
    return app


_ERROR_SCHEMA = {
    "type": "object", "required": ["error"], "description": "OpenAI's error shape.",
    "properties": {"error": {
        "type": "object", "required": ["message", "type", "code", "param"],
        "properties": {"message": {"type": "string"}, "type": {"type": "string"},
                       "code": {"type": ["string", "null"]},
                       "param": {"type": ["string", "null"]}}}}}
_ERROR_ANSWERS = {
    "400": "A bad parameter or body; `param` names it.",
    "401": "No credential, or an unknown one.",
    "403": "An API key asking for admin endpoints or another key's usage; an inactive key.",
}


def _openapi_with_error_answers(app: FastAPI) -> Callable[[], dict[str, Any]]:
    """The OpenAPI document with the errors ``/api/v1`` really answers (docs/api.md): FastAPI
    would document 422 for invalid input, where tallygate answers 400, in OpenAI's shape."""
    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        document = FastAPI.openapi(app)
        schemas = document.setdefault("components", {}).setdefault("schemas", {})
        schemas["Error"] = _ERROR_SCHEMA
        error = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
        for path, operations in document["paths"].items():
            if not path.startswith("/api/v1/"):
                continue
            for method, operation in operations.items():
                answers = operation["responses"]
                answers.pop("422", None)
                wanted = dict(_ERROR_ANSWERS)
                if "{" in path:
                    wanted["404"] = "No such resource."
                if method == "post" and path.endswith("/events"):
                    wanted["413"] = "Too many events, or too large a body."
                for status, description in wanted.items():
                    answers.setdefault(status, {"description": description, "content": error})
        if "schemas/HTTPValidationError" not in str(document["paths"]):
            schemas.pop("HTTPValidationError", None)
            schemas.pop("ValidationError", None)
        app.openapi_schema = document
        return document

    return openapi
