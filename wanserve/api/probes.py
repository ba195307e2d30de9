"""Probes for balancers, orchestrators and Prometheus, shared by every door: they take no key
and stay out of the OpenAPI document (docs/operations.md describes them)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from wanserve.api.deps import ServicesDep
from wanserve.errors import NotReady
from wanserve.observability import CONTENT_TYPE, not_ready_message

probes = APIRouter()


@probes.get("/health", include_in_schema=False)
def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@probes.get("/ready", include_in_schema=False)
def ready(services: ServicesDep) -> dict[str, str]:
    """Readiness: the store answers, storage is reachable, generation (if here) is up;
    503 `ServiceUnavailable` listing what is not."""
    problems = services.readiness.problems()
    if problems:
        raise NotReady(not_ready_message(problems))
    return {"status": "ready"}


@probes.get("/metrics", include_in_schema=False)
def metrics(services: ServicesDep) -> Response:
    """Prometheus text exposition of this process's metrics."""
    return Response(services.metrics.exposition(), media_type=CONTENT_TYPE)
