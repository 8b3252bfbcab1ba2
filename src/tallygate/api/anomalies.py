"""``/api/v1/anomalies``: spikes, error bursts and first uses of a model, for the filters."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from tallygate.api.auth import Principal, admin_principal
from tallygate.api.filters import usage_query
from tallygate.ledger.anomalies import (
    GRANULARITIES,
    KINDS,
    METRICS,
    SCOPES,
    AnomalyParams,
    anomalies_answer,
    find_anomalies,
    parse_choices,
)
from tallygate.ledger.service import Ledger
from tallygate.ledger.statistics import UsageQuery
from tallygate.store.webhooks import describe, list_deliveries

router = APIRouter(prefix="/api/v1", tags=["anomalies"])


@router.get("/anomalies", summary="Anomalies among the calls the filters select")
async def anomalies(
    request: Request,
    query: Annotated[UsageQuery, Depends(usage_query)],
    kind: Annotated[list[str] | None, Query(
        description="spike, error_burst, new_model (repeatable; default all)")] = None,
    granularity: Annotated[list[str] | None, Query(
        description="hour, day: the buckets spikes are looked for in (default both; error "
                    "bursts are per hour)")] = None,
    scope: Annotated[list[str] | None, Query(
        description="api_key, model: whose series (default both)")] = None,
    metric: Annotated[list[str] | None, Query(
        description="requests, total_tokens: only spikes of these (default both)")] = None,
) -> dict[str, Any]:
    kinds = parse_choices(kind, KINDS, "kind")
    granularities = parse_choices(granularity, GRANULARITIES, "granularity")
    scopes = parse_choices(scope, SCOPES, "scope")
    metrics = parse_choices(metric, METRICS, "metric")
    ledger: Ledger = request.app.state.ledger
    params: AnomalyParams = request.app.state.anomaly_params

    def run() -> dict[str, Any]:
        found = find_anomalies(ledger, query, params, kinds=kinds,
                               granularities=granularities, scopes=scopes)
        found = [a for a in found if a.kind != "spike" or a.metric in metrics]
        return anomalies_answer(ledger, query, found, params)

    return await run_in_threadpool(run)


@router.get("/anomalies/deliveries", summary="The webhook's delivery log, newest first")
def deliveries(
    request: Request,
    _: Annotated[Principal, Depends(admin_principal)],
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    ledger: Ledger = request.app.state.ledger
    return {"data": [describe(d) for d in list_deliveries(ledger.db, limit)]}
