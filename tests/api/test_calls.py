"""GET /api/v1/usage/calls: newest first, every record exactly once across pages."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from tallygate.domain.records import CallRecord
from tests.api.support import Api, recent_window, record, varied_records


def walk(api: Api, query: dict[str, Any], limit: int, token: str | None = None
         ) -> list[dict[str, Any]]:
    seen: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):
        params = {**query, "limit": limit, **({} if cursor is None else {"cursor": cursor})}
        page = api.ok("/api/v1/usage/calls", params) if token is None else \
            api.ok("/api/v1/usage/calls", params, token=token)
        assert len(page["data"]) <= limit
        seen += page["data"]
        if not page["has_more"]:
            assert page["next_cursor"] is None
            return seen
        assert len(page["data"]) == limit and page["next_cursor"]
        cursor = page["next_cursor"]
    raise AssertionError("the cursor never ended")


def newest_first(records: list[CallRecord]) -> list[str]:
    return [r.id for r in sorted(records, key=lambda r: (r.ts_us, r.id), reverse=True)]


def test_pages_walk_every_record_once_newest_first_with_filters(api: Api) -> None:
    now = datetime.now(UTC)
    records = varied_records(now, count=90)
    # Several records in the very same microsecond: the id breaks the tie.
    same_instant = now - timedelta(hours=3)
    records += [record(f"tie-{c}", same_instant, key="key-a") for c in "qbzak"]
    api.ledger.store(records)
    window = recent_window(now)

    for limit in (1, 7, 95, 1000):
        ids = [r["id"] for r in walk(api, window, limit)]
        assert ids == newest_first(records), limit

    def matching(**want: Any) -> list[CallRecord]:
        return [r for r in records if all(getattr(r, k) in v for k, v in want.items())]

    cases = [
        ({"model": "bge-m3"}, matching(model={"bge-m3"})),
        ({"api_key_id": ["key-a", "key-b"]}, matching(api_key_id={"key-a", "key-b"})),
        ({"call_type": "internal"}, matching(call_type={"internal"})),
        ({"model_category": ["chat", "embedding"]},
         matching(model_category={"chat", "embedding"})),
        ({"model": "bge-m3", "call_type": ["model", "service"], "api_key_id": "key-b"},
         matching(model={"bge-m3"}, call_type={"model", "service"}, api_key_id={"key-b"})),
        ({"model": "never-used"}, []),
    ]
    for filters, expected in cases:
        ids = [r["id"] for r in walk(api, {**window, **filters}, 4)]
        assert ids == newest_first(expected), filters

    # A time range: [start, end) exactly, to the microsecond.
    cut_start, cut_end = records[10], records[40]
    query = {"start": _rfc3339(cut_end.ts_us), "end": _rfc3339(cut_start.ts_us)}
    ids = [r["id"] for r in walk(api, query, 6)]
    assert ids == newest_first([r for r in records
                                if cut_end.ts_us <= r.ts_us < cut_start.ts_us])
    assert cut_end.id in ids and cut_start.id not in ids

    # Every record in full, as stored.
    shown = {r["id"]: r for r in walk(api, window, 1000)}
    for r in records:
        assert shown[r.id] == r.as_dict()


def test_records_arriving_during_a_walk_do_not_disturb_it(api: Api) -> None:
    now = datetime.now(UTC)
    first = varied_records(now - timedelta(hours=1), count=30)
    api.ledger.store(first)
    window = recent_window(now)
    page = api.ok("/api/v1/usage/calls", {**window, "limit": 10})
    # Newer records arrive, and one older than the cursor (a late ingest).
    late = record("late-arrival", now - timedelta(hours=30))
    api.ledger.store([record(f"new-{i}", now - timedelta(seconds=i + 1)) for i in range(5)]
                     + [late])
    rest: list[dict[str, Any]] = []
    cursor = page["next_cursor"]
    while cursor:
        nxt = api.ok("/api/v1/usage/calls", {**window, "limit": 10, "cursor": cursor})
        rest += nxt["data"]
        cursor = nxt["next_cursor"]
    ids = [r["id"] for r in page["data"] + rest]
    assert ids == newest_first([*first, late])


def _rfc3339(ts_us: int) -> str:
    moment = datetime.fromtimestamp(ts_us // 1_000_000, UTC).replace(
        microsecond=ts_us % 1_000_000)
    return moment.isoformat()
