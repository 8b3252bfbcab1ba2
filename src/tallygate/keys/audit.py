"""Reading the audit log of key, price and setting changes: one function for the API, the
CLI and the page, so they show the same entries and never a secret."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from tallygate.domain.records import format_ts
from tallygate.ledger.timerange import BadParameter, to_us
from tallygate.store.audit import KEY_ACTION_PREFIX, AuditFilter, StoredAuditEntry, audit_page
from tallygate.store.database import Database

_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
# Detail names that could carry a credential. No writer stores one today (a rotation writes
# no details at all); this keeps a future writer's slip from reaching a reader.
_SECRET_NAMES = re.compile(r"secret|token|password|hash|^key$|credential", re.IGNORECASE)
REDACTED = "[redacted]"


def parse_instant(param: str, text: str) -> int:
    """Microseconds of an RFC 3339 instant; a bare date is its first instant in UTC, and a
    time without an offset is read in UTC. ``BadParameter`` names ``param`` otherwise."""
    if _DATE.match(text):
        try:
            return to_us(datetime.combine(date.fromisoformat(text), datetime.min.time(), UTC))
        except ValueError:
            raise BadParameter(param, f"{text!r} is not a valid date") from None
    try:
        moment = datetime.fromisoformat(text.replace("z", "Z").replace("Z", "+00:00"))
    except ValueError:
        raise BadParameter(param, f"{text!r} is not an RFC 3339 time such as "
                                  "2026-11-21T08:00:00Z") from None
    return to_us(moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC))


def audit_filter(*, actor: str | None = None, actions: list[str] | None = None,
                 api_key_id: str | None = None, start: str | None = None,
                 end: str | None = None) -> AuditFilter:
    """The filter the API's and the CLI's parameters ask for, checked: ``BadParameter``
    names the first wrong one."""
    for param, value in (("actor", actor), ("api_key_id", api_key_id),
                         *(("action", a) for a in actions or ())):
        if value is not None and (not value or len(value) > 200 or "\x00" in value):
            raise BadParameter(param, "must be between 1 and 200 characters, without NUL")
    start_us = None if start is None else parse_instant("start", start)
    end_us = None if end is None else parse_instant("end", end)
    if start_us is not None and end_us is not None and end_us <= start_us:
        raise BadParameter("end", "must be after start")
    return AuditFilter(actors=() if actor is None else (actor,),
                       actions=tuple(actions or ()),
                       api_key_ids=() if api_key_id is None else (api_key_id,),
                       start_us=start_us, end_us=end_us)


def _redacted(details: dict[str, Any] | None) -> dict[str, Any] | None:
    if details is None:
        return None
    return {name: REDACTED if _SECRET_NAMES.search(name) else value
            for name, value in details.items()}


def audit_entry(entry: StoredAuditEntry) -> dict[str, Any]:
    """An entry as the API shows it: RFC 3339 time, the key it concerns, no secret."""
    is_key = entry.action.startswith(KEY_ACTION_PREFIX)
    return {
        "id": entry.id,
        "ts": format_ts(entry.ts_us),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "api_key_id": entry.target if is_key else None,
        "details": _redacted(entry.details),
    }


@dataclass(frozen=True, slots=True)
class AuditPage:
    entries: list[dict[str, Any]]
    # ``(ts, id)`` of the last entry when more follow: where the next page starts.
    next_position: tuple[int, int] | None


def read_audit(db: Database, f: AuditFilter, *, before: tuple[int, int] | None = None,
               limit: int = 100) -> AuditPage:
    """One page of entries, newest first."""
    rows = audit_page(db, f, before=before, limit=limit + 1)
    page = rows[:limit]
    more = len(rows) > limit
    return AuditPage([audit_entry(row) for row in page],
                     (page[-1].ts_us, page[-1].id) if more else None)
