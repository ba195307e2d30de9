"""The door-neutral request: what every door turns its wire format into.

A door (DashScope's JSON body, OpenAI's `/v1/videos` JSON or form, the `wanserve generate`
command line) reads its own field names and spellings and builds one `SynthesisRequest`, whose
values are already typed: a size is a `Size`, a number an `int` or `float`, every input a
`Media` with its kind and where its bytes come from. `spec.build_spec` then checks that request
against the model's card (is this size one of the model's, this duration allowed, this input
taken by this model) and nothing else.

The readers below turn a JSON value into its typed form with the message every door gives for
a value of the wrong type or out of its card-independent range; the doors call them from their
models' validators, so each rule and its message are written once.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Self
from urllib.parse import urlsplit

from wanserve.catalog import Size
from wanserve.engine.adapters import MAX_SCALE, is_valid_name
from wanserve.engine.options import CachePreset
from wanserve.errors import EmptyModel, InvalidParameter, InvalidURL
from wanserve.media.datauri import parse_data_uri

SEED_MAX = 2_147_483_647
# Prompts past a model's limit are truncated, as the seeds say; past this they are refused, so a
# client cannot make the server store and echo megabytes of text per task.
PROMPT_HARD_LIMIT = 20_000  # wan3.0 takes 20,000 characters
# Per-request sampling overrides (an extension): bounded so one request cannot hold a worker
# for thousands of steps, nor ask for a guidance scale no checkpoint was trained near.
STEPS_MAX = 100
GUIDANCE_MAX = 20.0
SHOT_TYPES = ("single", "multi")
CALLBACK_FIELD = "parameters.callback_url"
# Longer URLs are refused at submission: the client controls this size, and browsers and
# proxies commonly stop at about 2 KB anyway.
MAX_CALLBACK_URL = 2048


class Medium(StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    AUDIO = "audio"


class MediaKind(StrEnum):
    """What an input is for, in DashScope's `media[].type` vocabulary (the VACE model's flat
    `*_url` fields map onto the same kinds)."""

    FIRST_FRAME = "first_frame"
    LAST_FRAME = "last_frame"
    DRIVING_AUDIO = "driving_audio"  # the video's sound track (wan2.5 and later)
    FIRST_CLIP = "first_clip"  # a video to continue
    LAST_CLIP = "last_clip"  # a video to lead into (VACE video_extension)
    REFERENCE_IMAGE = "reference_image"  # a subject or background to put in the video
    REFERENCE_VIDEO = "reference_video"
    REFERENCE_AUDIO = "reference_audio"
    VIDEO = "video"  # the source video an edit works on
    MASK_IMAGE = "mask_image"  # white: edit, black: keep
    MASK_VIDEO = "mask_video"

    @property
    def medium(self) -> Medium:
        return _MEDIUM.get(self, Medium.IMAGE)


_MEDIUM = {
    MediaKind.DRIVING_AUDIO: Medium.AUDIO,
    MediaKind.REFERENCE_AUDIO: Medium.AUDIO,
    MediaKind.FIRST_CLIP: Medium.VIDEO,
    MediaKind.LAST_CLIP: Medium.VIDEO,
    MediaKind.REFERENCE_VIDEO: Medium.VIDEO,
    MediaKind.VIDEO: Medium.VIDEO,
    MediaKind.MASK_VIDEO: Medium.VIDEO,
}


@dataclass(frozen=True)
class WebUrl:
    """An http(s) URL the worker fetches through the guarded fetcher."""

    url: str


@dataclass(frozen=True)
class Upload:
    """A file the caller uploaded through the SDK's upload flow: `oss://<key>`."""

    url: str


@dataclass(frozen=True)
class Inline:
    """Bytes sent in the request itself (a base64 data URI, a multipart file part)."""

    data: bytes = field(repr=False)
    media_type: str


MediaSource = WebUrl | Upload | Inline


@dataclass(frozen=True)
class Media:
    """One input of a request: its kind, its source, and the wire field that carried it (named
    in errors, e.g. `img_url` or `input_reference`)."""

    kind: MediaKind
    source: MediaSource
    field: str


