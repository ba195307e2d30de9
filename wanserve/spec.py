"""From a DashScope request to one frozen `GenerationSpec`: every rule of the seeds, applied once.

`build_spec` is the only place a request's fields are validated. Everything downstream (the
task store, the worker, the video encoder) trusts the spec it receives; the engine never sees
it, only the `GenerationRequest` that `workers.translation.request_for` builds from it.

Image-to-video sizes depend on the input image, which the worker fetches; until then the spec
carries the resolution tier and `with_image_size` fixes the size (the rule lives here too).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import json
import math
import re
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from wanserve.catalog import (
    DEFAULT_NEGATIVE_PROMPT,
    FAMILIES,
    TIER_AREA,
    Catalog,
    Family,
    Generation,
    Kind,
    ModelCard,
    Size,
    frames_for,
    generation_size,
    tier_of,
)
from wanserve.engine.adapters import MAX_SCALE, AdapterDirectory, AdapterUse, is_valid_name
from wanserve.engine.speed import CachePreset
from wanserve.errors import EmptyModel, InvalidParameter, InvalidURL

SEED_MAX = 2_147_483_647
# Prompts past a model's limit are truncated, as the seeds say; past this they are refused, so a
# client cannot make the server store and echo megabytes of text per task.
PROMPT_HARD_LIMIT = 10_000
# Per-request sampling overrides (an extension): bounded so one request cannot hold a worker
# for thousands of steps, nor ask for a guidance scale no checkpoint was trained near.
STEPS_MAX = 100
GUIDANCE_MAX = 20.0


class MediaScheme(StrEnum):
    """How an input reference is read: fetched (http, https), decoded in place (data), or
    taken from the upload store (oss)."""

    HTTP = "http"
    HTTPS = "https"
    DATA = "data"
    OSS = "oss"

    @property
    def is_web(self) -> bool:
        return self in (MediaScheme.HTTP, MediaScheme.HTTPS)


def media_scheme(url: str) -> MediaScheme | None:
    """The scheme of an input reference, in any letter case; None if the server reads no such
    references (or `url` has no scheme)."""
    scheme, sep, _ = url.partition(":")
    if not sep:
        return None
    try:
        return MediaScheme(scheme.lower())
    except ValueError:
        return None


@dataclass(frozen=True)
class MediaRef:
    """A client-supplied input (image or audio) not yet fetched: where it comes from."""

    field: str  # the request field that carried it, named in errors
    url: str  # its scheme is one of `MediaScheme`, in lower case (build_spec normalises it)

    @property
    def scheme(self) -> MediaScheme:
        scheme = media_scheme(self.url)
        if scheme is None:
            raise ValueError(f"{self.field} holds a reference the server cannot read")
        return scheme


@dataclass(frozen=True)
class Features:
    """Optional capabilities of this deployment that change what a request may ask for."""

    audio_generation: bool = False
    multi_shot: bool = False
    # LoRA adapters requests may name (`parameters.lora`), listed from disk per request;
    # None: this server has no adapter directory.
    adapters: AdapterDirectory | None = None


@dataclass(frozen=True)
class SynthesisRequest:
    """A create-task request as sent, values not yet checked (None = absent or JSON null)."""

    model: object
    prompt: object = None
    negative_prompt: object = None
    img_url: object = None
    first_frame_url: object = None
    last_frame_url: object = None
    audio_url: object = None
    size: object = None
    resolution: object = None
    duration: object = None
    seed: object = None
    prompt_extend: object = None
    watermark: object = None
    shot_type: object = None
    audio: object = None
    steps: object = None  # denoising steps (extension; default: the model's)
    guidance_scale: object = None  # classifier-free guidance (extension; default: the model's)
    # Image-driven models take a resolution tier, not a size. A front door without a
    # resolution field (OpenAI's /v1/videos) sets this: its `size` then names the tier of one
    # of the model's sizes, and the video still follows the image's aspect.
    size_names_tier: bool = False
    # Not part of the generation: where the task's end is POSTed (see tasks/webhooks.py).
    callback_url: object = None
    lora: object = None
    lora_scale: object = None
    cache: object = None  # block cache preset (extension; default: the model's)


@dataclass(frozen=True)
class GenerationSpec:
    """Everything needed to produce one video, decided at submission."""

    model: str
    kind: Kind
    generation: Generation
    checkpoint: str
    family: Family
    orig_prompt: str | None  # as sent (shown back as `orig_prompt`)
    prompt: str  # truncated to the model's limit: what the engine is conditioned on
    negative_prompt: str  # the request's (truncated), or Wan's official default
    tier: str  # "480P" | "720P" | "1080P"
    duration: int  # seconds of output video
    fps: int  # output frame rate
    native_fps: int  # the checkpoint's own frame rate
    num_frames: int  # frames generated at native_fps (4n+1)
    steps: int
    guidance_scale: float
    guidance_scale_2: float | None
    seed: int
    watermark: bool
    prompt_extend: bool
    shot_type: str  # "single" | "multi" (multi only when prompt_extend)
    audio: bool  # generate a sound track (automatic dubbing)
    max_area: int
    size_multiple: int
    # Output and denoising sizes; None for image-to-video until the image is known.
    width: int | None = None
    height: int | None = None
    gen_width: int | None = None
    gen_height: int | None = None
    flow_shift: float | None = None
    image: MediaRef | None = None
    last_image: MediaRef | None = None
    audio_ref: MediaRef | None = None
    low_res_flow_shift: float | None = None
    # Videos longer than one pass are generated as segments, each continuing from the last
    # frame of the one before, through this image-to-video checkpoint (None: cannot chain).
    frames_per_pass: int = 81
    continuation_checkpoint: str | None = None
    continuation_family: Family | None = None
    cache: str = "off"  # block cache preset (wanserve.engine.speed.CachePreset)
    # LoRA adapters of every pass: the model's own (a preset's), then the request's.
    adapters: tuple[AdapterUse, ...] = ()

    @property
    def size(self) -> Size:
        if self.width is None or self.height is None:
            raise ValueError("image-to-video size is not known before the image is")
        return Size(self.width, self.height)

    def with_image_size(self, image_width: int, image_height: int) -> GenerationSpec:
        """Fix the output size from the input image: its aspect, the tier's pixel budget,
        both sides multiples of 16 (750x1000 at 720P gives 816x1104)."""
        out = image_driven_size(image_width, image_height, self.tier)
        return self._sized(out)

    def _sized(self, out: Size) -> GenerationSpec:
        gen = generation_size(out, max_area=self.max_area, multiple=self.size_multiple)
        shift = (
            self.low_res_flow_shift
            if self.low_res_flow_shift is not None and gen.area <= TIER_AREA["480P"]
            else self.flow_shift
        )
        return dataclasses.replace(
            self,
            width=out.width,
            height=out.height,
            gen_width=gen.width,
            gen_height=gen.height,
            flow_shift=shift,
        )

    def segment(
        self, *, num_frames: int, prompt: str, seed: int, continued: bool
    ) -> GenerationSpec:
        """One denoising pass of this video: its own frame count, prompt and seed; `continued`
        passes are conditioned on an image through the continuation checkpoint."""
        changes: dict[str, Any] = {"num_frames": num_frames, "prompt": prompt, "seed": seed}
        if continued and self.kind is Kind.TEXT_TO_VIDEO:
            if self.continuation_checkpoint is None or self.continuation_family is None:
                raise ValueError(f"{self.model} has no image-to-video checkpoint to continue with")
            sampling = FAMILIES[self.continuation_family].sampling
            area = (self.gen_width or 0) * (self.gen_height or 0)
            changes |= {
                "kind": Kind.IMAGE_TO_VIDEO,
                "checkpoint": self.continuation_checkpoint,
                "family": self.continuation_family,
                "guidance_scale": sampling.guidance_scale,
                "guidance_scale_2": sampling.guidance_scale_2,
                "flow_shift": sampling.flow_shift_for(area),
            }
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GenerationSpec:
        data: dict[str, Any] = json.loads(text)
        for key in ("image", "last_image", "audio_ref"):
            if data.get(key) is not None:
                data[key] = MediaRef(**data[key])
        data["kind"] = Kind(data["kind"])
        data["generation"] = Generation(data["generation"])
        data["family"] = Family(data["family"])
        if data.get("continuation_family") is not None:
            data["continuation_family"] = Family(data["continuation_family"])
        data["adapters"] = tuple(AdapterUse(**a) for a in data.get("adapters", ()))
        return cls(**data)


def image_driven_size(image_width: int, image_height: int, tier: str) -> Size:
    """Keep the image's aspect, spend the tier's pixel budget, floor both sides to 16."""
    if image_width <= 0 or image_height <= 0:
        raise InvalidParameter("the input image has no pixels")
    ratio = image_width / image_height
    area = TIER_AREA[tier]
    width = max(16, math.floor(math.sqrt(area * ratio) / 16) * 16)
    height = max(16, math.floor(math.sqrt(area / ratio) / 16) * 16)
    return Size(width, height)


def resolve_card(req: SynthesisRequest, catalog: Catalog) -> ModelCard:
    """The catalogue entry `req.model` names."""
    if req.model is None or req.model == "":
        raise EmptyModel("Model not specified: set `model` to a model name.", field="model")
    if not isinstance(req.model, str):
        raise InvalidParameter("model must be a string.", field="model")
    return catalog.get(req.model)


def build_spec(
    req: SynthesisRequest,
    card: ModelCard,
    *,
    features: Features = Features(),
) -> GenerationSpec:
    """Validate `req` against `card`; raise `InvalidParameter` naming the field at fault."""
    t2v = card.kind is Kind.TEXT_TO_VIDEO
    orig_prompt = _optional_str(req.prompt, "prompt")
    if t2v and (orig_prompt is None or not orig_prompt.strip()):
        raise InvalidParameter("input.prompt is required and must not be empty.", field="prompt")
    negative = _optional_str(req.negative_prompt, "negative_prompt")

    size, tier = _size_and_tier(req, card)
    duration = _duration(req.duration, card)
    seed = _seed(req.seed)
    prompt_extend = _bool(req.prompt_extend, "prompt_extend", default=True)
    watermark = _bool(req.watermark, "watermark", default=False)
    shot_type = _shot_type(req.shot_type, card, prompt_extend=prompt_extend, features=features)
    image, last_image = _images(req, card)
    audio_ref = _media(req.audio_url, "audio_url")
    if audio_ref is not None and not card.audio:
        raise InvalidParameter(
            f"audio_url is not supported by {card.name}: only wan2.5 and wan2.6 models take an "
            "audio track; wan2.2 and earlier produce silent video."
        )
    audio = _audio(req.audio, card, has_audio_url=audio_ref is not None, features=features)
    steps = _steps(req.steps, default=card.sampling.steps)
    guidance, guidance_2 = _guidance(req.guidance_scale, card)
    adapters = _adapters(req.lora, req.lora_scale, card, features=features)

    profile = FAMILIES[card.checkpoint.family]
    continuation = card.continued_by
    multiple = profile.size_multiple
    if continuation is not None:
        # Every segment shares one denoising size, so it must suit both checkpoints.
        multiple = max(multiple, FAMILIES[continuation.family].size_multiple)
    spec = GenerationSpec(
        model=card.name,
        kind=card.kind,
        generation=card.generation,
        checkpoint=card.checkpoint.source,
        family=card.checkpoint.family,
        orig_prompt=orig_prompt,
        prompt=(orig_prompt or "")[: card.prompt_limit],
        negative_prompt=(
            negative[: card.negative_prompt_limit] if negative else DEFAULT_NEGATIVE_PROMPT
        ),
        tier=tier,
        duration=duration,
        fps=card.fps,
        native_fps=profile.native_fps,
        num_frames=frames_for(duration, profile.native_fps),
        steps=steps,
        guidance_scale=guidance,
        guidance_scale_2=guidance_2,
        flow_shift=card.sampling.flow_shift,
        low_res_flow_shift=card.sampling.low_res_flow_shift,
        seed=seed,
        watermark=watermark,
        prompt_extend=prompt_extend,
        shot_type=shot_type,
        audio=audio,
        max_area=card.checkpoint.max_area,
        size_multiple=multiple,
        frames_per_pass=profile.frames_per_pass,
        continuation_checkpoint=continuation.source if continuation else None,
        continuation_family=continuation.family if continuation else None,
        cache=_cache(req.cache, default=card.cache).value,
        image=image,
        last_image=last_image,
        audio_ref=audio_ref,
        adapters=adapters,
    )
    return spec._sized(size) if size is not None else spec


def _optional_str(value: object, name: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidParameter(f"{name} must be a string.")
    if len(value) > PROMPT_HARD_LIMIT:
        raise InvalidParameter(
            f"{name} has {len(value)} characters; more than {PROMPT_HARD_LIMIT} are refused "
            "(text past the model's own limit is truncated)."
        )
    return value


def _size_and_tier(req: SynthesisRequest, card: ModelCard) -> tuple[Size | None, str]:
    if card.kind is Kind.TEXT_TO_VIDEO:
        if req.resolution is not None:
            raise InvalidParameter(
                f"resolution is not a parameter of text-to-video model {card.name}: set size to "
                f"one of {_join(card.sizes)}."
            )
        if req.size is None:
            assert card.default_size is not None
            return card.default_size, tier_of(card.default_size)
        size = _parse_size(req.size)
        if size not in card.sizes:
            raise InvalidParameter(
                f"size {req.size!r} is not supported by {card.name}; allowed sizes: "
                f"{_join(card.sizes)}.",
                field="size",
            )
        return size, tier_of(size)
    if req.size is not None and req.size_names_tier:
        if req.resolution is not None:
            raise InvalidParameter("send size or resolution, not both.")
        size = _parse_size(req.size)
        if size not in card.sizes:
            raise InvalidParameter(
                f"size {req.size!r} is not supported by {card.name}; allowed sizes: "
                f"{_join(card.sizes)} (the video keeps the input image's aspect ratio at the "
                "size's resolution tier).",
                field="size",
            )
        return None, tier_of(size)
    if req.size is not None:
        raise InvalidParameter(
            f"size is not a parameter of image-to-video model {card.name}: the video keeps the "
            f"input image's aspect ratio; set resolution to one of {', '.join(card.tiers)}."
        )
    if req.resolution is None:
        assert card.default_tier is not None
        return None, card.default_tier
    if not isinstance(req.resolution, str) or req.resolution.upper() not in card.tiers:
        raise InvalidParameter(
            f"resolution {req.resolution!r} is not supported by {card.name}; allowed: "
            f"{', '.join(card.tiers)}."
        )
    return None, req.resolution.upper()


# ASCII digits only: str.isdigit() and int() also take full-width and other Unicode digits
# ("１２８０*７２０"), which DashScope does not document and no client needs.
_SIZE = re.compile(r"[ \t]*([0-9]{1,5})[ \t]*\*[ \t]*([0-9]{1,5})[ \t]*")


def _parse_size(value: object) -> Size:
    if isinstance(value, str):
        match = _SIZE.fullmatch(value)
        if match is not None:
            return Size(int(match.group(1)), int(match.group(2)))
    raise InvalidParameter(
        f"size {value!r} is malformed: write width*height, for example 1280*720 (not a ratio "
        "or a tier such as 720P).",
        field="size",
    )


def _duration(value: object, card: ModelCard) -> int:
    if value is None:
        return card.durations.default
    number = _integer(value)
    if number is None or number not in card.durations.allowed:
        raise InvalidParameter(
            f"duration {value!r} is not supported by {card.name}: it is "
            f"{card.durations.describe()} (seconds).",
            field="duration",
        )
    return number


def _steps(value: object, *, default: int) -> int:
    if value is None:
        return default
    number = _integer(value)
    if number is None or not 1 <= number <= STEPS_MAX:
        raise InvalidParameter(
            f"steps {value!r} must be an integer between 1 and {STEPS_MAX}.", field="steps"
        )
    return number


def _cache(value: object, *, default: CachePreset) -> CachePreset:
    """A request's block cache preset (lossy: docs/performance.md), or the model's own."""
    if value is None:
        return default
    for preset in CachePreset:
        if value == preset.value:
            return preset
    presets = ", ".join(p.value for p in CachePreset)
    raise InvalidParameter(f"cache {value!r} must be one of {presets}.", field="cache")


def _guidance(value: object, card: ModelCard) -> tuple[float, float | None]:
    """(guidance_scale, guidance_scale_2): a requested scale applies to both experts of a
    two-expert (Wan2.2 A14B) checkpoint, so that 1.0 turns guidance off for the whole run."""
    if value is None:
        return card.sampling.guidance_scale, card.sampling.guidance_scale_2
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
    return scale, (scale if card.sampling.guidance_scale_2 is not None else None)


def _seed(value: object) -> int:
    if value is None:
        # Chosen now and stored, so a retried or restarted task makes the same video.
        return secrets.randbelow(SEED_MAX + 1)
    number = _integer(value)
    if number is None or not 0 <= number <= SEED_MAX:
        raise InvalidParameter(
            f"seed {value!r} must be an integer between 0 and {SEED_MAX}.", field="seed"
        )
    return number


def _integer(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _bool(value: object, name: str, *, default: bool) -> bool:
    if value is None:
        return default
    if not isinstance(value, bool):
        raise InvalidParameter(f"{name} must be true or false, not {value!r}.")
    return value


def _shot_type(value: object, card: ModelCard, *, prompt_extend: bool, features: Features) -> str:
    if value is None:
        return "single"
    if value not in ("single", "multi"):
        raise InvalidParameter(f"shot_type {value!r} must be 'single' or 'multi'.")
    if value == "single":
        return "single"
    if not card.multi_shot:
        raise InvalidParameter(
            f"shot_type 'multi' is not supported by {card.name}: multi-shot narrative is a "
            "wan2.6 feature."
        )
    if not prompt_extend:
        # The seeds: shot_type "takes effect only when prompt_extend is true".
        return "single"
    if not features.multi_shot:
        raise InvalidParameter(
            "shot_type 'multi' is not available on this server: multi-shot narrative needs a "
            "prompt extender, and none is configured (see docs/configuration.md)."
        )
    return "multi"


def _audio(value: object, card: ModelCard, *, has_audio_url: bool, features: Features) -> bool:
    wanted = _bool(value, "audio", default=card.audio)
    if has_audio_url:
        return False  # "audio_url > audio": the custom track is used, nothing is generated
    if not wanted:
        return False
    if not card.audio:
        raise InvalidParameter(
            f"audio is not supported by {card.name}: wan2.2 and earlier models generate silent "
            "video."
        )
    if not features.audio_generation:
        if value is True:
            raise InvalidParameter(
                "audio: true asks for automatic dubbing, which is not configured on this "
                "server; send audio_url with your own track, or omit audio to get a silent "
                "video (see docs/configuration.md)."
            )
        return False  # default-on dubbing without a backend: silent, and usage says so
    return True


_LISTED_ADAPTERS = 20  # an error names at most this many of the available adapters


def _adapters(
    name: object, scale: object, card: ModelCard, *, features: Features
) -> tuple[AdapterUse, ...]:
    """The model's own adapter, then the one the request names (which replaces the model's
    scale when it names the same adapter)."""
    own = (AdapterUse(name=card.adapter, scale=card.adapter_scale),) if card.adapter else ()
    if name is None:
        if scale is not None:
            raise InvalidParameter("lora_scale needs lora: name the adapter it scales.")
        return own
    if not isinstance(name, str) or not is_valid_name(name):
        raise InvalidParameter(
            "lora must be the name of an adapter on this server (letters, digits, '.', '_' "
            "and '-'; no paths)."
        )
    if features.adapters is None:
        raise InvalidParameter("lora is not available: this server has no LoRA adapters.")
    if not features.adapters.exists(name):
        names = features.adapters.names()
        listed = ", ".join(names[:_LISTED_ADAPTERS]) + (
            ", ..." if len(names) > _LISTED_ADAPTERS else ""
        )
        raise InvalidParameter(
            f"lora {name!r} is not an adapter on this server; available: {listed or 'none'}."
        )
    strength = 1.0 if scale is None else _scale(scale)
    return (*(a for a in own if a.name != name), AdapterUse(name=name, scale=strength))


def _scale(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidParameter(f"lora_scale must be a number from 0 to {MAX_SCALE:g}.")
    if not 0 <= value <= MAX_SCALE:
        raise InvalidParameter(f"lora_scale {value!r} must be from 0 to {MAX_SCALE:g}.")
    return float(value)


def _images(req: SynthesisRequest, card: ModelCard) -> tuple[MediaRef | None, MediaRef | None]:
    img = _media(req.img_url, "img_url")
    first = _media(req.first_frame_url, "first_frame_url")
    last = _media(req.last_frame_url, "last_frame_url")
    if card.kind is Kind.TEXT_TO_VIDEO:
        for ref in (img, first, last):
            if ref is not None:
                raise InvalidParameter(
                    f"{ref.field} is not a parameter of text-to-video model {card.name}; use an "
                    "image-to-video model for a first frame."
                )
        return None, None
    if card.kind is Kind.IMAGE_TO_VIDEO:
        if last is not None:
            raise InvalidParameter(
                f"last_frame_url is not supported by {card.name}: it takes a first frame only "
                "(img_url)."
            )
        if img is not None and first is not None:
            raise InvalidParameter("send the first frame once: img_url or first_frame_url.")
        image = img or first
        if image is None:
            raise InvalidParameter(
                f"input.img_url is required by image-to-video model {card.name}."
            )
        return image, None
    # Key frames: both ends are required.
    if first is None or last is None:
        raise InvalidParameter(
            f"{card.name} needs both input.first_frame_url and input.last_frame_url."
        )
    return first, last


def _media(value: object, name: str) -> MediaRef | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise InvalidParameter(f"{name} must be a string URL.")
    if value.startswith(("file://", "/")):
        raise InvalidURL(
            f"{name} is a local path, which the server cannot read: send an http(s) URL, a "
            "base64 data URI, or let the dashscope SDK upload the file (it turns file:// paths "
            "into oss:// references)."
        )
    scheme = media_scheme(value)
    if scheme is None:
        raise InvalidURL(f"{name} must be an http(s) URL, a data: URI or an oss:// reference.")
    rest = value.partition(":")[2]
    url = f"{scheme.value}:{rest}"  # one spelling of the scheme from here on (OSS:// is oss://)
    if scheme.is_web:
        _check_web_url(url, name)
    elif scheme is MediaScheme.OSS and not rest.startswith("//"):
        raise InvalidURL(f"{name} must be written oss://<key>.")
    return MediaRef(field=name, url=url)


def _check_web_url(url: str, name: str) -> None:
    """Refuse at submission what no fetch could succeed with: no host, a bad port, a host name
    that is not valid (internationalised names must encode to IDNA)."""
    try:
        parts = urlsplit(url)
        port = parts.port
        host = parts.hostname
        if host and not _is_ip_literal(host):
            host.encode("idna")
    except (ValueError, UnicodeError):
        raise InvalidURL(f"{name} is not a valid URL.") from None
    if not host or not parts.netloc:
        raise InvalidURL(f"{name} has no host.")
    if port == 0:
        raise InvalidURL(f"{name} has an invalid port.")


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _join(sizes: tuple[Size, ...]) -> str:
    return ", ".join(str(s) for s in sizes)
