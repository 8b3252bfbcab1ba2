"""The opaque cursors of the API's newest-first pages: the ``(ts, id)`` of the last item
shown, so the next page starts strictly after it whatever was written since."""

from __future__ import annotations

import base64
import binascii

from tallygate.ledger.timerange import BadParameter


def decode_cursor(cursor: str) -> tuple[int, str]:
    try:
        ts, _, item_id = base64.urlsafe_b64decode(cursor.encode() + b"==").decode().partition(":")
        # Bounded like the columns it is compared with, so no driver overflows on it.
        if (not item_id or len(item_id) > 128 or "\x00" in item_id
                or not 0 <= int(ts) < 2**63):
            raise ValueError
        return int(ts), item_id
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise BadParameter("cursor", "is not a cursor this API returned") from None


def decode_int_cursor(cursor: str) -> tuple[int, int]:
    """A cursor over rows with an integer id (the audit log)."""
    ts, item_id = decode_cursor(cursor)
    if not item_id.isascii() or not item_id.isdigit() or int(item_id) >= 2**63:
        raise BadParameter("cursor", "is not a cursor this API returned")
    return ts, int(item_id)


def encode_cursor(ts_us: int, item_id: str | int) -> str:
    return base64.urlsafe_b64encode(f"{ts_us}:{item_id}".encode()).decode().rstrip("=")
