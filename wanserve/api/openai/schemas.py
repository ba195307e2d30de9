"""OpenAI's Videos wire format (`/v1/videos`): the only place its field names live.

A create request (JSON, or the multipart form the `openai` SDK always sends) is read leniently
into a domain `SynthesisRequest`, exactly as the DashScope door's body is; every rule about the
values is applied later, once, by `wanserve.spec.build_spec`. Only what is OpenAI's own is
decided here: `size` written `WxH`, `seconds` as a string, `input_reference` as a file, a URL
or `{image_url}`, form values that arrive as text (the SDK turns `extra_body` numbers into
strings and nests objects as `input_reference[image_url]`), and which model a request without
`model` gets.

Responses are rendered from domain `Task`s: OpenAI's four statuses (a CANCELED task is
`failed` with error code `Canceled`), unix-second times, an integer `progress`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wanserve import text
from wanserve.api.errors import Problem
from wanserve.errors import InvalidParameter
from wanserve.spec import GUIDANCE_MAX, SEED_MAX, STEPS_MAX, SynthesisRequest
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
# ASCII digits only, as the DashScope door's `width*height`; `x` (OpenAI's) or `*` between.
_SIZE = re.compile(r"[ \t]*([0-9]{1,5})[ \t]*[xX*][ \t]*([0-9]{1,5})[ \t]*")
_INTEGER = re.compile(r"[ \t]*(-?[0-9]{1,12})[ \t]*")
_NUMBER = re.compile(r"[ \t]*-?[0-9]{1,12}(\.[0-9]{1,12})?[ \t]*")
_MEDIA_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+")
_INPUT = "input_reference"


@dataclass(frozen=True)
class Defaults:
    """The models a request without `model` is run on (settings)."""

    text_model: str
    image_model: str


@dataclass(frozen=True)
class ImageFile:
    """An `input_reference` uploaded as a file part."""

    data: bytes
    content_type: str | None


def parse_json(document: object) -> dict[str, object]:
    """The fields of a JSON create body (a parsed document), values unchecked."""
    if not isinstance(document, dict):
        raise InvalidParameter("The request body must be a JSON object with a prompt.")
    text.check_document(document)
    return {str(k): v for k, v in document.items()}


def parse_form(fields: Mapping[str, str]) -> dict[str, object]:
    """The fields of a multipart create form: text values, `input_reference[image_url]`
    folded back into an object, as the SDK nests it."""
    out: dict[str, object] = {}
    nested: dict[str, object] = {}
    for name, value in fields.items():
        text.check(name, field="a form field name")
        text.check(value, field=f"form field {name}")
        if name.startswith(_INPUT + "[") and name.endswith("]"):
            nested[name[len(_INPUT) + 1 : -1]] = value
        else:
            out[name] = value
    if nested:
        if _INPUT in out:
            raise InvalidParameter("send input_reference once.", field=_INPUT)
        out[_INPUT] = nested
    return out


def synthesis_request(
    fields: Mapping[str, object], *, image: ImageFile | None, defaults: Defaults, max_image: int
) -> SynthesisRequest:
    """The domain request of a create call; `image` is an uploaded `input_reference` file."""
    reference = _reference(fields.get(_INPUT), image, max_image=max_image)
    model = fields.get("model")
    if model is None or model == "":
        model = defaults.image_model if reference is not None else defaults.text_model
    steps = fields.get("num_inference_steps")
    if steps is None:
        steps = fields.get("steps")
    elif fields.get("steps") is not None:
        raise InvalidParameter("send num_inference_steps or steps, not both.", field="steps")
    return SynthesisRequest(
        model=model,
        prompt=fields.get("prompt"),
        negative_prompt=fields.get("negative_prompt"),
        img_url=reference,
        size=_size(fields.get("size")),
        size_names_tier=True,
        duration=_integer(fields.get("seconds"), "seconds"),
        seed=_integer(fields.get("seed"), "seed"),
        steps=_integer(steps, "num_inference_steps"),
        guidance_scale=_number(fields.get("guidance_scale"), "guidance_scale"),
        # The prompt is used as sent unless asked: OpenAI's API has no prompt rewriting.
        prompt_extend=_boolean(fields.get("prompt_extend"), "prompt_extend", default=False),
        watermark=_boolean(fields.get("watermark"), "watermark", default=False),
    )


def _reference(value: object, image: ImageFile | None, *, max_image: int) -> str | None:
    """`input_reference` as the URL the DashScope door's `img_url` takes: a URL or data URL
    as sent, or an uploaded file as a data URL (the task service stores it like an upload)."""
    if image is not None:
        if value is not None:
            raise InvalidParameter("send input_reference once: a file or a URL.", field=_INPUT)
        if len(image.data) > max_image:
            raise InvalidParameter(
                f"input_reference is larger than {max_image // (1024 * 1024)} MB.", field=_INPUT
            )
        # The worker decodes the bytes whatever they claim to be; the type is only a label.
        declared = (image.content_type or "").split(";")[0].strip().lower()
        media_type = declared if _MEDIA_TYPE.fullmatch(declared) else "application/octet-stream"
        return f"data:{media_type};base64," + base64.b64encode(image.data).decode()
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if value.get("file_id") is not None:
            raise InvalidParameter(
                "input_reference.file_id is not supported: this server keeps no files API; "
                "upload the image as input_reference, or send image_url.",
                field=_INPUT,
            )
        url = value.get("image_url")
        if isinstance(url, str) and url:
            return url
    raise InvalidParameter(
        "input_reference must be an image file, a URL, or an object with image_url.",
        field=_INPUT,
    )


def _size(value: object) -> object:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is not None:
            return f"{match.group(1)}*{match.group(2)}"
    raise InvalidParameter(
        f"size {str(value)[:32]!r} is malformed: write WIDTHxHEIGHT, for example 1280x720.",
        field="size",
    )


def _integer(value: object, name: str) -> object:
    """Numbers arrive as text in a form (and `seconds` always as text): read ASCII digits;
    anything else is left to `build_spec` to refuse with the rule it breaks."""
    if isinstance(value, str):
        match = _INTEGER.fullmatch(value)
        if match is None:
            raise InvalidParameter(f"{name} {value[:32]!r} must be an integer.", field=name)
        return int(match.group(1))
    return value


def _number(value: object, name: str) -> object:
    if isinstance(value, str):
        if _NUMBER.fullmatch(value) is None:
            raise InvalidParameter(f"{name} {value[:32]!r} must be a number.", field=name)
        return float(value)
    return value


def _boolean(value: object, name: str, *, default: bool) -> object:
    if value is None or value == "":
        return default
    if isinstance(value, str):
        # The SDK writes extra_body booleans as "true" / "false".
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise InvalidParameter(f"{name} {value[:32]!r} must be true or false.", field=name)
    return value


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
        "seconds": str(spec.duration),
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


class ImageReference(BaseModel):
    model_config = ConfigDict(extra="allow")
    image_url: str | None = None
    file_id: str | None = None


class VideoCreateRequest(BaseModel):
    """The create body as JSON. The multipart form (what the SDK sends) has the same fields
    as text, with `input_reference` a file part or `input_reference[image_url]`."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [{"prompt": "a cat in the snow", "model": "wan2.1-t2v-turbo"}]
        },
    )
    prompt: str | None = Field(default=None, description="required by text-to-video models")
    model: str | None = Field(
        default=None,
        description="a catalogue model; default: openai_default_model, or "
        "openai_default_image_model with an input_reference",
    )
    seconds: str | int | None = Field(default=None, description="the model's durations")
    size: str | None = Field(default=None, description="WIDTHxHEIGHT, one of the model's sizes")
    input_reference: str | ImageReference | None = Field(
        default=None, description="first frame: an http(s) URL, a data URL, or {image_url}"
    )
    negative_prompt: str | None = None
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    num_inference_steps: int | None = Field(default=None, ge=1, le=STEPS_MAX)
    steps: int | None = Field(default=None, ge=1, le=STEPS_MAX)
    guidance_scale: float | None = Field(default=None, ge=0, le=GUIDANCE_MAX)
    prompt_extend: bool | None = None
    watermark: bool | None = None


_TEXT = {"type": "string"}
CREATE_FORM: dict[str, Any] = {
    "type": "object",
    "properties": {
        "prompt": _TEXT,
        "model": _TEXT,
        "seconds": _TEXT,
        "size": _TEXT,
        "input_reference": {"type": "string", "format": "binary"},
        "input_reference[image_url]": _TEXT,
        "negative_prompt": _TEXT,
        "seed": _TEXT,
        "num_inference_steps": _TEXT,
        "steps": _TEXT,
        "guidance_scale": _TEXT,
        "prompt_extend": _TEXT,
        "watermark": _TEXT,
    },
}

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
