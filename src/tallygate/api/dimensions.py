"""``GET /api/v1/usage/dimensions``: what the filters can choose from."""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from tallygate.api.auth import Principal, usage_principal
from tallygate.config import Settings
from tallygate.domain.categories import CALL_TYPES, MODEL_CATEGORIES
from tallygate.keys.service import KeyService
from tallygate.store.dimensions import seen_dimensions

router = APIRouter(prefix="/api/v1/usage", tags=["usage"])
LOOK_BACK_S = 400 * 86400


@router.get("/dimensions", summary="Keys, models (with categories) and call types to filter by")
def dimensions(request: Request,
               principal: Annotated[Principal, Depends(usage_principal)]) -> dict[str, Any]:
    settings: Settings = request.app.state.settings
    seen = seen_dimensions(request.app.state.db, int(time.time()) - LOOK_BACK_S,
                           principal.api_key_id)
    models: dict[str, dict[str, str]] = {}
    for route in settings.routes:
        models[route.model] = {"name": route.model, "category": route.category or "other",
                               "kind": route.kind}
    for _, model, category in seen:
        models.setdefault(model, {"name": model, "category": category, "kind": "model"})
    keys: KeyService = request.app.state.keys
    listed = {key.id: key for key in keys.list()}
    key_ids = {key_id for key_id, _, _ in seen if key_id}
    if principal.is_admin:
        key_ids |= set(listed)
    else:
        key_ids = {principal.api_key_id or ""}
    api_keys = sorted(
        ({"id": key_id, "name": listed[key_id].name if key_id in listed else key_id,
          "internal": listed[key_id].internal if key_id in listed else False,
          "status": listed[key_id].status if key_id in listed else "deleted"}
         for key_id in key_ids),
        key=lambda k: (str(k["name"]).lower(), str(k["id"])))
    return {
        "api_keys": api_keys,
        "models": sorted(models.values(), key=lambda m: (MODEL_CATEGORIES.index(
            m["category"]) if m["category"] in MODEL_CATEGORIES else 99, m["name"])),
        "model_categories": list(MODEL_CATEGORIES),
        "call_types": list(CALL_TYPES),
    }