@dataclass(frozen=True)
class Extensions:
    """wanserve's per-request extensions (docs/api.md), typed; None: the model's own."""

    steps: int | None = None  # denoising steps
    guidance_scale: float | None = None  # classifier-free guidance
    lora: str | None = None  # an adapter on this server, by name
    lora_scale: float | None = None
    cache: CachePreset | None = None  # transformer block cache preset


class Function(StrEnum):
    """The VACE model's editing functions (`input.function`)."""

    IMAGE_REFERENCE = "image_reference"
    VIDEO_REPAINTING = "video_repainting"
    VIDEO_EDIT = "video_edit"
    VIDEO_EXTENSION = "video_extension"
    VIDEO_OUTPAINTING = "video_outpainting"


@dataclass(frozen=True)
class Edit:
    """How an editing model uses its inputs (the VACE parameters); None: its default."""

    function: Function | None = None
    obj_or_bg: tuple[str, ...] | None = None  # per reference image: "obj" or "bg"
    control_condition: str | None = None  # video_repainting: posebodyface|posebody|depth|scribble
    strength: float | None = None  # video_repainting: 0..1
    mask_type: str | None = None  # video_edit: tracking | fixed
    expand_ratio: float | None = None  # video_edit: 0..1
    expand_mode: str | None = None  # video_edit: hull | bbox | original
    mask_frame_id: int | None = None  # video_edit: the frame the mask image belongs to (1-based)
    top_scale: float | None = None  # video_outpainting: 1..2 each
    bottom_scale: float | None = None
    left_scale: float | None = None
    right_scale: float | None = None


@dataclass(frozen=True)
class SynthesisRequest:
    """A create request from any door, typed; None: absent (the model's default applies)."""

    model: str
    prompt: str | None = None
    negative_prompt: str | None = None
    media: tuple[Media, ...] = ()
    size: Size | None = None
    # Image-driven models take a resolution tier, not a size. A door without a resolution field
    # (OpenAI's /v1/videos) sets this: its `size` then names the tier of one of the model's
    # sizes, and the video still follows the image's aspect.
    size_names_tier: bool = False
    resolution: str | None = None
    duration: int | None = None
    seed: int | None = None
    prompt_extend: bool | None = None
    watermark: bool | None = None
    shot_type: str | None = None  # one of SHOT_TYPES
    audio: bool | None = None  # generate a sound track
    ratio: str | None = None  # an aspect ratio such as 16:9, or "adaptive" (media[] models)
    audio_setting: str | None = None  # wan2.7-videoedit: auto | origin
    edit: Edit = Edit()
    extensions: Extensions = Extensions()
    # Not part of the generation: where the task's end is POSTed (see tasks/webhooks.py).
    callback_url: str | None = None

    def inputs(self, kind: MediaKind) -> tuple[Media, ...]:
        return tuple(m for m in self.media if m.kind is kind)

    @classmethod
    def of(cls, *, model: str, media: tuple[Media, ...], values: Mapping[str, Any]) -> Self:
        """A request from a door's fields matched by name: each is a field of the request,
        of its `Edit` or of its `Extensions`, so a door that names a field as the request
        does declares it once, in its model. A name that is none of them is a programming
        error (TypeError)."""
        own = {f.name for f in dataclasses.fields(cls)}
        edits = {f.name for f in dataclasses.fields(Edit)}
        extensions = {k: v for k, v in values.items() if k not in own and k not in edits}
        edit = Edit(**{k: v for k, v in values.items() if k in edits})
        fields = {k: v for k, v in values.items() if k in own}
        return cls(
            model=model, media=media, edit=edit, extensions=Extensions(**extensions), **fields
        )


# -- Readers: a JSON value to its typed form, or the error every door gives. -----------------


def model_name(value: object) -> str:
    if value is None or value == "":
        raise EmptyModel("Model not specified: set `model` to a model name.", field="model")
    if not isinstance(value, str):
        raise InvalidParameter("model must be a string.", field="model")
    return value


