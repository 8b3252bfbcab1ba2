"""``/api/v1/audit``: who changed which key, price or setting, and when (admin only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from tallygate.api.auth import Principal, admin_principal
from tallygate.api.cursor import decode_int_cursor, encode_cursor
from tallygate.keys.audit import audit_filter, read_audit

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])
Admin = Annotated[Principal, Depends(admin_principal)]


@router.get("", summary="Audit log entries, newest first, cursor-paginated")
def list_audit(
    request: Request,
    _: Admin,
    actor: Annotated[str | None, Query(
        description="Only changes by this actor: admin, cli, or key:ID.")] = None,
    action: Annotated[list[str] | None, Query(
        description="Only these actions (repeatable): key.create, key.update, key.discount, "
                    "key.rotate, key.delete, price.set, price.recompute.", max_length=50)
    ] = None,
    api_key_id: Annotated[str | None, Query(
        description="Only the changes of this API key.")] = None,
    start: Annotated[str | None, Query(
        description="RFC 3339 instant (inclusive); a bare date is its first instant in "
                    "UTC.")] = None,
    end: Annotated[str | None, Query(
        description="RFC 3339 instant (exclusive), after start.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    f = audit_filter(actor=actor, actions=action, api_key_id=api_key_id, start=start, end=end)
    before = None if cursor is None else decode_int_cursor(cursor)
    page = read_audit(request.app.state.db, f, before=before, limit=limit)
    return {
        "data": page.entries,
        "has_more": page.next_position is not None,
        "next_cursor": None if page.next_position is None else encode_cursor(
            *page.next_position),
    }
