"""``GET /metrics``: this process's counters in Prometheus text format."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response

from tallygate.api.auth import admin_principal
from tallygate.metrics import CONTENT_TYPE, LedgerMetrics

router = APIRouter(tags=["health"])


@router.get("/metrics", summary="Prometheus metrics of this process",
            response_class=Response)
def metrics(request: Request) -> Response:
    if not request.app.state.settings.metrics_public:
        admin_principal(request)
    registry: LedgerMetrics = request.app.state.metrics
    return Response(registry.exposition(), media_type=CONTENT_TYPE)
