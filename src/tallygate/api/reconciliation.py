"""``/api/v1/reconciliation``: the ledger against a provider's own report (admin only)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from starlette.concurrency import run_in_threadpool

from tallygate.api.auth import Principal, admin_principal
from tallygate.api.errors import ApiError
from tallygate.config import Settings
from tallygate.ledger.reconciler import run_reconciliation
from tallygate.providers import ProviderError
from tallygate.store.reconciliation import last_runs

router = APIRouter(prefix="/api/v1/reconciliation", tags=["reconciliation"])
Admin = Annotated[Principal, Depends(admin_principal)]


@router.get("", summary="Reconcile now with a provider's usage and cost report")
async def reconcile(
    request: Request,
    _: Admin,
    provider: Annotated[str | None, Query(
        description="The name of a [[providers]] entry.")] = None,
    period: Annotated[str, Query(
        description="Nd: the N whole UTC days before today (1 to 366); today, still "
                    "filling on both sides, is left out.")] = "30d",
) -> dict[str, Any]:
    """Fetches the provider's report (every page), compares it per UTC day x upstream model
    with the ledger, stores the answer (the page shows the last one) and answers it. A
    provider that cannot be asked is a 502 saying why."""
    settings: Settings = request.app.state.settings
    try:
        return await run_reconciliation(request.app.state.ledger, settings, provider, period)
    except ProviderError as exc:
        raise ApiError(502, str(exc), code="provider_unavailable") from None


@router.get("/last", summary="The last stored reconciliation of each provider")
async def last(request: Request, _: Admin) -> dict[str, Any]:
    """Every configured provider, with its last run (``null`` before the first): what the
    page's Reconciliation view shows."""
    settings: Settings = request.app.state.settings
    names = [p.name for p in settings.providers]
    runs = await run_in_threadpool(last_runs, request.app.state.db, names)
    return {"providers": [{"name": p.name, "kind": p.kind,
                           "models": [r.model for r in settings.routes
                                      if r.provider == p.name],
                           "last": runs.get(p.name)} for p in settings.providers]}
