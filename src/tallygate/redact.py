"""Passwords in URLs, hidden wherever a URL may be shown: ``config show``, errors and logs.

``postgresql://app:s3cret@db/ledger`` reads ``postgresql://app:***@db/ledger``; the user and
host stay, since they say which server is meant. A URL's user information ends at its last
``@`` before the path, so a password holding an unencoded ``@`` is hidden whole.
"""

from __future__ import annotations

import logging
import re
from typing import Any

HIDDEN = "***"
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^:/?#\s@]*):[^/?#\s]*@")


def redact_urls(text: str) -> str:
    """``text`` with the password of every URL in it replaced by ``***``."""
    return _USERINFO.sub(rf"\g<head>:{HIDDEN}@", text)


def redact_values(value: Any) -> Any:
    """Every string in a structure of dicts and lists, redacted."""
    if isinstance(value, str):
        return redact_urls(value)
    if isinstance(value, dict):
        return {name: redact_values(item) for name, item in value.items()}
    if isinstance(value, list):
        return [redact_values(item) for item in value]
    return value


class _RedactedRecord(logging.LogRecord):
    def getMessage(self) -> str:  # noqa: N802 (logging's name)
        return redact_urls(super().getMessage())


def redact_logs() -> None:
    """Every log message of this process (ours, uvicorn's, a driver's) redacted as it is
    formatted. Idempotent; leaves a factory someone else installed alone."""
    if logging.getLogRecordFactory() is logging.LogRecord:
        logging.setLogRecordFactory(_RedactedRecord)
