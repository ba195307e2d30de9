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


def _source(name: str, description: str) -> tuple[BeforeValidator, WithJsonSchema]:
    url = "an http(s) URL, a base64 data URI, or an oss:// upload"
    return named(read.media_source, name), _as_string(f"{description}: {url}")


_OPEN = ConfigDict(extra="allow")
# The `input` fields that carry media, and what each carries, in the order they are read.
_MEDIA_FIELDS = {
    "img_url": MediaKind.FIRST_FRAME,
    "first_frame_url": MediaKind.FIRST_FRAME,
    "last_frame_url": MediaKind.LAST_FRAME,
    "audio_url": MediaKind.DRIVING_AUDIO,
}
Seed = Annotated[int, Field(ge=0, le=SEED_MAX)]
Steps = Annotated[int, Field(ge=1, le=STEPS_MAX)]
Guidance = Annotated[float, Field(ge=0, le=GUIDANCE_MAX)]
Strength = Annotated[float, Field(ge=0, le=MAX_SCALE)]
Url = Annotated[str, Field(max_length=MAX_CALLBACK_URL)]


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

    def media(self) -> tuple[Media, ...]:
        found = ((kind, name, getattr(self, name)) for name, kind in _MEDIA_FIELDS.items())
        return tuple(Media(kind, source, name) for kind, name, source in found if source)


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
        return SynthesisRequest.of(
            model=self.model,
            media=inp.media(),
            values=_declared(inp, skip=_MEDIA_FIELDS) | _declared(params),
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
