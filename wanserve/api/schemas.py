"""DashScope wire format: the only place its field names live.

Requests are read leniently (the SDK adds `input.function` and `input.extend_prompt`, and
callers pass extra parameters) and turned into a domain `SynthesisRequest`; every rule about
the values is applied later, once, by `wanserve.spec.build_spec`. Responses are rendered from
domain `Task`s: times in UTC+8 `YYYY-MM-DD HH:mm:ss.SSS`, `usage` in the fields of the model's
generation (wan2.6 differs from wan2.5 and earlier).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from wanserve import text
from wanserve.api.body import load_json
from wanserve.catalog import TIER_AREA, TIER_SR, Generation, Kind, ModelCard, tier_of
from wanserve.errors import EmptyInput, InvalidParameter
from wanserve.spec import GUIDANCE_MAX, SEED_MAX, STEPS_MAX, Features, SynthesisRequest
from wanserve.tasks.models import (
    Progress,
    Task,
    TaskError,
    TaskOutcome,
    TaskPage,
    TaskQuery,
    TaskStage,
    TaskState,
    TaskStatus,
)
from wanserve.tasks.webhooks import MAX_CALLBACK_URL
from wanserve.uploads import UploadPolicy

BEIJING = timezone(timedelta(hours=8), "UTC+8")
_INPUT_FIELDS = (
    "prompt",
    "negative_prompt",
    "img_url",
    "first_frame_url",
    "last_frame_url",
    "audio_url",
)
_PARAMETER_FIELDS = (
    "size",
    "resolution",
    "duration",
    "seed",
    "prompt_extend",
    "watermark",
    "shot_type",
    "audio",
    "steps",  # extension: per-request denoising steps
    "guidance_scale",  # extension: per-request classifier-free guidance
    "callback_url",  # wanserve's extension: a webhook for the task's end
    "lora",
    "lora_scale",
    "cache",  # extension: per-request transformer block cache preset
)

UrlFor = Callable[[Task], str | None]


def parse_create_body(raw: bytes) -> SynthesisRequest:
    """The create-task JSON body as a `SynthesisRequest` (values unchecked)."""
    body = load_json(raw)
    if not isinstance(body, dict):
        raise InvalidParameter("The request body must be a JSON object with model and input.")
    text.check_document(body)  # every string, ignored fields too: nothing unstorable goes on
    inp = body.get("input")
    if inp is None:
        raise EmptyInput(
            'Required body invalid, please check the request body: "input" is missing.'
        )
    if not isinstance(inp, dict):
        raise InvalidParameter("input must be a JSON object.")
    params = body.get("parameters")
    if params is None:
        params = {}
    if not isinstance(params, dict):
        raise InvalidParameter("parameters must be a JSON object.")
    fields: dict[str, Any] = {name: inp.get(name) for name in _INPUT_FIELDS}
    fields |= {name: params.get(name) for name in _PARAMETER_FIELDS}
    return SynthesisRequest(model=body.get("model"), **fields)


def format_time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    local = moment.astimezone(BEIJING)
    return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"


def parse_list_time(value: str | None, name: str) -> datetime | None:
    """`YYYYMMDDhhmmss` in UTC+8, as the SDK's `list(start_time=..., end_time=...)` sends,
    returned in UTC; only ASCII digits, and only times every store can represent (UTC years
    1 to 9999: `00010101075959` UTC+8 is still year 0 in UTC)."""
    if value is None or value == "":
        return None
    if not (len(value) == 14 and value.isascii() and value.isdigit()):
        raise _bad_time(value, name)
    try:
        return datetime.strptime(value, "%Y%m%d%H%M%S").replace(tzinfo=BEIJING).astimezone(UTC)
    except (ValueError, OverflowError):
        raise _bad_time(value, name) from None


def _bad_time(value: str, name: str) -> InvalidParameter:
    return InvalidParameter(
        f"{name} {value[:32]!r} must be a time written YYYYMMDDhhmmss (UTC+8), "
        "from 00010101080000 to 99991231235959."
    )


def parse_status(value: str | None) -> TaskStatus | None:
    if value is None or value == "":
        return None
    try:
        return TaskStatus(value.upper())
    except ValueError:
        raise InvalidParameter(
            f"status {value!r} must be one of {', '.join(s.value for s in TaskStatus)}."
        ) from None


def created(task: Task, *, request_id: str) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "output": {"task_id": task.id, "task_status": task.status.value},
    }


def unknown(task_id: str, *, request_id: str) -> dict[str, Any]:
    return {"request_id": request_id, "output": {"task_id": task_id, "task_status": "UNKNOWN"}}


def encode_task_unknown(task_id: str) -> bytes:
    """`unknown` without its request id, encoded like `encode_task`."""
    body = unknown(task_id, request_id="")
    del body["request_id"]
    return encode(body)


def task_body(task: Task, *, request_id: str, video_url: str | None) -> dict[str, Any]:
    body: dict[str, Any] = {"request_id": request_id, "output": task_output(task, video_url)}
    usage = task_usage(task)
    if usage is not None:
        body["usage"] = usage
    return body


def encode_task(task: Task, *, video_url: str | None) -> bytes:
    """`task_body` without its request id, JSON-encoded once; `stamp` adds the id per answer
    (a finished task's body is kept encoded and served again)."""
    body = task_body(task, request_id="", video_url=video_url)
    del body["request_id"]
    return encode(body)


def stamp(encoded: bytes, *, request_id: str) -> bytes:
    """An `encode_task` body with `request_id` first, as DashScope orders it."""
    return b'{"request_id":' + encode(request_id) + b"," + encoded[1:]


def encode(document: object) -> bytes:
    """JSON as Starlette's `JSONResponse` writes it (compact, UTF-8, no NaN), for routes that
    answer a pre-encoded `Response` instead of having FastAPI walk the value first."""
    return json.dumps(document, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def task_output(task: Task, video_url: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "task_id": task.id,
        "task_status": task.status.value,
        "submit_time": format_time(task.submit_time),
    }
    if task.scheduled_time is not None:
        out["scheduled_time"] = format_time(task.scheduled_time)
    if task.end_time is not None:
        out["end_time"] = format_time(task.end_time)
    if task.spec.orig_prompt is not None:
        out["orig_prompt"] = task.spec.orig_prompt
    if task.status is TaskStatus.PENDING and task.queue_position is not None:
        # Our extension: how many PENDING tasks of the model a worker takes before this one.
        out["queue_position"] = task.queue_position
    if task.status is TaskStatus.RUNNING and task.progress is not None:
        # Our extension: DashScope reports nothing while a task runs.
        out["progress"] = task.progress.percent
        out["step"] = task.progress.step
        out["total_steps"] = task.progress.total_steps
        out["stage"] = task.progress.stage.value
    if task.status is TaskStatus.SUCCEEDED and task.result is not None:
        if task.result.actual_prompt is not None and task.spec.generation.returns_actual_prompt:
            out["actual_prompt"] = task.result.actual_prompt
        if video_url is not None:
            out["video_url"] = video_url
        if task.result.blocks_computed is not None and task.result.blocks_skipped is not None:
            # Our extension: what a block cache saved (docs/performance.md).
            out["transformer_blocks"] = {
                "computed": task.result.blocks_computed,
                "skipped": task.result.blocks_skipped,
            }
    if task.status is TaskStatus.FAILED and task.error is not None:
        out["code"] = task.error.code
        out["message"] = task.error.message
    return out


def task_usage(task: Task) -> dict[str, Any] | None:
    """Billing facts of a SUCCEEDED task, in the fields of its model generation."""
    if task.status is not TaskStatus.SUCCEEDED or task.result is None:
        return None
    spec, result = task.spec, task.result
    size = f"{result.width}*{result.height}"
    usage: dict[str, Any]
    if spec.generation is Generation.WAN26:
        usage = {
            "duration": float(spec.duration),
            "input_video_duration": 0,
            "output_video_duration": spec.duration,
            "SR": TIER_SR[spec.tier],
            "size": size,
            "video_count": 1,
        }
    else:
        usage = {"video_duration": spec.duration, "video_ratio": size, "video_count": 1}
    if spec.generation in (Generation.WAN25, Generation.WAN26):
        usage["audio"] = result.has_audio
    return usage


def page_body(
    page: TaskPage, query: TaskQuery, *, request_id: str, url_for: UrlFor
) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "page_no": query.page_no,
        "page_size": query.page_size,
        "total": page.total,
        "tasks": [
            {**task_output(t, url_for(t)), "model_name": t.model, "request_id": t.request_id}
            for t in page.tasks
        ],
    }


def upload_policy_body(policy: UploadPolicy, *, request_id: str) -> dict[str, Any]:
    """getPolicy's answer, in the OSS field names the SDK reads (`data`, as DashScope does)."""
    megabytes = max(1, policy.max_bytes // (1024 * 1024))
    return {
        "request_id": request_id,
        "data": {
            "policy": policy.policy,
            "signature": policy.signature,
            "upload_dir": policy.upload_dir,
            "upload_host": policy.upload_host,
            "expire_in_seconds": policy.expires_in_seconds,
            "max_file_size_mb": megabytes,
            "capacity_limit_mb": megabytes,
            # Fixed values the SDK echoes back in its form; the signature is what authorises.
            "oss_access_key_id": "wanserve",
            "x_oss_object_acl": "private",
            "x_oss_forbid_overwrite": "true",
        },
    }


def models_body(
    cards: Iterable[ModelCard], *, features: Features, request_id: str
) -> dict[str, Any]:
    """The catalogue as this deployment serves it: what each model name takes, in the request
    fields a client sends, and which optional features this server can run for it."""
    return {
        "request_id": request_id,
        "features": {
            "dubbing": features.audio_generation,
            # Multi-shot planning and prompt extension need the same thing: an extender.
            "prompt_extension": features.multi_shot,
            "multi_shot": features.multi_shot,
        },
        "models": [model_entry(card, features=features) for card in sorted(cards, key=_by_name)],
    }


def _by_name(card: ModelCard) -> str:
    return card.name


_IMAGES: dict[Kind, tuple[str, ...]] = {
    Kind.TEXT_TO_VIDEO: (),
    Kind.IMAGE_TO_VIDEO: ("img_url",),
    Kind.KEYFRAMES_TO_VIDEO: ("first_frame_url", "last_frame_url"),
}


def model_entry(card: ModelCard, *, features: Features) -> dict[str, Any]:
    """One model of `GET /api/v1/models`; every value is the card's, so a request built from
    it passes `build_spec`."""
    t2v = card.kind is Kind.TEXT_TO_VIDEO
    sized_by = "size" if t2v else "resolution"
    audio = ("audio_url",) if card.audio else ()
    parameters = [sized_by, "duration", "seed", "prompt_extend", "watermark", "shot_type"]
    if card.audio:
        parameters.append("audio")
    multi_shot = card.multi_shot and features.multi_shot
    default_tier = tier_of(card.default_size) if card.default_size else card.default_tier
    return {
        "model": card.name,
        "kind": card.kind.value,
        "generation": card.generation.value,
        "inputs": ["prompt", "negative_prompt", *_IMAGES[card.kind], *audio],
        "prompt_required": t2v,
        "prompt_limit": card.prompt_limit,
        "negative_prompt_limit": card.negative_prompt_limit,
        "sized_by": sized_by,
        "resolutions": [
            {
                "resolution": tier,
                "pixels": TIER_AREA[tier],
                # Image-driven models follow the image's aspect: no size list to pick from.
                "sizes": [str(s) for s in card.sizes if tier_of(s) == tier] if t2v else [],
            }
            for tier in card.tiers
        ],
        "default_size": str(card.default_size) if card.default_size else None,
        "default_resolution": default_tier,
        "durations": list(card.durations.allowed),
        "default_duration": card.durations.default,
        "fps": card.fps,
        "steps": card.sampling.steps,
        "seed_max": SEED_MAX,
        "parameters": parameters,
        "shot_types": ["single", "multi"] if multi_shot else ["single"],
        "audio": card.audio,
        "dubbing": card.audio and features.audio_generation,
        "multi_shot": multi_shot,
    }


def error_body(code: str, message: str, *, request_id: str) -> dict[str, Any]:
    return {"request_id": request_id, "code": code, "message": message}


# -- Live events (`GET /tasks/{id}/events`): the `data` of each event kind. --


def status_data(state: TaskState) -> dict[str, Any]:
    return {
        "task_id": state.task_id,
        "task_status": state.status.value,
        "queue_position": state.queue_position,
    }


def progress_data(state: TaskState) -> dict[str, Any]:
    progress = state.progress
    # Steps mean something from the first denoising step on.
    counted = progress.stage not in (TaskStage.QUEUED, TaskStage.LOADING)
    return {
        "task_id": state.task_id,
        "stage": progress.stage.value,
        "step": progress.step if counted else None,
        "total_steps": progress.total_steps if counted else None,
        "progress": progress.percent,
    }


# -- The client side (`wanserve generate --server`): requests built, answers read. --


def create_body(request: SynthesisRequest) -> dict[str, Any]:
    """The create-task body for `request` (the inverse of `parse_create_body`)."""
    inp = {name: getattr(request, name) for name in _INPUT_FIELDS}
    params = {name: getattr(request, name) for name in _PARAMETER_FIELDS}
    return {
        "model": request.model,
        "input": {k: v for k, v in inp.items() if v is not None},
        "parameters": {k: v for k, v in params.items() if v is not None},
    }


def read_error(body: object, *, status: int) -> TaskError:
    """A refusal's code and message (a body that is not ours still says something)."""
    if isinstance(body, dict) and isinstance(body.get("code"), str):
        return TaskError(code=body["code"], message=str(body.get("message", "")))
    return TaskError(code=f"HTTP{status}", message=str(body)[:500])


def read_created(body: dict[str, Any]) -> str:
    return str(body["output"]["task_id"])


def read_outcome(body: dict[str, Any]) -> TaskOutcome:
    """A task body (`GET /tasks/{id}`, or a `done` event) as the client needs it."""
    out = body["output"]
    status_text = str(out["task_status"])
    status = None if status_text == "UNKNOWN" else TaskStatus(status_text)
    error = None
    if status is TaskStatus.FAILED:
        error = TaskError(code=str(out.get("code", "")), message=str(out.get("message", "")))
    return TaskOutcome(
        task_id=str(out["task_id"]), status=status, video_url=out.get("video_url"), error=error
    )


def read_status_data(data: dict[str, Any]) -> tuple[TaskStatus | None, int | None]:
    """A `status` event: the status (None for UNKNOWN) and the queue position."""
    text_ = str(data["task_status"])
    position = data.get("queue_position")
    return (
        None if text_ == "UNKNOWN" else TaskStatus(text_),
        position if isinstance(position, int) else None,
    )


def read_progress_data(data: dict[str, Any]) -> Progress:
    return Progress(
        stage=TaskStage(data["stage"]),
        step=int(data.get("step") or 0),
        total_steps=int(data.get("total_steps") or 0),
        percent=int(data["progress"]),
    )


@dataclass(frozen=True)
class UploadForm:
    """Where and what to POST to upload one file, from a getPolicy answer."""

    url: str
    oss_url: str  # how a create request names the file once uploaded
    fields: dict[str, str]


def upload_form(body: dict[str, Any], *, file_name: str, content_type: str) -> UploadForm:
    data = body["data"]
    key = f"{data['upload_dir']}/{file_name}"
    return UploadForm(
        url=str(data["upload_host"]),
        oss_url=f"oss://{key}",
        fields={
            "OSSAccessKeyId": str(data["oss_access_key_id"]),
            "Signature": str(data["signature"]),
            "policy": str(data["policy"]),
            "key": key,
            "x-oss-object-acl": str(data["x_oss_object_acl"]),
            "x-oss-forbid-overwrite": str(data["x_oss_forbid_overwrite"]),
            "success_action_status": "200",
            "x-oss-content-type": content_type,
        },
    )


# -- The OpenAPI description of the wire format (wanserve.api.openapi publishes it). --
#
# Bodies are rendered by the functions above and read by `parse_create_body`; these models say
# what those produce and accept, and the schemathesis test (tests/api/test_openapi.py) holds
# every response to them. Request models allow extra fields (the SDK adds some); response
# models forbid them, so an undocumented field fails that test.

TaskStatusName = Literal["PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "UNKNOWN"]
_OPEN = ConfigDict(extra="allow")
_CLOSED = ConfigDict(extra="forbid")


class ErrorBody(BaseModel):
    """Every error: DashScope's code and a message for people."""

    model_config = _CLOSED
    request_id: str
    code: str
    message: str


class CreateTaskInput(BaseModel):
    """`input`: the prompts and input references (`input.function` and `input.extend_prompt`,
    which the SDK adds, and any other field are accepted and ignored)."""

    model_config = _OPEN
    prompt: str | None = None
    negative_prompt: str | None = None
    img_url: str | None = None
    first_frame_url: str | None = None
    last_frame_url: str | None = None
    audio_url: str | None = None


class CreateTaskParameters(BaseModel):
    """`parameters`: checked against the model's card; unknown ones are ignored."""

    model_config = _OPEN
    size: str | None = Field(default=None, description="width*height in ASCII digits")
    resolution: str | None = None
    duration: int | None = None
    seed: int | None = Field(default=None, ge=0, le=2_147_483_647)
    prompt_extend: bool | None = None
    watermark: bool | None = None
    shot_type: str | None = None
    audio: bool | None = None
    steps: int | None = Field(
        default=None, ge=1, le=STEPS_MAX, description="extension: denoising steps"
    )
    guidance_scale: float | None = Field(
        default=None, ge=0, le=GUIDANCE_MAX, description="extension: classifier-free guidance"
    )
    callback_url: str | None = Field(
        default=None,
        max_length=MAX_CALLBACK_URL,
        description="wanserve extension: an http(s) URL POSTed the task's GET body, signed "
        "the Standard Webhooks way, when it ends",
    )
    lora: str | None = Field(
        default=None, description="extension: a LoRA adapter on this server, by name"
    )
    lora_scale: float | None = Field(
        default=None, ge=0, le=2, description="extension: the adapter's strength (default 1)"
    )
    cache: Literal["off", "fast", "faster"] | None = Field(
        default=None,
        description="extension: transformer block cache for this task (lossy; default: the "
        "model's, see docs/performance.md)",
    )


class CreateTaskRequest(BaseModel):
    """The create-task body (`Content-Type: application/json`)."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [
                {
                    "model": "wan2.1-t2v-turbo",
                    "input": {"prompt": "a cat in the snow"},
                    "parameters": {"size": "832*480"},
                }
            ]
        },
    )
    model: str
    input: CreateTaskInput
    parameters: CreateTaskParameters | None = None


class CreatedOutput(BaseModel):
    model_config = _CLOSED
    task_id: str
    task_status: TaskStatusName


class CreatedResponse(BaseModel):
    model_config = _CLOSED
    request_id: str
    output: CreatedOutput


class TransformerBlocks(BaseModel):
    """Transformer block evaluations a SUCCEEDED task computed and a block cache skipped."""

    model_config = _CLOSED
    computed: int
    skipped: int


class TaskOutput(BaseModel):
    """A task as `GET /tasks/{id}` shows it; fields appear as the status makes them known."""

    model_config = _CLOSED
    task_id: str
    task_status: TaskStatusName
    submit_time: str | None = None
    scheduled_time: str | None = None
    end_time: str | None = None
    orig_prompt: str | None = None
    actual_prompt: str | None = None
    video_url: str | None = None
    progress: int | None = None
    step: int | None = None
    total_steps: int | None = None
    stage: Literal["loading", "denoising", "decoding", "encoding"] | None = None
    queue_position: int | None = None
    transformer_blocks: TransformerBlocks | None = None
    code: str | None = None
    message: str | None = None


class TaskUsage(BaseModel):
    """Billing facts of a SUCCEEDED task, in the fields of its model generation."""

    model_config = _CLOSED
    video_duration: int | None = None
    video_ratio: str | None = None
    video_count: int
    duration: float | None = None
    input_video_duration: int | None = None
    output_video_duration: int | None = None
    SR: int | None = None
    size: str | None = None
    audio: bool | None = None


class TaskResponse(BaseModel):
    model_config = _CLOSED
    request_id: str
    output: TaskOutput
    usage: TaskUsage | None = None


class ListedTask(TaskOutput):
    model_name: str
    request_id: str


class TaskListResponse(BaseModel):
    model_config = _CLOSED
    request_id: str
    page_no: int
    page_size: int
    total: int
    tasks: list[ListedTask]


class CancelResponse(BaseModel):
    model_config = _CLOSED
    request_id: str


class UploadPolicyData(BaseModel):
    model_config = _CLOSED
    policy: str
    signature: str
    upload_dir: str
    upload_host: str
    expire_in_seconds: int
    max_file_size_mb: int
    capacity_limit_mb: int
    oss_access_key_id: str
    x_oss_object_acl: str
    x_oss_forbid_overwrite: str


class UploadPolicyResponse(BaseModel):
    model_config = _CLOSED
    request_id: str
    data: UploadPolicyData


class ModelResolution(BaseModel):
    model_config = _CLOSED
    resolution: Literal["480P", "720P", "1080P"]
    pixels: int = Field(description="the tier's pixel budget (width x height)")
    sizes: list[str] = Field(
        description="the `size` values of this tier (text-to-video); empty for image-driven "
        "models, whose video keeps the input image's aspect ratio at the tier's pixel budget"
    )


class ModelEntry(BaseModel):
    """What one model name takes, as this deployment serves it."""

    model_config = _CLOSED
    model: str
    kind: Literal["t2v", "i2v", "kf2v"] = Field(
        description="t2v: text; i2v: a first frame (img_url); kf2v: first and last frames"
    )
    generation: Literal["wan2.1", "wan2.2", "wan2.5", "wan2.6"]
    inputs: list[str] = Field(description="the `input` fields it reads")
    prompt_required: bool
    prompt_limit: int = Field(description="characters of prompt used; the rest is dropped")
    negative_prompt_limit: int
    sized_by: Literal["size", "resolution"] = Field(
        description="the parameter that chooses the frame: `size` (width*height) or "
        "`resolution` (a tier)"
    )
    resolutions: list[ModelResolution]
    default_size: str | None = Field(description="text-to-video only")
    default_resolution: str
    durations: list[int] = Field(description="allowed `duration` values, in seconds")
    default_duration: int
    fps: int = Field(description="frame rate of the delivered video")
    steps: int = Field(description="denoising steps per pass on this server")
    seed_max: int
    parameters: list[str] = Field(description="the `parameters` it takes")
    shot_types: list[Literal["single", "multi"]]
    audio: bool = Field(description="takes `audio_url`; its video can carry a sound track")
    dubbing: bool = Field(description="this server can generate its sound track (`audio: true`)")
    multi_shot: bool = Field(description="this server can plan multi-shot videos for it")


class DeploymentFeatures(BaseModel):
    model_config = _CLOSED
    dubbing: bool
    prompt_extension: bool
    multi_shot: bool


class ModelsResponse(BaseModel):
    model_config = _CLOSED
    request_id: str
    features: DeploymentFeatures
    models: list[ModelEntry]


_ERROR_WHEN = {
    400: "InvalidParameter, BadRequest.EmptyModel / EmptyInput, InvalidURL, UnsupportedOperation",
    401: "InvalidApiKey: no key, or an unknown or revoked one",
    403: "AccessDenied",
    413: "BadRequest.TooLarge: the body is over the server's limit",
    415: "InvalidParameter: the body is not application/json, or is compressed",
    429: "Throttling, Throttling.RateQuota, Throttling.AuthFailures (with Retry-After)",
    500: "InternalError",
}


def error_description(status: int) -> str:
    return _ERROR_WHEN[status]


def responses(ok: type[BaseModel] | str, *errors: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` of a route: its 200 body (a model, or a description when the body
    is empty) and the error statuses it really answers (401 is added where a key is needed)."""
    success = {"model": ok} if isinstance(ok, type) else {"description": ok}
    documented: dict[int | str, dict[str, Any]] = {200: success}
    for status in errors:
        documented[status] = {"model": ErrorBody, "description": _ERROR_WHEN[status]}
    return documented


# The OSS-style form of the upload POST (the SDK sends the fields in this order).
UPLOAD_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["policy", "Signature", "key", "file"],
    "properties": {
        "OSSAccessKeyId": {"type": "string"},
        "Signature": {"type": "string"},
        "policy": {"type": "string"},
        "key": {"type": "string", "description": "<upload_dir>/<file name>"},
        "x-oss-object-acl": {"type": "string"},
        "x-oss-forbid-overwrite": {"type": "string"},
        "success_action_status": {"type": "string"},
        "x-oss-content-type": {"type": "string"},
        "file": {"type": "string", "format": "binary"},
    },
}
