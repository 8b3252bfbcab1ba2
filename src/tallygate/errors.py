"""OpenAI's error shape, ``{"error": {"message", "type", "code", "param"}}``: one body for the
gateway's answers and the API's, in a module that loads no web framework (the gateway's
process loads the API only when it is first asked for, app.py)."""

from __future__ import annotations

from typing import Any

_TYPES = {400: "invalid_request_error", 401: "authentication_error",
          403: "permission_error", 404: "not_found_error", 409: "conflict_error",
          413: "request_too_large", 429: "rate_limit_error"}


def error_body(status: int, message: str, code: str | None = None,
               param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": _TYPES.get(status, "api_error"),
                      "code": code, "param": param}}
