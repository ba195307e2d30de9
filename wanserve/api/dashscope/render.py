"""DashScope's answers, rendered from domain `Task`s: times in UTC+8 `YYYY-MM-DD
HH:mm:ss.SSS`, `usage` in the fields of the model's generation (wan2.6 differs from wan2.5 and
earlier), the list and upload-policy bodies, and the model catalogue. `docs.py` holds the
models these bodies are documented (and schema-tested) by.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

from wanserve.catalog import (
    MEDIA_TOTAL,
    RATIO_SIZES,
    TIER_AREA,
    TIER_SR,
    Generation,
    Kind,
    ModelCard,
    Sizing,
    tier_of,
)
from wanserve.errors import InvalidParameter
from wanserve.request import ADAPTIVE, RATIOS, SEED_MAX, Function
from wanserve.spec import Features
from wanserve.tasks.models import Task, TaskPage, TaskQuery, TaskStatus
from wanserve.uploads import UploadPolicy

BEIJING = timezone(timedelta(hours=8), "UTC+8")

UrlFor = Callable[[Task], str | None]


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
    seconds = task.seconds  # as delivered (a source video's length may decide it)
    size = f"{result.width}*{result.height}"
    usage: dict[str, Any]
    if spec.generation in (Generation.WAN27, Generation.WAN30):
        # The media[] protocol's usage (a captured wan2.7/wan3.0 answer): the ratio is the
        # video's own, reduced.
        common = math.gcd(result.width, result.height)
        usage = {
            "duration": float(seconds),
            "input_video_duration": 0,
            "output_video_duration": seconds,
            "fps": spec.fps,
            "SR": TIER_SR[spec.tier],
            "ratio": f"{result.width // common}:{result.height // common}",
            "video_count": 1,
        }
    elif spec.generation is Generation.WAN26:
        usage = {
            "duration": float(seconds),
            "input_video_duration": 0,
            "output_video_duration": seconds,
            "SR": TIER_SR[spec.tier],
            "size": size,
            "video_count": 1,
        }
    else:
        usage = {"video_duration": seconds, "video_ratio": size, "video_count": 1}
    if spec.generation not in (Generation.WAN21, Generation.WAN22):
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


# The flat `input` fields of the models with routes that predate `media[]`.
_VACE_INPUTS = (
    "function",
    "ref_images_url",
    "video_url",
    "mask_image_url",
    "mask_video_url",
    "first_frame_url",
    "last_frame_url",
    "first_clip_url",
    "last_clip_url",
)
_VACE_PARAMETERS = (
    "obj_or_bg",
    "control_condition",
    "strength",
    "mask_type",
    "expand_ratio",
    "mask_frame_id",
    "top_scale",
    "bottom_scale",
    "left_scale",
    "right_scale",
)


def _input_fields(card: ModelCard) -> tuple[str, ...]:
    if not card.routes:
        audio = ("audio_url",) if card.audio else ()
        return (*_IMAGES[card.kind], *audio)
    if card.editing:
        return _VACE_INPUTS
    if card.generation in (Generation.WAN27, Generation.WAN30):
        return ("media",)
    return ("reference_urls",)


def model_entry(card: ModelCard, *, features: Features) -> dict[str, Any]:
    """One model of `GET /api/v1/models`; every value is the card's, so a request built from
    it passes `build_spec`."""
    rule = card.size_rule
    sized = rule is Sizing.SIZE
    sized_by = "size" if sized else "resolution"
    parameters = [sized_by, "duration", "seed", "prompt_extend", "watermark", "shot_type"]
    if rule is Sizing.RATIO:
        parameters.append("ratio")
    if card.audio:
        parameters.append("audio")
    if card.editing:
        parameters.extend(_VACE_PARAMETERS)
    negative = ("negative_prompt",) if card.negative_prompt else ()
    multi_shot = card.multi_shot and features.multi_shot
    default_tier = tier_of(card.default_size) if card.default_size else card.default_tier
    return {
        "model": card.name,
        "kind": card.kind.value,
        "generation": card.generation.value,
        "inputs": ["prompt", *negative, *_input_fields(card)],
        # media[] and reference models: how many of each input kind, and the mixes served.
        "media": {k: n for k, n in card.media_limits.items() if k != MEDIA_TOTAL},
        "media_total": card.media_limits.get(MEDIA_TOTAL),
        "routes": [
            {
                "kind": route.kind.value,
                "requires": sorted(route.requires),
                "accepts": sorted(route.accepts - route.requires),
                "checkpoint": route.checkpoint.source,
            }
            for route in card.routes
        ],
        "functions": [f.value for f in Function] if card.editing else [],
        "prompt_required": card.kind in (Kind.TEXT_TO_VIDEO, Kind.COMPOSITE),
        "prompt_limit": card.prompt_limit,
        "negative_prompt_limit": card.negative_prompt_limit,
        "sized_by": sized_by,
        "resolutions": [
            {
                "resolution": tier,
                "pixels": TIER_AREA[tier],
                # Image-driven models follow the image's aspect: no size list to pick from.
                "sizes": _sizes(card, tier),
            }
            for tier in card.tiers
        ],
        "default_size": str(card.default_size) if card.default_size else None,
        "default_resolution": default_tier,
        "durations": list(card.durations.allowed),
        "auto_duration": card.auto_duration,
        "ratios": [*RATIOS, ADAPTIVE] if rule is Sizing.RATIO else [],
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


def _sizes(card: ModelCard, tier: str) -> list[str]:
    rule = card.size_rule
    if rule is Sizing.SIZE:
        return [str(s) for s in card.sizes if tier_of(s) == tier]
    if rule is Sizing.RATIO:
        return [str(s) for s in RATIO_SIZES[tier].values()]
    return []
