"""OpenAI's Videos wire format (`/v1/videos`), its answers: the create body is read by
`protocol.py`.

Responses are rendered from domain `Task`s: OpenAI's four statuses (a CANCELED task is
`failed` with error code `Canceled`), unix-second times, an integer `progress`.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wanserve.api.errors import Problem
from wanserve.errors import InvalidParameter
from wanserve.tasks.models import CursorPage, Task, TaskStatus

STATUS: Mapping[TaskStatus, str] = {
    TaskStatus.PENDING: "queued",
    TaskStatus.RUNNING: "in_progress",
    TaskStatus.SUCCEEDED: "completed",
    TaskStatus.FAILED: "failed",
    # OpenAI has no canceled status; its own cancellation is DELETE, after which the video is
    # gone. A task canceled through the DashScope door still has to be shown: as failed, with
    # a code saying why, so pollers (which stop on completed or failed) stop.
    TaskStatus.CANCELED: "failed",
}
CANCELED_CODE = "Canceled"
# OpenAI's list default and the most a page may hold.
LIST_DEFAULT = 20
LIST_MAX = 100
VARIANTS = ("video", "thumbnail", "spritesheet")

# Domain field names as this door spells them, for the error's `param`.
_PARAMS = {
    "duration": "seconds",
    "img_url": "input_reference",
    "first_frame_url": "input_reference",
    "steps": "num_inference_steps",
}
_ERROR_TYPES = {
    401: "authentication_error",
    403: "permission_error",
    429: "rate_limit_error",
}


def list_query(*, limit: int | None, order: str | None) -> tuple[int, bool]:
    """(page size, newest first) of a list call."""
    if order not in (None, "", "asc", "desc"):
        raise InvalidParameter(f"order {order[:32]!r} must be asc or desc.", field="order")
    return (limit or LIST_DEFAULT), order != "asc"


# -- Responses ----------------------------------------------------------------------------


def video(task: Task) -> dict[str, Any]:
    status = STATUS[task.status]
    spec = task.spec
    ended = task.end_time if task.status.is_terminal else None
    return {
        "id": task.id,
        "object": "video",
        "model": task.model,
        "status": status,
        "progress": _progress(task),
        "created_at": _unix(task.submit_time),
        "completed_at": _unix(ended) if ended is not None else None,
        # When the downloadable video goes: only a finished video has one.
        "expires_at": _unix(task.expires_at) if task.result is not None else None,
        "prompt": spec.orig_prompt,
        "seconds": str(task.seconds),
        "size": _shown_size(task),
        "remixed_from_video_id": None,
        "error": _error(task),
    }


def _progress(task: Task) -> int:
    if task.status is TaskStatus.SUCCEEDED:
        return 100
    if task.progress is None:
        return 0
    return max(0, min(100, task.progress.percent))


def _shown_size(task: Task) -> str:
    """The video's size as `WxH`: the file's, else the one asked for; an image-driven video
    shows its resolution tier (`720P`) until its first frame fixes the size."""
    if task.result is not None:
        return f"{task.result.width}x{task.result.height}"
    if task.spec.width is not None and task.spec.height is not None:
        return f"{task.spec.width}x{task.spec.height}"
    return task.spec.tier


def _error(task: Task) -> dict[str, str] | None:
    if task.status is TaskStatus.CANCELED:
        return {"code": CANCELED_CODE, "message": "The video was canceled before it finished."}
    if task.error is not None:
        return {"code": task.error.code, "message": task.error.message}
    return None


def _unix(moment: datetime) -> int:
    return int(moment.timestamp())


def video_list(page: CursorPage) -> dict[str, Any]:
    data = [video(t) for t in page.tasks]
    return {
        "object": "list",
        "data": data,
        "first_id": data[0]["id"] if data else None,
        "last_id": data[-1]["id"] if data else None,
        "has_more": page.has_more,
    }


def deleted(task_id: str) -> dict[str, Any]:
    return {"id": task_id, "object": "video.deleted", "deleted": True}


def error_body(problem: Problem, request_id: str) -> dict[str, Any]:
    """OpenAI's error shape; `code` keeps the domain code (the DashScope door's and a failed
    video's vocabulary), `type` is OpenAI's class of the status. The request id travels in
    the `X-Request-Id` header, which the SDK reads."""
    if problem.status >= 500:
        kind = "server_error"
    else:
        kind = _ERROR_TYPES.get(problem.status, "invalid_request_error")
    param = _PARAMS.get(problem.field, problem.field) if problem.field else None
    return {
        "error": {"message": problem.message, "type": kind, "param": param, "code": problem.code}
    }


# -- The OpenAPI description (wanserve.api.openapi publishes it) ----------------------------
#
# Response models forbid extra fields, so the schemathesis test catches an undocumented one.

_CLOSED = ConfigDict(extra="forbid")
VideoStatus = Literal["queued", "in_progress", "completed", "failed"]


class VideoError(BaseModel):
    model_config = _CLOSED
    code: str
    message: str


class Video(BaseModel):
    """A video job; `id` is the task id the DashScope door shows too."""

    model_config = _CLOSED
    id: str
    object: Literal["video"]
    model: str
    status: VideoStatus
    progress: int = Field(ge=0, le=100)
    created_at: int
    completed_at: int | None
    expires_at: int | None
    prompt: str | None
    seconds: str
    size: str = Field(description="WxH; an image-driven video shows its tier until it starts")
    remixed_from_video_id: None
    error: VideoError | None


class VideoList(BaseModel):
    model_config = _CLOSED
    object: Literal["list"]
    data: list[Video]
    first_id: str | None
    last_id: str | None
    has_more: bool


class VideoDeleted(BaseModel):
    model_config = _CLOSED
    id: str
    object: Literal["video.deleted"]
    deleted: bool


class OpenAIErrorDetail(BaseModel):
    model_config = _CLOSED
    message: str
    type: str
    param: str | None
    code: str


class OpenAIError(BaseModel):
    """Every error of the /v1/ door."""

    model_config = _CLOSED
    error: OpenAIErrorDetail


_ERROR_WHEN = {
    400: "invalid_request_error: a field the model cannot honour, a bad cursor or variant, "
    "a video that is not completed",
    401: "authentication_error: no key, or an unknown or revoked one",
    404: "invalid_request_error: no such video for this key (never existed, expired or deleted)",
    413: "invalid_request_error: the body is over the server's limit",
    415: "invalid_request_error: the body is neither JSON nor a multipart form",
    429: "rate_limit_error: request rate, unfinished-task quota or queue full (Retry-After)",
    500: "server_error",
}


def responses(ok: type[BaseModel] | None, *errors: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of a /v1/ route: its 200 body and the errors it really answers."""
    documented: dict[int | str, dict[str, Any]] = {}
    if ok is not None:
        documented[200] = {"model": ok}
    for status in errors:
        documented[status] = {"model": OpenAIError, "description": _ERROR_WHEN[status]}
    return documented
