"""The client's side of DashScope's wire format (`wanserve generate --server`): the create body
written from a typed request, and the server's answers read back. It imports nothing of the
server (`wanserve.api`); `tests/unit/test_client_wire.py` holds `create_body` to the server's
own parser, `api/dashscope/protocol.py`, so the two cannot drift apart.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wanserve.request import MEDIA_TYPES, Inline, MediaKind, MediaSource, SynthesisRequest
from wanserve.tasks.models import Progress, TaskError, TaskOutcome, TaskStage, TaskStatus

# Where each kind of input travels in a create body, for the models of the flat fields (the
# legacy ones, the VACE model's): one input each. A first frame goes as `first_frame_url` beside
# a last frame (key frames) and to the VACE model, else as `img_url`.
_FLAT_FIELD = {
    MediaKind.FIRST_FRAME: "img_url",
    MediaKind.LAST_FRAME: "last_frame_url",
    MediaKind.DRIVING_AUDIO: "audio_url",
    MediaKind.FIRST_CLIP: "first_clip_url",
    MediaKind.LAST_CLIP: "last_clip_url",
    MediaKind.VIDEO: "video_url",
    MediaKind.MASK_IMAGE: "mask_image_url",
    MediaKind.MASK_VIDEO: "mask_video_url",
}
# The order the server reads the flat fields back in, then the lists.
_FLAT_ORDER = (
    "img_url",
    "first_frame_url",
    "last_frame_url",
    "audio_url",
    "first_clip_url",
    "last_clip_url",
    "video_url",
    "mask_image_url",
    "mask_video_url",
)
_LISTS = ("media", "ref_images_url", "reference_urls")
# The client has no catalogue: the generations of the `media[]` protocol, by name.
_MEDIA_PROTOCOL = ("wan2.7", "wan3.0")


def uses_media_list(model: str) -> bool:
    """Whether `model` takes its inputs as `input.media` (wan2.7, wan3.0)."""
    return model.startswith(_MEDIA_PROTOCOL)


def _slot(model: str, kind: MediaKind, *, keyframes: bool) -> tuple[str, bool]:
    """The field an input of `kind` travels in, and whether that field is a list."""
    vace = "vace" in model
    if kind in MEDIA_TYPES and uses_media_list(model):
        return "media", True
    if kind is MediaKind.REFERENCE_IMAGE:
        return ("ref_images_url" if vace else "reference_urls"), True
    if kind is MediaKind.REFERENCE_VIDEO:
        return "reference_urls", True  # told from images by the file, as the server does
    if kind is MediaKind.FIRST_FRAME and (keyframes or vace):
        return "first_frame_url", False
    if kind in _FLAT_FIELD:
        return _FLAT_FIELD[kind], False
    return "media", True  # reference audio: only `media[]` carries it


def placement(model: str, kinds: Sequence[MediaKind]) -> list[tuple[int, str]]:
    """Where the inputs of these kinds go in `model`'s create body, in the order the server
    reads them back: `(i, name)` for `kinds[i]`, `name` the field the server names it by
    (`img_url`, `input.media[0]`, `ref_images_url[1]`). Each flat field carries one input
    (ValueError for a second)."""
    return [(i, name) for i, _, name in _placed(model, kinds)]


def _placed(model: str, kinds: Sequence[MediaKind]) -> list[tuple[int, str, str]]:
    """`placement`, with the body field each input goes in: `(i, field, name)`."""
    keyframes = MediaKind.LAST_FRAME in kinds
    slots = [_slot(model, kind, keyframes=keyframes) for kind in kinds]
    found: list[tuple[int, str, str]] = []
    for field in _FLAT_ORDER:
        sent = [i for i, (name, many) in enumerate(slots) if name == field and not many]
        if len(sent) > 1:
            raise ValueError(f"{field} carries one input; {len(sent)} were given")
        found += [(i, field, field) for i in sent]
    for field in _LISTS:
        members = [i for i, (name, many) in enumerate(slots) if name == field and many]
        shown = "input.media" if field == "media" else field
        found += [(i, field, f"{shown}[{n}]") for n, i in enumerate(members)]
    return found


def create_body(request: SynthesisRequest) -> dict[str, Any]:
    """The create-task body that the DashScope door reads back as `request` (when its inputs
    are in `placement`'s order and named as it names them). Inputs go in `input.media` for
    the wan2.7 and wan3.0 models; elsewhere in the flat fields (`img_url`, `video_url`, ...)
    and the reference lists: `ref_images_url` for the VACE models, `reference_urls` for
    the others (reference-to-video)."""
    inp: dict[str, Any] = {"prompt": request.prompt, "negative_prompt": request.negative_prompt}
    kinds = [media.kind for media in request.media]
    for i, field, _ in _placed(request.model, kinds):
        media = request.media[i]
        if field == "media":
            inp.setdefault("media", []).append(
                {"type": media.kind.value, "url": reference(media.source)}
            )
        elif field in _LISTS:
            inp.setdefault(field, []).append(reference(media.source))
        else:
            inp[field] = reference(media.source)
    edit = request.edit
    inp["function"] = None if edit.function is None else edit.function.value
    ext = request.extensions
    params: dict[str, Any] = {
        "size": None if request.size is None else str(request.size),
        "resolution": request.resolution,
        "ratio": request.ratio,
        "duration": request.duration,
        "seed": request.seed,
        "prompt_extend": request.prompt_extend,
        "watermark": request.watermark,
        "shot_type": request.shot_type,
        "audio": request.audio,
        "obj_or_bg": None if edit.obj_or_bg is None else list(edit.obj_or_bg),
        "control_condition": edit.control_condition,
        "strength": edit.strength,
        "mask_type": edit.mask_type,
        "expand_ratio": edit.expand_ratio,
        "expand_mode": edit.expand_mode,
        "mask_frame_id": edit.mask_frame_id,
        "top_scale": edit.top_scale,
        "bottom_scale": edit.bottom_scale,
        "left_scale": edit.left_scale,
        "right_scale": edit.right_scale,
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
