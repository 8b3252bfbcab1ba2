"""``/api/v1/usage``: the statistics, the call records, exports and event ingestion."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from starlette.concurrency import iterate_in_threadpool

from tallygate.api.auth import Principal, admin_principal
from tallygate.api.cursor import decode_cursor, encode_cursor
from tallygate.api.errors import ApiError
from tallygate.api.filters import usage_query
from tallygate.keys.service import KeyService
from tallygate.ledger import export
from tallygate.ledger.focus import SubAccount, focus_export
from tallygate.ledger.ingest import IngestResult, ingest_events
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import (
    UsageQuery,
    usage_breakdown,
    usage_summary,
    usage_trend,
)
from tallygate.ledger.timerange import BadParameter
from tallygate.store.export import stream_calls
from tallygate.store.usage import iter_calls

router = APIRouter(prefix="/api/v1/usage", tags=["usage"])

Query_ = Annotated[UsageQuery, Depends(usage_query)]


def _ledger(request: Request) -> Ledger:
    ledger: Ledger = request.app.state.ledger
    return ledger


@router.get("/summary", summary="The indicator cards for the filters")
def summary(request: Request, query: Query_) -> dict[str, Any]:
    return usage_summary(_ledger(request), query)


@router.get("/trend", summary="Buckets and one series per model (or per group_by)")
def trend(
    request: Request,
    query: Query_,
    metric: Annotated[str, Query(description="requests, total_tokens, input_tokens, "
                                             "output_tokens, cost, cache_write_tokens or "
                                             "units (with unit)")] = "requests",
    granularity: Annotated[str, Query(description="day, hour or minute")] = "day",
    group_by: Annotated[str, Query(description="model, api_key, call_type, "
                                               "model_category or upstream_model")] = "model",
    unit: Annotated[str | None, Query(
        description="With metric=units: image, second, character, search_unit, page or "
                    "request")] = None,
) -> dict[str, Any]:
    return usage_trend(_ledger(request), query, metric, granularity, group_by, unit)


def _group_by(values: list[str] | None) -> list[str]:
    groups: list[str] = []
    for value in values or ["model"]:
        groups.extend(part.strip() for part in value.split(",") if part.strip())
    return groups


@router.get("/breakdown", summary="Per key, model, call type or category (or two of them)")
def breakdown(
    request: Request,
    query: Query_,
    group_by: Annotated[list[str] | None, Query(
        description="api_key, model, call_type, model_category or upstream_model; two "
                    "(comma-separated or repeated) for a cross table")] = None,
    sort: Annotated[str, Query(description="A column, - for descending")] = "-calls",
    percentiles: Annotated[bool, Query(
        description="Add p50/p95 latency and time to first token per row (exact, from raw "
                    "records: slower on long ranges; null where raw records were purged)")
    ] = False,
) -> dict[str, Any]:
    return usage_breakdown(_ledger(request), query, _group_by(group_by), sort,
                           with_percentiles=percentiles)


@router.get("/calls", summary="Call records, newest first, cursor-paginated")
def calls(
    request: Request,
    query: Query_,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    cursor: Annotated[str | None, Query(description="next_cursor of the previous page")] = None,
) -> dict[str, Any]:
    before = None if cursor is None else decode_cursor(cursor)
    records = list(iter_calls(_ledger(request).db, query.filter, query.range.start_us,
                              query.range.end_us, before=before, limit=limit + 1))
    page = records[:limit]
    more = len(records) > limit
    return {
        **query.window(),
        "data": [r.as_dict() for r in page],
        "has_more": more,
        "next_cursor": encode_cursor(page[-1].ts_us, page[-1].id) if more else None,
    }


@router.get("/export", summary="The view or the call records as a file",
            response_class=StreamingResponse)
def export_usage(
    request: Request,
    query: Query_,
    format: Annotated[str, Query(description="csv, xlsx, json, ndjson, parquet (parquet "
                                             "needs the `parquet` extra: pyarrow) or focus "
                                             "(a FinOps FOCUS 1.2 dataset; `what` is "
                                             "ignored)")] = "csv",
    what: Annotated[str, Query(description="summary, trend, breakdown or calls")] = "calls",
    metric: str = "requests",
    granularity: str = "day",
    group_by: Annotated[list[str] | None, Query()] = None,
    unit: Annotated[str | None, Query(description="With what=trend&metric=units")] = None,
    focus_format: Annotated[str, Query(description="With format=focus: csv or parquet")
                            ] = "csv",
) -> StreamingResponse:
    if format not in export.FORMATS:
        raise BadParameter("format", f"must be one of {', '.join(export.FORMATS)}")
    if format == "focus":
        return _focus_response(request, query, focus_format)
    if format == "parquet" and not export.parquet_available():
        raise BadParameter("format", export.PARQUET_MISSING)
    if what not in export.VIEWS:
        raise BadParameter("what", f"must be one of {', '.join(export.VIEWS)}")
    ledger = _ledger(request)
    body = _export_body(ledger, query, format, what, metric, granularity, _group_by(group_by),
                        unit)
    filename = f"tallygate-{what}.{format}"
    return StreamingResponse(iterate_in_threadpool(body), media_type=export.MEDIA_TYPES[format],
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def _focus_response(request: Request, query: UsageQuery, file_format: str
                    ) -> StreamingResponse:
    keys: KeyService = request.app.state.keys
    accounts = {key.id: SubAccount(key.name, tuple(key.tags)) for key in keys.list()}
    body = focus_export(_ledger(request), query, accounts, file_format)
    return StreamingResponse(
        iterate_in_threadpool(body), media_type=export.FOCUS_MEDIA_TYPES[file_format],
        headers={"Content-Disposition":
                 f'attachment; filename="tallygate-focus.{file_format}"'})


def _export_body(ledger: Ledger, query: UsageQuery, fmt: str, what: str, metric: str,
                 granularity: str, group_by: list[str], unit: str | None) -> Iterator[bytes]:
    if what == "calls":
        return export.calls_stream(fmt, stream_calls(ledger.db, query.filter,
                                                   query.range.start_us, query.range.end_us))
    view: dict[str, Any]
    if what == "summary":
        view = usage_summary(ledger, query)
    elif what == "trend":
        view = usage_trend(ledger, query, metric, granularity, group_by[0] if group_by
                           else "model", unit)
    else:
        view = usage_breakdown(ledger, query, group_by)
    return export.view_stream(what, fmt, view)


@router.post("/events", summary="Ingest a batch of call records (idempotent on id)")
async def ingest(request: Request,
                 _: Annotated[Principal, Depends(admin_principal)]) -> dict[str, Any]:
    limit: int = request.app.state.settings.ingest_max_events
    max_bytes = limit * 4096
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise ApiError(413, f"The body is larger than {max_bytes} bytes", code="body_too_large")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > max_bytes:
            raise ApiError(413, f"The body is larger than {max_bytes} bytes",
                           code="body_too_large")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ApiError(400, f"The body is not valid JSON: {exc}", code="invalid_json") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("events"), list):
        raise ApiError(400, 'The body must be {"events": [record, ...]}', param="events")
    events = payload["events"]
    if len(events) > limit:
        raise ApiError(413, f"{len(events)} events in one batch; the limit is {limit}",
                       code="too_many_events", param="events")
    result: IngestResult = await _run_ingest(_ledger(request), events)
    return result.as_dict()


async def _run_ingest(ledger: Ledger, events: list[Any]) -> IngestResult:
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(ingest_events, ledger, events)
