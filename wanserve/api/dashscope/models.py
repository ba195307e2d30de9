"""`GET /api/v1/models` (a wanserve extension): the catalogue as this deployment serves it, so
a client (the playground among them) can build a valid request without a copy of the rules."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from wanserve.api.dashscope import docs, render
from wanserve.api.deps import ApiKeyDep, RequestIdDep, ServicesDep, check_url_text
from wanserve.api.openapi import NEEDS_KEY, responses

catalog = APIRouter(prefix="/api/v1", dependencies=[Depends(check_url_text)])


@catalog.get(
    "/models",
    response_model=None,
    responses=responses(docs.ModelsResponse, 400, 401, 500),
    openapi_extra=NEEDS_KEY,
)
@catalog.get("/models/", include_in_schema=False)
def list_models(services: ServicesDep, _key: ApiKeyDep, request_id: RequestIdDep) -> dict[str, Any]:
    """Every model name with its sizes or resolution tiers, durations, fps, prompt limits,
    inputs and parameters, and which optional features this server can run for it."""
    return render.models_body(services.catalog, features=services.features, request_id=request_id)
