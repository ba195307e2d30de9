"""DashScope endpoints under /api/v1, and signed file downloads. Routes parse, call one
service method, and render; nothing else."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from wanserve.api import schemas
from wanserve.api.body import read_json
from wanserve.api.deps import (
    ApiKeyDep,
    RequestIdDep,
    Services,
    ServicesDep,
    check_url_text,
    get_caller,
)
from wanserve.api.openapi import NEEDS_KEY, json_body
from wanserve.api.schemas import responses
from wanserve.errors import AccessDenied, NotReady
from wanserve.observability import CONTENT_TYPE, not_ready_message
from wanserve.tasks.models import Task, TaskQuery

api = APIRouter(prefix="/api/v1", dependencies=[Depends(check_url_text)])
# The poll route alone: it runs the same checks, called in its body (see `get_task`).
polls = APIRouter(prefix="/api/v1")
probes = APIRouter()
JSON = "application/json"


@api.post(
    "/services/aigc/{task_group}/video-synthesis",
    response_model=None,
    responses=responses(schemas.CreatedResponse, 400, 401, 403, 413, 415, 429, 500),
    openapi_extra=json_body(schemas.CreateTaskRequest),
)
async def create_task(
    task_group: str,
    request: Request,
    services: ServicesDep,
    key: ApiKeyDep,
    request_id: RequestIdDep,
    x_dashscope_async: Annotated[
        str | None,
        Header(
            alias="X-DashScope-Async",
            description="Must be `enable`: without it the call is refused 403 (no sync calls).",
        ),
    ] = None,
) -> dict[str, Any]:
    """Create a video synthesis task (asynchronous only)."""
    if (x_dashscope_async or "").lower() != "enable":
        raise AccessDenied("current user api does not support synchronous calls")
    raw = await read_json(request, limit=services.settings.max_body_bytes)
    synthesis = schemas.parse_create_body(raw)
    task = await run_in_threadpool(
        services.tasks.submit, synthesis, api_key_id=key.id, request_id=request_id
    )
    return schemas.created(task, request_id=request_id)


@polls.get(
    "/tasks/{task_id}",
    response_model=None,
    responses=responses(schemas.TaskResponse, 400, 401, 500),
    openapi_extra=NEEDS_KEY,
)
@polls.get("/tasks/{task_id}/", include_in_schema=False)
async def get_task(task_id: str, request: Request) -> Response:
    """A task's status and, once SUCCEEDED, its video URL; UNKNOWN if not the caller's."""
    # The hottest route. FastAPI's per-request work for each dependency cost more than the
    # checks themselves (measured: 15% of a poll, docs/performance.md), so it
    # makes the `api` router's checks as plain calls, in the same order. A finished task is
    # answered from memory (`api/finished.py`): mostly before routing (`api/fastpoll.py`),
    # here when that could not check the caller without I/O. Any other lookup, and the URL
    # signing, run in the thread pool, off the event loop.
    await check_url_text(request)
    caller = await get_caller(request)
    services, key_id = caller.services, caller.key.id
    origin, now = services.origin(request), services.clock()
    kept = services.finished.body(task_id, api_key_id=key_id, origin=origin, now=now)
    if kept is not None:
        return Response(schemas.stamp(kept, request_id=caller.request_id), media_type=JSON)
    base = services.base_url(request)
    task, body = await run_in_threadpool(_render_task, services, task_id, key_id, base)
    if task is not None:
        services.finished.keep(task, origin=origin, body=body, now=now)
    return Response(schemas.stamp(body, request_id=caller.request_id), media_type=JSON)


def poll_routes() -> dict[bool, BaseRoute]:
    """The poll route by whether its template ends in a slash (`api/fastpoll.py` answers for
    it, and labels its metrics with the route's template)."""
    found: dict[bool, BaseRoute] = {
        route.path.endswith("/"): route
        for route in polls.routes
        if isinstance(route, APIRoute) and route.endpoint is get_task
    }
    if set(found) != {False, True}:
        raise RuntimeError("the poll route and its trailing-slash twin must both be routed")
    return found


def _render_task(
    services: Services, task_id: str, api_key_id: str, base_url: str
) -> tuple[Task | None, bytes]:
    task = services.tasks.get(task_id, api_key_id=api_key_id)
    if task is None:
        return None, schemas.encode_task_unknown(task_id)
    url = services.video_url(task, base_url=base_url)
    return task, schemas.encode_task(task, video_url=url)


@api.post(
    "/tasks/{task_id}/cancel",
    response_model=None,
    responses=responses(schemas.CancelResponse, 400, 401, 500),
    openapi_extra=NEEDS_KEY,
)
@api.post("/tasks/{task_id}/cancel/", include_in_schema=False)
def cancel_task(
    task_id: str, services: ServicesDep, key: ApiKeyDep, request_id: RequestIdDep
) -> dict[str, Any]:
    """Cancel a task that has not finished."""
    services.tasks.cancel(task_id, api_key_id=key.id)
    return {"request_id": request_id}


@api.get(
    "/tasks",
    response_model=None,
    responses=responses(schemas.TaskListResponse, 400, 401, 500),
    openapi_extra=NEEDS_KEY,
)
@api.get("/tasks/", include_in_schema=False)
def list_tasks(
    request: Request,
    services: ServicesDep,
    key: ApiKeyDep,
    request_id: RequestIdDep,
    page_no: Annotated[int, Query(ge=1, le=100_000)] = 1,
    page_size: Annotated[int, Query(ge=1, le=100)] = 10,
    start_time: str | None = None,
    end_time: str | None = None,
    model_name: str | None = None,
    status: str | None = None,
) -> dict[str, Any]:
    """The caller's tasks, newest first."""
    query = TaskQuery(
        api_key_id=key.id,
        page_no=page_no,
        page_size=page_size,
        start=schemas.parse_list_time(start_time, "start_time"),
        end=schemas.parse_list_time(end_time, "end_time"),
        model=model_name or None,
        status=schemas.parse_status(status),
    )
    page = services.tasks.list(query)
    base = str(request.base_url)
    return schemas.page_body(
        page, query, request_id=request_id, url_for=lambda t: services.video_url(t, base_url=base)
    )


# The probes are for balancers, orchestrators and Prometheus, not API clients: they take no key
# and stay out of the OpenAPI document (docs/operations.md describes them).


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
