"""`/v1/videos`: OpenAI's Videos API over the same `TaskService` as the DashScope door. A video
is a task: its id is the task id, the same key sees it through both doors. Routes parse, call
one service method, and render; errors are written in OpenAI's shape by the handlers of
`wanserve.api.errors` (this door registers its body for `/v1/`)."""

from __future__ import annotations

from typing import Annotated, Any

from anyio import from_thread
from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from wanserve.api.deps import ApiKeyDep, RequestIdDep, ServicesDep, check_url_text
from wanserve.api.openai import protocol, schemas
from wanserve.api.openai.body import read_create
from wanserve.api.openai.schemas import responses
from wanserve.api.openapi import NEEDS_KEY, REF
from wanserve.errors import InvalidParameter, NotFound, UnsupportedOperation
from wanserve.tasks.models import CursorQuery, Task, TaskStatus

PREFIX = "/v1/"
POLL_AFTER = "openai-poll-after-ms"

v1 = APIRouter(prefix="/v1", dependencies=[Depends(check_url_text)])

_CREATE_BODY = NEEDS_KEY | {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {
                "schema": {"$ref": REF.format(model=protocol.VideoCreateRequest.__name__)}
            },
            "multipart/form-data": {"schema": protocol.form_schema()},
        },
    }
}


@v1.post(
    "/videos",
    response_model=None,
    responses=responses(schemas.Video, 400, 401, 413, 415, 429, 500),
    openapi_extra=_CREATE_BODY,
)
async def create_video(
    request: Request, services: ServicesDep, key: ApiKeyDep, request_id: RequestIdDep
) -> dict[str, Any]:
    """Create a video job (a task, as the DashScope door's create does)."""
    settings = services.settings
    fields, image = await read_create(request, limit=settings.max_body_bytes)
    defaults = protocol.Defaults(
        text_model=settings.openai_default_model,
        image_model=settings.openai_default_image_model,
    )

    def submit() -> Task:
        # Off the event loop: reading decodes an inline (data URL) image, megabytes of it.
        synthesis = protocol.synthesis_request(
            fields, image=image, defaults=defaults, max_image=settings.max_image_bytes
        )
        return services.tasks.submit(synthesis, api_key_id=key.id, request_id=request_id)

    task = await run_in_threadpool(submit)
    return schemas.video(task)


@v1.get(
    "/videos",
    response_model=None,
    responses=responses(schemas.VideoList, 400, 401, 500),
    openapi_extra=NEEDS_KEY,
)
def list_videos(
    services: ServicesDep,
    key: ApiKeyDep,
    after: Annotated[str | None, Query(max_length=64, description="a video id")] = None,
    limit: Annotated[int | None, Query(ge=1, le=schemas.LIST_MAX)] = None,
    order: Annotated[str | None, Query(description="asc or desc (default)")] = None,
) -> dict[str, Any]:
    """The caller's videos by creation time, newest first unless `order=asc`."""
    size, newest_first = schemas.list_query(limit=limit, order=order)
    page = services.tasks.page(
        CursorQuery(api_key_id=key.id, limit=size, after=after or None, newest_first=newest_first)
    )
    return schemas.video_list(page)


@v1.get(
    "/videos/{video_id}",
    response_model=None,
    responses=responses(schemas.Video, 401, 404, 500),
    openapi_extra=NEEDS_KEY,
)
def retrieve_video(
    video_id: str, services: ServicesDep, key: ApiKeyDep, response: Response
) -> dict[str, Any]:
    """A video job; unfinished ones carry `openai-poll-after-ms`, which paces the SDK's poll."""
    task = _owned(services.tasks.get(video_id, api_key_id=key.id), video_id)
    if not task.status.is_terminal:
        response.headers[POLL_AFTER] = str(services.settings.openai_poll_after_ms)
    return schemas.video(task)


@v1.delete(
    "/videos/{video_id}",
    response_model=None,
    responses=responses(schemas.VideoDeleted, 401, 404, 500),
    openapi_extra=NEEDS_KEY,
)
def delete_video(video_id: str, services: ServicesDep, key: ApiKeyDep) -> dict[str, Any]:
    """Delete a video job: an unfinished one is canceled first, the file goes with it."""
    services.tasks.delete(video_id, api_key_id=key.id)
    # The poll route's memory of finished answers belongs to the event loop (api/finished.py).
    from_thread.run_sync(services.finished.forget, video_id)
    return schemas.deleted(video_id)


@v1.get(
    "/videos/{video_id}/content",
    response_class=RedirectResponse,
    status_code=302,
    responses={
        302: {
            "description": "The MP4 is at the signed URL in Location (expires with the video).",
            "headers": {"Location": {"schema": {"type": "string"}}},
        },
        **responses(None, 400, 401, 404, 500),
    },
    openapi_extra=NEEDS_KEY,
)
def download_video(
    video_id: str,
    request: Request,
    services: ServicesDep,
    key: ApiKeyDep,
    variant: Annotated[str | None, Query(description="video (the only one served)")] = None,
) -> RedirectResponse:
    """The MP4 of a completed video, by redirect to its signed URL (the one the DashScope door
    hands out): the bytes come from the storage that serves every download, local files or a
    bucket, never through this process's memory."""
    if variant not in (None, "", "video"):
        raise InvalidParameter(
            f"variant {variant[:32]!r} is not available: this server makes only the video.",
            field="variant",
        )
    task = _owned(services.tasks.get(video_id, api_key_id=key.id), video_id)
    url = services.video_url(task, base_url=str(request.base_url))
    if task.status is not TaskStatus.SUCCEEDED or url is None:
        raise UnsupportedOperation(
            f"Video {video_id} is {schemas.STATUS[task.status]}; its content can be "
            "downloaded once it is completed."
        )
    return RedirectResponse(url, status_code=302)


def _owned(task: Task | None, video_id: str) -> Task:
    if task is None:
        raise NotFound(f"No video {video_id[:64]!r}: it never existed, expired or was deleted.")
    return task
