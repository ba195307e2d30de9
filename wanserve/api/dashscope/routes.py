"""DashScope's task endpoints under /api/v1: create, poll, cancel, list. Routes parse, call one
service method, and render; nothing else."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.routing import BaseRoute

from wanserve.api.body import read_json
from wanserve.api.dashscope import docs, render
from wanserve.api.dashscope.protocol import CreateTaskRequest, parse_create_body
from wanserve.api.deps import (
    ApiKeyDep,
    RequestIdDep,
    Services,
    ServicesDep,
    check_url_text,
    get_caller,
)
from wanserve.api.openapi import NEEDS_KEY, json_body, responses
from wanserve.errors import AccessDenied
from wanserve.tasks.models import Task, TaskQuery

api = APIRouter(prefix="/api/v1", dependencies=[Depends(check_url_text)])
# The poll route alone: it runs the same checks, called in its body (see `get_task`).
polls = APIRouter(prefix="/api/v1")
JSON = "application/json"


@api.post(
    "/services/aigc/{task_group}/video-synthesis",
    response_model=None,
    responses=responses(docs.CreatedResponse, 400, 401, 403, 413, 415, 429, 500),
    openapi_extra=json_body(CreateTaskRequest),
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
    # Parsed off the event loop too: it decodes inline (base64) inputs, megabytes each.
    task = await run_in_threadpool(_submit, services, raw, key.id, request_id)
    return render.created(task, request_id=request_id)


def _submit(services: Services, raw: bytes, api_key_id: str, request_id: str) -> Task:
    synthesis = parse_create_body(raw)
    return services.tasks.submit(synthesis, api_key_id=api_key_id, request_id=request_id)


@polls.get(
    "/tasks/{task_id}",
    response_model=None,
    responses=responses(docs.TaskResponse, 400, 401, 500),
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
        return Response(render.stamp(kept, request_id=caller.request_id), media_type=JSON)
    base = services.base_url(request)
    task, body = await run_in_threadpool(_render_task, services, task_id, key_id, base)
    if task is not None:
        services.finished.keep(task, origin=origin, body=body, now=now)
    return Response(render.stamp(body, request_id=caller.request_id), media_type=JSON)


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
        return None, render.encode_task_unknown(task_id)
    url = services.video_url(task, base_url=base_url)
    return task, render.encode_task(task, video_url=url)


@api.post(
    "/tasks/{task_id}/cancel",
    response_model=None,
    responses=responses(docs.CancelResponse, 400, 401, 500),
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
    responses=responses(docs.TaskListResponse, 400, 401, 500),
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
        start=render.parse_list_time(start_time, "start_time"),
        end=render.parse_list_time(end_time, "end_time"),
        model=model_name or None,
        status=render.parse_status(status),
    )
    page = services.tasks.list(query)
    base = str(request.base_url)
    return render.page_body(
        page, query, request_id=request_id, url_for=lambda t: services.video_url(t, base_url=base)
    )
