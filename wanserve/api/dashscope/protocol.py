"""DashScope's create-task body: the models that parse it, document it, and build the request.

Each field is defined once, here: its JSON type and bounds (what the OpenAPI document shows),
and the reader from `wanserve.request` that checks it with DashScope's message (a value the
reader refuses never reaches pydantic's own checks, so every error is a DashScope error, not a
pydantic one). `CreateTaskRequest.to_request()` is the door-neutral `SynthesisRequest`;
`spec.build_spec` checks it against the model's card.

Reading is lenient where the SDK needs it: `input.function` and `input.extend_prompt` (which
it adds) and any unknown field are accepted and ignored, JSON null is "absent".

To add a request field: add it to `CreateTaskInput` or `CreateTaskParameters` with its reader,
and carry it in `to_request()` (docs/architecture.md, "Add a request field").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationError,
    WithJsonSchema,
    model_validator,
)

from wanserve import request as read
from wanserve import text
from wanserve.api.body import invalid, load_json, named
from wanserve.catalog import Size
from wanserve.engine.adapters import MAX_SCALE
from wanserve.engine.options import CachePreset
from wanserve.errors import EmptyInput, InvalidParameter
from wanserve.request import (
    GUIDANCE_MAX,
    MAX_CALLBACK_URL,
    SEED_MAX,
    STEPS_MAX,
    Function,
    Media,
    MediaKind,
    MediaSource,
    SynthesisRequest,
)


def _as_string(description: str) -> WithJsonSchema:
    """The documented JSON of a field its reader turns from a string into a typed value."""
    return WithJsonSchema(
        {"anyOf": [{"type": "string"}, {"type": "null"}], "description": description}
    )


def _as_list(description: str) -> WithJsonSchema:
    return WithJsonSchema(
        {"anyOf": [{"type": "array"}, {"type": "null"}], "description": description}
    )


def _source(name: str, description: str) -> tuple[BeforeValidator, WithJsonSchema]:
    url = "an http(s) URL, a base64 data URI, or an oss:// upload"
    return named(read.media_source, name), _as_string(f"{description}: {url}")


_OPEN = ConfigDict(extra="allow")
# The `input` fields that carry one input, and what each carries, in the order they are read.
_MEDIA_FIELDS = {
    "img_url": MediaKind.FIRST_FRAME,
    "first_frame_url": MediaKind.FIRST_FRAME,
    "last_frame_url": MediaKind.LAST_FRAME,
    "audio_url": MediaKind.DRIVING_AUDIO,
    "first_clip_url": MediaKind.FIRST_CLIP,
    "last_clip_url": MediaKind.LAST_CLIP,
    "video_url": MediaKind.VIDEO,
    "mask_image_url": MediaKind.MASK_IMAGE,
    "mask_video_url": MediaKind.MASK_VIDEO,
}
# The VACE inputs the dashscope SDK sends in `parameters` when they are passed as keywords
# (its HTTP documentation puts them in `input`): read from either place.
_VACE_MEDIA = ("first_clip_url", "last_clip_url", "video_url", "mask_image_url", "mask_video_url")
# The `input` fields that carry lists of inputs.
_LIST_FIELDS = ("media", "ref_images_url", "reference_urls", "reference_video_urls")
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
Steps = Annotated[int, Field(ge=1, le=STEPS_MAX)]
Guidance = Annotated[float, Field(ge=0, le=GUIDANCE_MAX)]
Strength = Annotated[float, Field(ge=0, le=MAX_SCALE)]
Url = Annotated[str, Field(max_length=MAX_CALLBACK_URL)]


def _scale(name: str) -> Any:
    return lambda value: read.number_in(value, name, 1, 2)


class CreateTaskInput(BaseModel):
    """`input`: the prompts and input references (`input.function` and `input.extend_prompt`,
    which the SDK adds, and any other field are accepted and ignored)."""

    model_config = _OPEN
    prompt: Annotated[str | None, named(read.text, "prompt")] = None
    negative_prompt: Annotated[str | None, named(read.text, "negative_prompt")] = None
    img_url: Annotated[MediaSource | None, *_source("img_url", "first frame")] = None
    first_frame_url: Annotated[MediaSource | None, *_source("first_frame_url", "first frame")] = (
        None
    )
    last_frame_url: Annotated[
        MediaSource | None, *_source("last_frame_url", "last frame (kf2v)")
    ] = None
    audio_url: Annotated[MediaSource | None, *_source("audio_url", "sound track (wan2.5+)")] = None
    first_clip_url: Annotated[MediaSource | None, *_source("first_clip_url", "VACE: video")] = None
    last_clip_url: Annotated[MediaSource | None, *_source("last_clip_url", "VACE: video")] = None
    video_url: Annotated[MediaSource | None, *_source("video_url", "VACE: source video")] = None
    mask_image_url: Annotated[
        MediaSource | None, *_source("mask_image_url", "VACE: white edits, black keeps")
    ] = None
    mask_video_url: Annotated[MediaSource | None, *_source("mask_video_url", "VACE")] = None
    media: Annotated[
        tuple[Media, ...],
        BeforeValidator(read.media_items),
        _as_list(
            "the inputs (wan2.7, wan3.0): {type, url} objects, type one of first_frame, "
            "last_frame, driving_audio, first_clip, reference_image, reference_video, "
            "reference_audio, video"
        ),
    ] = ()
    ref_images_url: Annotated[
        tuple[Media, ...],
        BeforeValidator(lambda v: read.media_list(v, "ref_images_url", MediaKind.REFERENCE_IMAGE)),
        _as_list("VACE: reference images (1-3)"),
    ] = ()
    reference_urls: Annotated[
        tuple[Media, ...],
        BeforeValidator(lambda v: read.reference_list(v, "reference_urls")),
        _as_list("wan2.6-r2v: reference images and videos, character1.. in the prompt"),
    ] = ()
    reference_video_urls: Annotated[
        tuple[Media, ...],
        BeforeValidator(
            lambda v: read.media_list(v, "reference_video_urls", MediaKind.REFERENCE_VIDEO)
        ),
        _as_list("wan2.6-r2v (older name): reference videos"),
    ] = ()
    function: Annotated[
        Function | None,
        BeforeValidator(read.function),
        Field(
            description="VACE: image_reference, video_repainting, video_edit, "
            "video_extension or video_outpainting"
        ),
    ] = None

    def media_from(self, parameters: CreateTaskParameters) -> tuple[Media, ...]:
        """Every input, flat fields first, then the lists in order; a VACE input the SDK put
        in `parameters` counts as sent in `input`."""
        found = []
        for name, kind in _MEDIA_FIELDS.items():
            source = getattr(self, name) or (
                getattr(parameters, name) if name in _VACE_MEDIA else None
            )
            if source:
                found.append(Media(kind, source, name))
        lists = [getattr(self, name) for name in _LIST_FIELDS]
        lists.append(() if self.ref_images_url else parameters.ref_images_url)
        return tuple(found) + tuple(m for items in lists for m in items)


class CreateTaskParameters(BaseModel):
    """`parameters`: checked against the model's card; unknown ones are ignored."""

    model_config = _OPEN
    size: Annotated[
        Size | None, BeforeValidator(read.size), _as_string("width*height in ASCII digits")
    ] = None
    resolution: Annotated[
        str | None, BeforeValidator(read.resolution), Field(description="480P, 720P or 1080P")
    ] = None
    duration: Annotated[
        int | None, BeforeValidator(read.duration), Field(description="seconds")
    ] = None
    seed: Annotated[Seed | None, BeforeValidator(read.seed)] = None
    prompt_extend: Annotated[bool | None, named(read.flag, "prompt_extend")] = None
    watermark: Annotated[bool | None, named(read.flag, "watermark")] = None
    shot_type: Annotated[Literal["single", "multi"] | None, BeforeValidator(read.shot_type)] = None
    audio: Annotated[bool | None, named(read.flag, "audio")] = None
    ratio: Annotated[
        str | None,
        BeforeValidator(read.ratio),
        Field(description="wan2.7, wan3.0: 16:9, 9:16, 1:1, 4:3, 3:4 or adaptive"),
    ] = None
    audio_setting: Annotated[
        str | None,
        BeforeValidator(lambda v: read.choice(v, "audio_setting", ("auto", "origin"))),
        Field(description="wan2.7-videoedit: auto (the default) or origin"),
    ] = None
    obj_or_bg: Annotated[
        tuple[str, ...] | None,
        BeforeValidator(read.obj_or_bg),
        Field(description="VACE image_reference: obj or bg per reference image"),
    ] = None
    control_condition: Annotated[
        str | None,
        BeforeValidator(lambda v: read.choice(v, "control_condition", read.CONTROL_CONDITIONS)),
        Field(description="VACE: posebodyface, posebody, depth or scribble"),
    ] = None
    strength: Annotated[
        float | None,
        BeforeValidator(lambda v: read.number_in(v, "strength", 0, 1)),
        Field(description="VACE video_repainting: 0 to 1 (default 1)"),
    ] = None
    mask_type: Annotated[
        str | None,
        BeforeValidator(lambda v: read.choice(v, "mask_type", read.MASK_TYPES)),
        Field(description="VACE video_edit: tracking or fixed"),
    ] = None
    expand_ratio: Annotated[
        float | None,
        BeforeValidator(lambda v: read.number_in(v, "expand_ratio", 0, 1)),
        Field(description="VACE video_edit: grow the mask by this share (default 0.05)"),
    ] = None
    expand_mode: Annotated[
        str | None,
        BeforeValidator(lambda v: read.choice(v, "expand_mode", read.EXPAND_MODES)),
        Field(description="VACE video_edit: hull, bbox or original"),
    ] = None
    mask_frame_id: Annotated[
        int | None,
        BeforeValidator(read.mask_frame_id),
        Field(description="VACE video_edit: the frame (from 1) the mask image shows"),
    ] = None
    top_scale: Annotated[float | None, BeforeValidator(_scale("top_scale"))] = None
    bottom_scale: Annotated[float | None, BeforeValidator(_scale("bottom_scale"))] = None
    left_scale: Annotated[float | None, BeforeValidator(_scale("left_scale"))] = None
    right_scale: Annotated[float | None, BeforeValidator(_scale("right_scale"))] = None
    # The VACE inputs, where the dashscope SDK sends them (see `_VACE_MEDIA`).
    first_clip_url: Annotated[MediaSource | None, *_source("first_clip_url", "as input.*")] = None
    last_clip_url: Annotated[MediaSource | None, *_source("last_clip_url", "as input.*")] = None
    video_url: Annotated[MediaSource | None, *_source("video_url", "as input.*")] = None
    mask_image_url: Annotated[MediaSource | None, *_source("mask_image_url", "as input.*")] = None
    mask_video_url: Annotated[MediaSource | None, *_source("mask_video_url", "as input.*")] = None
    ref_images_url: Annotated[
        tuple[Media, ...],
        BeforeValidator(lambda v: read.media_list(v, "ref_images_url", MediaKind.REFERENCE_IMAGE)),
        _as_list("as input.ref_images_url"),
    ] = ()
    steps: Annotated[
        Steps | None, BeforeValidator(read.steps), Field(description="extension: denoising steps")
    ] = None
    guidance_scale: Annotated[
        Guidance | None,
        BeforeValidator(read.guidance_scale),
        Field(description="extension: classifier-free guidance"),
    ] = None
    callback_url: Annotated[
        Url | None,
        BeforeValidator(read.callback_url),
        Field(
            description="wanserve extension: an http(s) URL POSTed the task's GET body, "
            "signed the Standard Webhooks way, when it ends",
        ),
    ] = None
    lora: Annotated[
        str | None,
        BeforeValidator(read.lora),
        Field(description="extension: a LoRA adapter on this server, by name"),
    ] = None
    lora_scale: Annotated[
        Strength | None,
        BeforeValidator(read.lora_scale),
        Field(description="extension: the adapter's strength (default 1)"),
    ] = None
    cache: Annotated[
        CachePreset | None,
        BeforeValidator(read.cache),
        Field(
            description="extension: transformer block cache for this task (lossy; default: "
            "the model's, see docs/performance.md)"
        ),
    ] = None


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
    model: Annotated[str, BeforeValidator(read.model_name)]
    input: CreateTaskInput
    parameters: CreateTaskParameters | None = None

    @model_validator(mode="before")
    @classmethod
    def _shape(cls, body: Any) -> Any:
        """The body's shape, in the order DashScope reports it: a JSON object, every string
        storable, `input` present, `input` and `parameters` objects; `model` may be absent
        (its reader then says so)."""
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
        if params is not None and not isinstance(params, dict):
            raise InvalidParameter("parameters must be a JSON object.")
        return body if "model" in body else {**body, "model": None}

    def to_request(self) -> SynthesisRequest:
        """The typed request: the media fields as `Media`, every other declared field (not the
        extra ones the SDK adds) by its name."""
        inp, params = self.input, self.parameters or CreateTaskParameters()
        media = (*_MEDIA_FIELDS, *_LIST_FIELDS)
        return SynthesisRequest.of(
            model=self.model,
            media=inp.media_from(params),
            values=_declared(inp, skip=media) | _declared(params, skip=media),
        )


def _declared(model: BaseModel, *, skip: Iterable[str] = ()) -> dict[str, Any]:
    return {name: getattr(model, name) for name in type(model).model_fields if name not in skip}


def parse_create_body(raw: bytes) -> SynthesisRequest:
    """The create-task JSON body as a typed `SynthesisRequest` (not yet checked against the
    model's card)."""
    return read_body(load_json(raw))


def read_body(document: object) -> SynthesisRequest:
    """`parse_create_body` of a JSON document already parsed."""
    try:
        return CreateTaskRequest.model_validate(document).to_request()
    except ValidationError as exc:
        raise invalid(exc) from None
