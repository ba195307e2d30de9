"""OpenAI's Videos create body (`POST /v1/videos`): the model that parses it, documents it, and
builds the door-neutral `SynthesisRequest`.

Each field is defined once, in `VideoCreateRequest`, with a reader that takes both spellings
a value arrives in: JSON, and the multipart form the `openai` SDK always sends, where every
value is text (the SDK turns `extra_body` numbers into strings and nests objects as
`input_reference[image_url]`). What is OpenAI's own is decided here: `size` written `WxH`,
`seconds` as a string, `input_reference` as a file, a URL or `{image_url}`, no prompt rewriting
unless asked, and which model a request without `model` gets; `spec.build_spec` checks the
rest against the model's card.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WithJsonSchema

from wanserve import request as read
from wanserve import text
from wanserve.api.body import invalid, named
from wanserve.catalog import Size
from wanserve.errors import InvalidParameter
from wanserve.request import (
    GUIDANCE_MAX,
    SEED_MAX,
    STEPS_MAX,
    Extensions,
    Inline,
    Media,
    MediaKind,
    MediaSource,
    SynthesisRequest,
)

_INPUT = "input_reference"
# ASCII digits only, as the DashScope door's `width*height`; `x` (OpenAI's) or `*` between.
_SIZE = re.compile(r"[ \t]*([0-9]{1,5})[ \t]*[xX*][ \t]*([0-9]{1,5})[ \t]*")
_INTEGER = re.compile(r"[ \t]*(-?[0-9]{1,12})[ \t]*")
_NUMBER = re.compile(r"[ \t]*-?[0-9]{1,12}(\.[0-9]{1,12})?[ \t]*")
_MEDIA_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+")


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


# -- Form-lenient readers: text as a form sends it, then the shared reader. ----------------


def _form_integer(value: object, name: str) -> object:
    if isinstance(value, str):
        match = _INTEGER.fullmatch(value)
        if match is None:
            raise InvalidParameter(f"{name} {value[:32]!r} must be an integer.", field=name)
        return int(match.group(1))
    return value


def _form_number(value: object, name: str) -> object:
    if isinstance(value, str):
        if _NUMBER.fullmatch(value) is None:
            raise InvalidParameter(f"{name} {value[:32]!r} must be a number.", field=name)
        return float(value)
    return value


def _form_flag(value: object, name: str) -> bool | None:
    if value == "":
        return None
    if isinstance(value, str):
        # The SDK writes extra_body booleans as "true" / "false".
        if value.lower() in ("true", "false"):
            return value.lower() == "true"
        raise InvalidParameter(f"{name} {value[:32]!r} must be true or false.", field=name)
    return read.flag(value, name)


def _size(value: object) -> Size | None:
    return read.sized(
        None if value == "" else value, _SIZE, hint="write WIDTHxHEIGHT, for example 1280x720"
    )


def _reference(value: object) -> MediaSource | None:
    """`input_reference` sent as text: a URL or data URL, or `{image_url}`."""
    if value is None or value == "":
        return None
    if isinstance(value, dict):
        if value.get("file_id") is not None:
            raise InvalidParameter(
                "input_reference.file_id is not supported: this server keeps no files API; "
                "upload the image as input_reference, or send image_url.",
                field=_INPUT,
            )
        value = value.get("image_url")
        if not isinstance(value, str) or not value:
            value = None
    if not isinstance(value, str):
        raise InvalidParameter(
            "input_reference must be an image file, a URL, or an object with image_url.",
            field=_INPUT,
        )
    return read.media_source(value, _INPUT)


_STRING: dict[str, object] = {"anyOf": [{"type": "string"}, {"type": "null"}]}


class VideoCreateRequest(BaseModel):
    """The create body as JSON. The multipart form (what the SDK sends) has the same fields
    as text, with `input_reference` a file part or `input_reference[image_url]`."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={
            "examples": [{"prompt": "a cat in the snow", "model": "wan2.1-t2v-turbo"}]
        },
    )
    prompt: Annotated[
        str | None,
        named(read.text, "prompt"),
        Field(description="required by text-to-video models"),
    ] = None
    model: Annotated[
        str | None,
        BeforeValidator(lambda v: None if v is None or v == "" else read.model_name(v)),
        Field(
            description="a catalogue model; default: openai_default_model, or "
            "openai_default_image_model with an input_reference"
        ),
    ] = None
    seconds: Annotated[
        int | None,
        BeforeValidator(lambda v: read.duration(_form_integer(v, "seconds"))),
        WithJsonSchema(_STRING | {"description": "the model's durations, as a string"}),
    ] = None
    size: Annotated[
        Size | None,
        BeforeValidator(_size),
        WithJsonSchema(_STRING | {"description": "WIDTHxHEIGHT, one of the model's sizes"}),
    ] = None
    input_reference: Annotated[
        MediaSource | None,
        BeforeValidator(_reference),
        WithJsonSchema(
            {
                "anyOf": [
                    {"type": "string"},
                    {
                        "type": "object",
                        "properties": {"image_url": {"type": "string"}},
                        "additionalProperties": True,
                    },
                    {"type": "null"},
                ],
                "description": "first frame: an http(s) URL, a data URL, or {image_url}",
            }
        ),
    ] = None
    negative_prompt: Annotated[str | None, named(read.text, "negative_prompt")] = None
    seed: Annotated[
        Annotated[int, Field(ge=0, le=SEED_MAX)] | None,
        BeforeValidator(lambda v: read.seed(_form_integer(v, "seed"))),
    ] = None
    num_inference_steps: Annotated[
        Annotated[int, Field(ge=1, le=STEPS_MAX)] | None,
        BeforeValidator(lambda v: read.steps(_form_integer(v, "num_inference_steps"))),
    ] = None
    steps: Annotated[
        Annotated[int, Field(ge=1, le=STEPS_MAX)] | None,
        BeforeValidator(lambda v: read.steps(_form_integer(v, "steps"))),
    ] = None
    guidance_scale: Annotated[
        Annotated[float, Field(ge=0, le=GUIDANCE_MAX)] | None,
        BeforeValidator(lambda v: read.guidance_scale(_form_number(v, "guidance_scale"))),
    ] = None
    prompt_extend: Annotated[
        bool | None, named(_form_flag, "prompt_extend"), Field(description="default false")
    ] = None
    watermark: Annotated[bool | None, named(_form_flag, "watermark")] = None

    def to_request(self, *, image: ImageFile | None, defaults: Defaults) -> SynthesisRequest:
        """The door-neutral request; `image` is an uploaded `input_reference` file."""
        source = self.input_reference
        if image is not None:
            if source is not None:
                raise InvalidParameter("send input_reference once: a file or a URL.", field=_INPUT)
            # The worker decodes the bytes whatever they claim to be; the type is only a label.
            declared = (image.content_type or "").split(";")[0].strip().lower()
            media_type = declared if _MEDIA_TYPE.fullmatch(declared) else "application/octet-stream"
            source = Inline(data=image.data, media_type=media_type)
        model = self.model or (defaults.image_model if source else defaults.text_model)
        if self.num_inference_steps is not None and self.steps is not None:
            raise InvalidParameter("send num_inference_steps or steps, not both.", field="steps")
        steps = self.num_inference_steps if self.num_inference_steps is not None else self.steps
        return SynthesisRequest(
            model=model,
            prompt=self.prompt,
            negative_prompt=self.negative_prompt,
            media=(Media(MediaKind.FIRST_FRAME, source, _INPUT),) if source else (),
            size=self.size,
            size_names_tier=True,
            duration=self.seconds,
            seed=self.seed,
            # The prompt is used as sent unless asked: OpenAI's API has no prompt rewriting.
            prompt_extend=bool(self.prompt_extend),
            watermark=bool(self.watermark),
            extensions=Extensions(steps=steps, guidance_scale=self.guidance_scale),
        )


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
    """The domain request of a create call (JSON or form fields, and an uploaded file)."""
    if image is not None and len(image.data) > max_image:
        raise InvalidParameter(
            f"input_reference is larger than {max_image // (1024 * 1024)} MB.", field=_INPUT
        )
    try:
        body = VideoCreateRequest.model_validate(dict(fields))
    except ValidationError as exc:
        raise invalid(exc) from None
    return body.to_request(image=image, defaults=defaults)


def form_schema() -> dict[str, object]:
    """The multipart form's OpenAPI schema: `VideoCreateRequest`'s fields, each as text, with
    `input_reference` a file part (or `input_reference[image_url]`)."""
    properties: dict[str, object] = {
        name: {"type": "string"} for name in VideoCreateRequest.model_fields
    }
    properties[_INPUT] = {"type": "string", "format": "binary"}
    properties[f"{_INPUT}[image_url]"] = {"type": "string"}
    return {"type": "object", "properties": properties}
