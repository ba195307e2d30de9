"""The client's side of DashScope's wire format (`wanserve generate --server`): the create body
written from a typed request, and the server's answers read back. It imports nothing of the
server (`wanserve.api`); `tests/unit/test_client_wire.py` holds `create_body` to the server's
own parser, `api/dashscope/protocol.py`, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any

from wanserve.request import Inline, MediaKind, MediaSource, SynthesisRequest
from wanserve.tasks.models import Progress, TaskError, TaskOutcome, TaskStage, TaskStatus

# The DashScope `input` field of each kind of input, when it is the request's only one.
_INPUT_FIELD = {
    MediaKind.FIRST_FRAME: "img_url",
    MediaKind.LAST_FRAME: "last_frame_url",
    MediaKind.DRIVING_AUDIO: "audio_url",
}


def create_body(request: SynthesisRequest) -> dict[str, Any]:
    """The create-task body that the DashScope door reads back as `request`. A first frame
    goes as `first_frame_url` beside a last frame (key frames), else as `img_url`."""
    keyframes = bool(request.inputs(MediaKind.LAST_FRAME))
    inp: dict[str, Any] = {"prompt": request.prompt, "negative_prompt": request.negative_prompt}
    for media in request.media:
        name = _INPUT_FIELD[media.kind]
        if media.kind is MediaKind.FIRST_FRAME and keyframes:
            name = "first_frame_url"
        inp[name] = reference(media.source)
    ext = request.extensions
    params: dict[str, Any] = {
        "size": None if request.size is None else str(request.size),
        "resolution": request.resolution,
        "duration": request.duration,
        "seed": request.seed,
        "prompt_extend": request.prompt_extend,
        "watermark": request.watermark,
        "shot_type": request.shot_type,
        "audio": request.audio,
        "steps": ext.steps,
        "guidance_scale": ext.guidance_scale,
        "lora": ext.lora,
        "lora_scale": ext.lora_scale,
        "cache": None if ext.cache is None else ext.cache.value,
        "callback_url": request.callback_url,
    }
    return {
        "model": request.model,
        "input": {k: v for k, v in inp.items() if v is not None},
        "parameters": {k: v for k, v in params.items() if v is not None},
    }


def reference(source: MediaSource) -> str:
    """How a create body names an input: its URL, or its bytes as a base64 data URI."""
    if isinstance(source, Inline):
        return f"data:{source.media_type};base64," + base64.b64encode(source.data).decode()
    return source.url


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