def text(value: object, name: str) -> str | None:
    """A prompt-like text, bounded by PROMPT_HARD_LIMIT (a model's own limit truncates)."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParameter(f"{name} must be a string.", field=name)
    if len(value) > PROMPT_HARD_LIMIT:
        raise InvalidParameter(
            f"{name} has {len(value)} characters; more than {PROMPT_HARD_LIMIT} are refused "
            "(text past the model's own limit is truncated).",
            field=name,
        )
    return value


def integer(value: object) -> int | None:
    """An integer JSON value (5 and 5.0 alike); None for anything else, booleans included."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def flag(value: object, name: str) -> bool | None:
    if value is None:
        return None
    if not isinstance(value, bool):
        raise InvalidParameter(f"{name} must be true or false, not {value!r}.", field=name)
    return value


# ASCII digits only: str.isdigit() and int() also take full-width and other Unicode digits
# ("１２８０*７２０"), which DashScope does not document and no client needs.
_SIZE = re.compile(r"[ \t]*([0-9]{1,5})[ \t]*\*[ \t]*([0-9]{1,5})[ \t]*")


def size(value: object) -> Size | None:
    """DashScope's `width*height`."""
    return sized(
        value,
        _SIZE,
        hint="write width*height, for example 1280*720 (not a ratio or a tier such as 720P)",
    )


def sized(value: object, pattern: re.Pattern[str], *, hint: str) -> Size | None:
    """A door's spelling of a size: `pattern` matches it with width and height as its two
    groups; anything else is refused with `hint`."""
    if value is None:
        return None
    if isinstance(value, str):
        match = pattern.fullmatch(value)
        if match is not None:
            return Size(int(match.group(1)), int(match.group(2)))
    shown = repr(value[:32]) if isinstance(value, str) else repr(value)
    raise InvalidParameter(f"size {shown} is malformed: {hint}.", field="size")


def resolution(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParameter(
            f"resolution {value!r} must be a resolution tier such as 720P.", field="resolution"
        )
    return value


def duration(value: object) -> int | None:
    if value is None:
        return None
    number = integer(value)
    if number is None:
        raise InvalidParameter(
            f"duration {value!r} must be a whole number of seconds.", field="duration"
        )
    return number


def seed(value: object) -> int | None:
    return _integer_in(value, "seed", 0, SEED_MAX)


def shot_type(value: object) -> str | None:
    if value is None:
        return None
    if value not in SHOT_TYPES:
        raise InvalidParameter(
            f"shot_type {value!r} must be 'single' or 'multi'.", field="shot_type"
        )
    assert isinstance(value, str)
    return value


def steps(value: object) -> int | None:
    return _integer_in(value, "steps", 1, STEPS_MAX)


def _integer_in(value: object, name: str, low: int, high: int) -> int | None:
    if value is None:
        return None
    number = integer(value)
    if number is None or not low <= number <= high:
        raise InvalidParameter(
            f"{name} {value!r} must be an integer between {low} and {high}.", field=name
        )
    return number


def guidance_scale(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidParameter(
            f"guidance_scale {value!r} must be a number.", field="guidance_scale"
        )
    scale = float(value)
    if not 0.0 <= scale <= GUIDANCE_MAX:  # also refuses NaN
        raise InvalidParameter(
            f"guidance_scale {value!r} must be between 0 and {GUIDANCE_MAX:g}.",
            field="guidance_scale",
        )
    return scale


def cache(value: object) -> CachePreset | None:
    """A block cache preset (lossy: docs/performance.md)."""
    if value is None:
        return None
    for preset in CachePreset:
        if value == preset.value:
            return preset
    presets = ", ".join(p.value for p in CachePreset)
    raise InvalidParameter(f"cache {value!r} must be one of {presets}.", field="cache")


def lora(value: object) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not is_valid_name(value):
        raise InvalidParameter(
            "lora must be the name of an adapter on this server (letters, digits, '.', '_' "
            "and '-'; no paths).",
            field="lora",
        )
    return value


def lora_scale(value: object) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidParameter(
            f"lora_scale must be a number from 0 to {MAX_SCALE:g}.", field="lora_scale"
        )
    if not 0 <= value <= MAX_SCALE:
        raise InvalidParameter(
            f"lora_scale {value!r} must be from 0 to {MAX_SCALE:g}.", field="lora_scale"
        )
    return float(value)


def callback_url(value: object) -> str | None:
    """Its type and length; `tasks.webhooks.check_callback` decides where it may point."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidParameter(f"{CALLBACK_FIELD} must be a string URL.", field="callback_url")
    if len(value) > MAX_CALLBACK_URL:
        raise InvalidParameter(
            f"{CALLBACK_FIELD} is {len(value)} characters long; at most {MAX_CALLBACK_URL} "
            "are accepted.",
            field="callback_url",
        )
    return value


def media_source(value: object, name: str) -> MediaSource | None:
    """An input reference as sent: an http(s) URL, a base64 `data:` URI (decoded here; the
    body cap bounds it, the task service holds it to the input kind's limit), or an `oss://`
    upload. Refuses at once what no fetch could succeed with."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidParameter(f"{name} must be a string URL.", field=name)
    if value.startswith(("file://", "/")):
        raise InvalidURL(
            f"{name} is a local path, which the server cannot read: send an http(s) URL, a "
            "base64 data URI, or let the dashscope SDK upload the file (it turns file:// paths "
            "into oss:// references).",
            field=name,
        )
    scheme, sep, rest = value.partition(":")
    scheme = scheme.lower() if sep else ""
    url = f"{scheme}:{rest}"  # one spelling of the scheme from here on (OSS:// is oss://)
    if scheme in ("http", "https"):
        _check_web_url(url, name)
        return WebUrl(url)
    if scheme == "data":
        media_type, data = parse_data_uri(url, field=name, max_bytes=len(url))
        return Inline(data=data, media_type=media_type)
    if scheme == "oss":
        if not rest.startswith("//"):
            raise InvalidURL(f"{name} must be written oss://<key>.", field=name)
        return Upload(url)
    raise InvalidURL(
        f"{name} must be an http(s) URL, a data: URI or an oss:// reference.", field=name
    )


def _check_web_url(url: str, name: str) -> None:
    """Refuse what no fetch could succeed with: no host, a bad port, a host name that is not
    valid (internationalised names must encode to IDNA)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
        if host and not _is_ip_literal(host):
            host.encode("idna")
    except (ValueError, UnicodeError):
        raise InvalidURL(f"{name} is not a valid URL.", field=name) from None
    if not host or not parts.netloc:
        raise InvalidURL(f"{name} has no host.", field=name)
    if port == 0:
        raise InvalidURL(f"{name} has an invalid port.", field=name)


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


# -- Editing and media[] readers. -------------------------------------------------------------

RATIOS = ("16:9", "9:16", "1:1", "4:3", "3:4")
ADAPTIVE = "adaptive"
CONTROL_CONDITIONS = ("posebodyface", "posebody", "depth", "scribble")
MASK_TYPES = ("tracking", "fixed")
EXPAND_MODES = ("hull", "bbox", "original")
# Inputs one request may list (`input.media` and the reference lists): DashScope's largest
# model takes 22 (10 images, 5 videos, 5 audio clips, 2 frames); more is refused at once.
MAX_MEDIA = 24


def ratio(value: object) -> str | None:
    if value is None:
        return None
    if value not in (*RATIOS, ADAPTIVE):
        raise InvalidParameter(
            f"ratio {value!r} must be one of {', '.join(RATIOS)} or {ADAPTIVE}.", field="ratio"
        )
    assert isinstance(value, str)
    return value


def function(value: object) -> Function | None:
    """`input.function`: a VACE function; the SDK's own default ("video-synthesis", which it
    sends on every call) and anything else that is not a VACE function read as absent, and
    the models that need one say so."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParameter("input.function must be a string.", field="function")
    try:
        return Function(value)
    except ValueError:
        return None


def choice(value: object, name: str, options: tuple[str, ...]) -> str | None:
    if value is None:
        return None
    if value not in options:
        raise InvalidParameter(f"{name} {value!r} must be one of {', '.join(options)}.", field=name)
    assert isinstance(value, str)
    return value


def number_in(value: object, name: str, low: float, high: float) -> float | None:
    if value is None:
        return None
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not low <= value <= high
    ):
        raise InvalidParameter(
            f"{name} {value!r} must be a number from {low:g} to {high:g}.", field=name
        )
    return float(value)


def mask_frame_id(value: object) -> int | None:
    return _integer_in(value, "mask_frame_id", 1, 10_000)


def obj_or_bg(value: object) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_MEDIA:
        raise InvalidParameter(
            f"obj_or_bg must be a list of at most {MAX_MEDIA} entries, each 'obj' or 'bg'.",
            field="obj_or_bg",
        )
    for item in value:
        if item not in ("obj", "bg"):
            raise InvalidParameter(
                f"obj_or_bg entries must be 'obj' or 'bg', not {item!r}.", field="obj_or_bg"
            )
    return tuple(value)


def media_list(value: object, name: str, kind: MediaKind) -> tuple[Media, ...]:
    """A list of URLs of one kind (`ref_images_url`, `reference_video_urls`): each item is a
    source, named `name[i]` in errors."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidParameter(f"{name} must be a list of URLs.", field=name)
    _check_count(value, name)
    found = []
    for i, item in enumerate(value):
        source = media_source(item, f"{name}[{i}]")
        if source is None:
            raise InvalidParameter(f"{name}[{i}] is empty.", field=f"{name}[{i}]")
        found.append(Media(kind, source, f"{name}[{i}]"))
    return tuple(found)


_VIDEO_SUFFIXES = (".mp4", ".mov")


def reference_list(value: object, name: str) -> tuple[Media, ...]:
    """wan2.6-r2v's `reference_urls`: images and videos in one list, told apart as DashScope
    does, by the file (a video's path ends in .mp4 or .mov; a data URI names its type)."""
    return tuple(
        dataclasses.replace(media, kind=MediaKind.REFERENCE_VIDEO)
        if _is_video(media.source)
        else media
        for media in media_list(value, name, MediaKind.REFERENCE_IMAGE)
    )


def _is_video(source: MediaSource) -> bool:
    if isinstance(source, Inline):
        return source.media_type.startswith("video/")
    return urlsplit(source.url).path.lower().endswith(_VIDEO_SUFFIXES)


def media_items(value: object) -> tuple[Media, ...]:
    """`input.media`: a list of `{"type": ..., "url": ...}`, each named `media[i]`."""
    if value is None:
        return ()
    if not isinstance(value, list):
        raise InvalidParameter(
            'input.media must be a list of {"type": ..., "url": ...} objects.', field="media"
        )
    _check_count(value, "input.media")
    kinds = ", ".join(k.value for k in MediaKind if k in MEDIA_TYPES)
    found = []
    for i, item in enumerate(value):
        name = f"media[{i}]"
        if not isinstance(item, dict):
            raise InvalidParameter(
                f'input.{name} must be an object with "type" and "url".', field=name
            )
        kind = item.get("type")
        if not isinstance(kind, str) or kind not in MEDIA_TYPES:
            raise InvalidParameter(
                f"input.{name}.type {kind!r} is not a media type; one of {kinds}.", field=name
            )
        source = media_source(item.get("url"), f"input.{name}.url")
        if source is None:
            raise InvalidParameter(f"input.{name}.url is required.", field=name)
        if item.get("reference_voice") is not None:
            raise InvalidParameter(
                f"input.{name}.reference_voice is not supported: no open model clones a voice "
                "from a sample yet.",
                field=name,
            )
        found.append(Media(MediaKind(kind), source, f"input.{name}"))
    return tuple(found)


# The types `input.media[].type` may name (the VACE masks and last clip have flat fields only).
MEDIA_TYPES = frozenset(
    {
        MediaKind.FIRST_FRAME,
        MediaKind.LAST_FRAME,
        MediaKind.DRIVING_AUDIO,
        MediaKind.FIRST_CLIP,
        MediaKind.REFERENCE_IMAGE,
        MediaKind.REFERENCE_VIDEO,
        MediaKind.REFERENCE_AUDIO,
        MediaKind.VIDEO,
    }
)


def _check_count(value: list[Any], name: str) -> None:
    if len(value) > MAX_MEDIA:
        raise InvalidParameter(
            f"{name} lists {len(value)} inputs; at most {MAX_MEDIA} are accepted.",
            field=name,
        )
