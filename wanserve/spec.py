"""From a typed request to one frozen `GenerationSpec`: every rule of the seeds, applied once.

A door reads its wire format into a typed `wanserve.request.SynthesisRequest` (the type and
card-independent range of each value); `build_spec` is the only place a request is checked
against its model (sizes, tiers, durations, inputs, features). Everything downstream (the
task store, the worker, the video encoder) trusts the spec it receives; the engine never sees
it, only the `GenerationRequest` that `workers.translation.request_for` builds from it.

Image-to-video sizes depend on the input image, which the worker fetches; until then the spec
carries the resolution tier and `with_image_size` fixes the size (the rule lives here too).
"""

from __future__ import annotations

import dataclasses
import json
import math
import secrets
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from wanserve.catalog import (
    DEFAULT_NEGATIVE_PROMPT,
    FAMILIES,
    MEDIA_TOTAL,
    RATIO_SIZES,
    TIER_AREA,
    Catalog,
    Family,
    Generation,
    Kind,
    ModelCard,
    Route,
    Sampling,
    Size,
    Sizing,
    frames_for,
    generation_size,
    tier_of,
)
from wanserve.editing import EditPlan, edit_plan, implicit_plan
from wanserve.engine.adapters import AdapterDirectory, AdapterUse
from wanserve.engine.families import flow_shift_at
from wanserve.errors import InvalidParameter
from wanserve.request import ADAPTIVE, SEED_MAX, Inline, Media, MediaKind, SynthesisRequest

__all__ = ["SEED_MAX", "SynthesisRequest"]  # re-exported: the request every spec is built from


class MediaScheme(StrEnum):
    """How a stored input reference is read: fetched (http, https), decoded in place (data:
    rows written before inline inputs were moved to the upload store), or taken from the
    upload store (oss)."""

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
    """A client-supplied input (image or audio) not yet fetched: where it comes from.

    `inline` holds bytes sent in the request itself until the task service moves them to the
    upload store (`url` is then their `oss://` reference); a spec with inline bytes is never
    stored (`GenerationSpec.to_json` refuses it)."""

    field: str  # the request field that carried it, named in errors
    url: str  # http(s), or oss:// (data: in rows written by earlier versions); "" while inline
    inline: Inline | None = None
    kind: str = ""  # its MediaKind, for composite inputs ("" for the legacy image/audio slots)

    @classmethod
    def of(cls, media: Media, *, kinded: bool = False) -> MediaRef:
        kind = media.kind.value if kinded else ""
        source = media.source
        if isinstance(source, Inline):
            return cls(field=media.field, url="", inline=source, kind=kind)
        return cls(field=media.field, url=source.url, kind=kind)

    @property
    def scheme(self) -> MediaScheme:
        scheme = media_scheme(self.url)
        if scheme is None:
            raise ValueError(f"{self.field} holds a reference the server cannot read")
        return scheme

    def to_dict(self) -> dict[str, str]:
        if self.inline is not None:
            raise ValueError(f"{self.field}: inline bytes are stored as an upload first")
        kind = {"kind": self.kind} if self.kind else {}
        return {"field": self.field, "url": self.url, **kind}


@dataclass(frozen=True)
class Features:
    """Optional capabilities of this deployment that change what a request may ask for."""

    audio_generation: bool = False
    multi_shot: bool = False
    # Control signals an annotator model draws here (VACE repainting): "depth".
    annotators: frozenset[str] = frozenset()
    # LoRA adapters requests may name (`parameters.lora`), listed from disk per request;
    # None: this server has no adapter directory.
    adapters: AdapterDirectory | None = None


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
    cache: str = "off"  # block cache preset (wanserve.engine.options.CachePreset)
    # LoRA adapters of every pass: the model's own (a preset's), then the request's.
    adapters: tuple[AdapterUse, ...] = ()
    # Composite (VACE) passes: the inputs by kind (reference images, source video, masks,
    # clips and frames to extend) and how they are used.
    inputs: tuple[MediaRef, ...] = ()
    edit: EditPlan | None = None
    # A pass of a video edited from a source video: the source frames before its first one
    # (its first frame is the previous pass's last, so passes overlap by one frame).
    source_offset: int = 0

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
        shift = flow_shift_at(
            gen.area, flow_shift=self.flow_shift, low_res_flow_shift=self.low_res_flow_shift
        )
        return dataclasses.replace(
            self,
            width=out.width,
            height=out.height,
            gen_width=gen.width,
            gen_height=gen.height,
            flow_shift=shift,
        )

    def with_prompt(self, prompt: str) -> GenerationSpec:
        """The same video conditioned on `prompt` (the extended prompt recorded on the task)."""
        return dataclasses.replace(self, prompt=prompt)

    def with_inputs(
        self,
        *,
        image: MediaRef | None,
        last_image: MediaRef | None,
        audio_ref: MediaRef | None,
        inputs: tuple[MediaRef, ...] = (),
    ) -> GenerationSpec:
        """The same video reading its inputs from these references (inline bytes moved to the
        upload store, uploads checked)."""
        return dataclasses.replace(
            self, image=image, last_image=last_image, audio_ref=audio_ref, inputs=inputs
        )

    @property
    def edits_a_source(self) -> bool:
        """A composite video made from a source video, frame for frame (repainting, editing,
        outpainting): every pass of it follows its own window of the source."""
        return self.kind is Kind.COMPOSITE and any(
            ref.kind == MediaKind.VIDEO.value for ref in self.inputs
        )

    def with_duration(self, seconds: int) -> GenerationSpec:
        """The same video `seconds` long (a length taken from the source video)."""
        return dataclasses.replace(
            self, duration=seconds, num_frames=frames_for(seconds, self.native_fps)
        )

    def segment(
        self, *, num_frames: int, prompt: str, seed: int, continued: bool, offset: int = 0
    ) -> GenerationSpec:
        """One denoising pass of this video: its own frame count, prompt and seed; `continued`
        passes are conditioned on an image through the continuation checkpoint, or, editing a
        source video, on their window of the source from `offset` (its frame count so far)."""
        changes: dict[str, Any] = {"num_frames": num_frames, "prompt": prompt, "seed": seed}
        if self.edits_a_source:
            return dataclasses.replace(self, **changes, source_offset=offset)
        if continued and self.kind in (Kind.TEXT_TO_VIDEO, Kind.COMPOSITE):
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
                "inputs": (),
                "edit": None,
            }
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        for key in _MEDIA_FIELDS:
            ref = getattr(self, key)
            data[key] = None if ref is None else ref.to_dict()
        data["inputs"] = [ref.to_dict() for ref in self.inputs]
        return json.dumps(data, ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> GenerationSpec:
        data: dict[str, Any] = json.loads(text)
        for key in _MEDIA_FIELDS:
            if data.get(key) is not None:
                data[key] = MediaRef(**data[key])
        data["kind"] = Kind(data["kind"])
        data["generation"] = Generation(data["generation"])
        data["family"] = Family(data["family"])
        if data.get("continuation_family") is not None:
            data["continuation_family"] = Family(data["continuation_family"])
        data["adapters"] = tuple(AdapterUse(**a) for a in data.get("adapters", ()))
        data["inputs"] = tuple(MediaRef(**ref) for ref in data.get("inputs", ()))
        edit = data.get("edit")
        if edit is not None:
            edit["roles"] = tuple(edit["roles"])
            edit["scales"] = tuple(edit["scales"])
            data["edit"] = EditPlan(**edit)
        return cls(**data)


_MEDIA_FIELDS = ("image", "last_image", "audio_ref")


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
    return catalog.get(req.model)


def build_spec(
    req: SynthesisRequest,
    card: ModelCard,
    *,
    features: Features = Features(),
) -> GenerationSpec:
    """Check `req` against `card`; raise `InvalidParameter` naming the field at fault.

    The request's values are typed already (its door read them); what is checked here is what
    depends on the model: its sizes, tiers, durations, inputs and features."""
    route = _route(req, card)
    kind = route.kind if route is not None else card.kind
    if kind in (Kind.TEXT_TO_VIDEO, Kind.COMPOSITE) and (
        req.prompt is None or not req.prompt.strip()
    ):
        raise InvalidParameter("input.prompt is required and must not be empty.", field="prompt")
    if req.negative_prompt is not None and not card.negative_prompt:
        raise InvalidParameter(
            f"negative_prompt is not a parameter of {card.name}: describe what to avoid in "
            "the prompt.",
            field="negative_prompt",
        )
    if req.audio_setting == "origin":
        raise InvalidParameter(
            "audio_setting 'origin' (keep the source video's sound) is not built on this "
            "server yet; send 'auto' or leave it out.",
            field="audio_setting",
        )
    if req.edit.function is not None and not card.editing:
        raise InvalidParameter(
            f"input.function {req.edit.function.value!r} is a parameter of wan2.1-vace-plus, "
            f"not of {card.name}.",
            field="function",
        )

    size, tier = _size_and_tier(req, card, kind)
    duration = _duration(req.duration, card)
    prompt_extend = True if req.prompt_extend is None else req.prompt_extend
    shot_type = _shot_type(req.shot_type, card, prompt_extend=prompt_extend, features=features)
    if route is None:
        image, last_image = _images(req, card)
    else:
        image, last_image = _framed(req, kind)
    audio_ref = _one(req, MediaKind.DRIVING_AUDIO)
    if audio_ref is not None and not card.audio:
        raise InvalidParameter(
            f"{audio_ref.field} is not supported by {card.name}: only wan2.5 and wan2.6 models "
            "take an audio track; wan2.2 and earlier produce silent video.",
            field=audio_ref.field,
        )
    audio = _audio(req.audio, card, has_audio_url=audio_ref is not None, features=features)
    inputs: tuple[MediaRef, ...] = ()
    edit: EditPlan | None = None
    if kind is Kind.COMPOSITE:
        edit = (
            edit_plan(req, card.name, annotators=features.annotators)
            if card.editing
            else implicit_plan(req)
        )
        inputs = tuple(
            MediaRef.of(m, kinded=True) for m in req.media if m.kind is not MediaKind.DRIVING_AUDIO
        )
        if req.extensions.cache is not None and req.extensions.cache.value != "off":
            raise InvalidParameter(
                f"cache is not available for {card.name}'s VACE passes: the block caches are "
                "not calibrated for it.",
                field="cache",
            )
    checkpoint = route.checkpoint if route is not None else card.checkpoint
    sampling = route.sampling if route is not None and route.sampling else card.sampling
    extensions = req.extensions
    guidance, guidance_2 = _guidance(extensions.guidance_scale, sampling)
    adapters = _adapters(extensions.lora, extensions.lora_scale, card, features=features)

    profile = FAMILIES[checkpoint.family]
    continuation = card.continued_on(route)
    frames = frames_for(duration, profile.native_fps)
    if kind is Kind.COMPOSITE and frames > profile.frames_per_pass:
        for media in (*req.inputs(MediaKind.LAST_FRAME), *req.inputs(MediaKind.LAST_CLIP)):
            raise InvalidParameter(
                f"{media.field}: a video that ends on a given frame or clip is one pass here, "
                f"at most {profile.frames_per_pass // profile.native_fps} seconds; duration "
                f"{duration} is longer.",
                field=media.field,
            )
    if edit is not None and edit.mask_frame_id > frames:
        raise InvalidParameter(
            f"mask_frame_id {edit.mask_frame_id} is past the video's {frames} frames (counted "
            f"at {profile.native_fps} fps).",
            field="mask_frame_id",
        )
    if kind is Kind.KEYFRAMES_TO_VIDEO and frames > profile.frames_per_pass:
        raise InvalidParameter(
            f"duration {duration} is too long for a first and last frame video on this server: "
            f"{checkpoint.family.value} makes one pass of at most "
            f"{profile.frames_per_pass // profile.native_fps} seconds between its two frames.",
            field="duration",
        )
    multiple = profile.size_multiple
    if continuation is not None:
        # Every segment shares one denoising size, so it must suit both checkpoints.
        multiple = max(multiple, FAMILIES[continuation.family].size_multiple)
    negative = req.negative_prompt
    spec = GenerationSpec(
        model=card.name,
        kind=kind,
        generation=card.generation,
        checkpoint=checkpoint.source,
        family=checkpoint.family,
        orig_prompt=req.prompt,
        prompt=(req.prompt or "")[: card.prompt_limit],
        negative_prompt=(
            negative[: card.negative_prompt_limit] if negative else DEFAULT_NEGATIVE_PROMPT
        ),
        tier=tier,
        duration=duration,
        fps=card.fps,
        native_fps=profile.native_fps,
        num_frames=frames_for(duration, profile.native_fps),
        steps=sampling.steps if extensions.steps is None else extensions.steps,
        guidance_scale=guidance,
        guidance_scale_2=guidance_2,
        flow_shift=sampling.flow_shift,
        low_res_flow_shift=sampling.low_res_flow_shift,
        # Chosen now and stored, so a retried or restarted task makes the same video.
        seed=secrets.randbelow(SEED_MAX + 1) if req.seed is None else req.seed,
        watermark=bool(req.watermark),
        prompt_extend=prompt_extend,
        shot_type=shot_type,
        audio=audio,
        max_area=checkpoint.max_area,
        size_multiple=multiple,
        frames_per_pass=profile.frames_per_pass,
        continuation_checkpoint=continuation.source if continuation else None,
        continuation_family=continuation.family if continuation else None,
        cache=(card.cache if extensions.cache is None else extensions.cache).value,
        image=image,
        last_image=last_image,
        audio_ref=audio_ref,
        adapters=adapters,
        inputs=inputs,
        edit=edit,
    )
    return spec._sized(size) if size is not None else spec


_LEGACY_INPUTS = (MediaKind.FIRST_FRAME, MediaKind.LAST_FRAME, MediaKind.DRIVING_AUDIO)


def _route(req: SynthesisRequest, card: ModelCard) -> Route | None:
    """The route that serves the inputs sent (None for a model of one kind), after checking
    each input kind is the model's and within its count."""
    if not card.routes:
        for media in req.media:
            if media.kind not in _LEGACY_INPUTS:
                raise InvalidParameter(
                    f"{media.field} ({media.kind.value}) is not an input of {card.name}.",
                    field=media.field,
                )
        return None
    seen: dict[str, int] = {}
    references = 0
    total = card.media_limits.get(MEDIA_TOTAL)
    for media in req.media:
        kind = media.kind.value
        limit = card.media_limits.get(kind)
        if limit is None:
            takes = ", ".join(k for k in card.media_limits if k != MEDIA_TOTAL)
            raise InvalidParameter(
                f"{media.field} ({kind}) is not an input of {card.name}; it takes {takes}.",
                field=media.field,
            )
        seen[kind] = seen.get(kind, 0) + 1
        if seen[kind] > limit:
            raise InvalidParameter(
                f"{media.field}: {card.name} takes at most {limit} {kind} input"
                f"{'s' if limit > 1 else ''}.",
                field=media.field,
            )
        if media.kind in (MediaKind.REFERENCE_IMAGE, MediaKind.REFERENCE_VIDEO):
            references += 1
            if total is not None and references > total:
                raise InvalidParameter(
                    f"{media.field}: {card.name} takes at most {total} reference images and "
                    "videos together.",
                    field=media.field,
                )
    present = frozenset(seen)
    for route in card.routes:
        if route.serves(present):
            return route
    served = frozenset().union(*(r.requires | r.accepts for r in card.routes))
    for media in req.media:
        if media.kind.value not in served:
            raise InvalidParameter(
                f"{media.field}: {card.name} on this server cannot take {media.kind.value} "
                "inputs: no open checkpoint it runs conditions on them yet (see "
                "docs/models.md).",
                field=media.field,
            )
    sent = " + ".join(sorted(present)) or "no inputs"
    offered = "; ".join(r.describe() for r in card.routes)
    field = req.media[-1].field if req.media else "media"
    raise InvalidParameter(f"{card.name} takes {offered}; this request sends {sent}.", field=field)


def _framed(req: SynthesisRequest, kind: Kind) -> tuple[MediaRef | None, MediaRef | None]:
    """The first and last frame of a route that conditions on them (its route checked they
    are there); a composite route reads its frames among its inputs instead."""
    if kind not in (Kind.IMAGE_TO_VIDEO, Kind.KEYFRAMES_TO_VIDEO):
        return None, None
    first = _one(req, MediaKind.FIRST_FRAME)
    last = _one(req, MediaKind.LAST_FRAME) if kind is Kind.KEYFRAMES_TO_VIDEO else None
    return first, last


def _size_and_tier(req: SynthesisRequest, card: ModelCard, kind: Kind) -> tuple[Size | None, str]:
    rule = card.size_rule
    if rule is not Sizing.RATIO and req.ratio is not None:
        raise InvalidParameter(
            f"ratio is not a parameter of {card.name}: "
            + (
                "set size."
                if rule is Sizing.SIZE
                else "the video keeps the aspect ratio of its input frame or clip."
            ),
            field="ratio",
        )
    if rule is Sizing.RATIO:
        return _ratio_size(req, card, kind)
    if rule is Sizing.SIZE:
        if req.resolution is not None:
            raise InvalidParameter(
                f"resolution is not a parameter of text-to-video model {card.name}: set size to "
                f"one of {_join(card.sizes)}.",
                field="resolution",
            )
        if req.size is None:
            assert card.default_size is not None
            return card.default_size, tier_of(card.default_size)
        if req.size not in card.sizes:
            raise InvalidParameter(
                f"size '{req.size}' is not supported by {card.name}; allowed sizes: "
                f"{_join(card.sizes)}.",
                field="size",
            )
        return req.size, tier_of(req.size)
    return _tier(req, card)


def _ratio_size(req: SynthesisRequest, card: ModelCard, kind: Kind) -> tuple[Size | None, str]:
    """A `resolution` tier and a `ratio`: that size; "adaptive" (the default) follows the
    input frame, clip or source video where there is one (the worker sizes it), else 16:9."""
    if req.size is not None and not req.size_names_tier:
        raise InvalidParameter(
            f"size is not a parameter of {card.name}: set resolution (one of "
            f"{', '.join(card.tiers)}) and ratio.",
            field="size",
        )
    if req.size is not None:  # a door that names sizes (/v1/videos): the tier and ratio of it
        for tier in card.tiers:
            for name, size in RATIO_SIZES[tier].items():
                if size == req.size:
                    return _ratio_size(
                        dataclasses.replace(req, size=None, resolution=tier, ratio=name),
                        card,
                        kind,
                    )
        listed = ", ".join(str(RATIO_SIZES[t][r]) for t in card.tiers for r in RATIO_SIZES[t])
        raise InvalidParameter(
            f"size '{req.size}' is not supported by {card.name}; allowed sizes: {listed}.",
            field="size",
        )
    _, tier = _tier(req, card)
    ratio = req.ratio or ADAPTIVE
    framed = kind in (Kind.IMAGE_TO_VIDEO, Kind.KEYFRAMES_TO_VIDEO) or any(
        req.inputs(k) for k in (MediaKind.FIRST_FRAME, MediaKind.FIRST_CLIP, MediaKind.VIDEO)
    )
    if ratio == ADAPTIVE:
        if framed:
            return None, tier
        ratio = "16:9"
    return RATIO_SIZES[tier][ratio], tier


def _tier(req: SynthesisRequest, card: ModelCard) -> tuple[Size | None, str]:
    if req.size is not None and req.size_names_tier:
        if req.resolution is not None:
            raise InvalidParameter("send size or resolution, not both.", field="size")
        if req.size not in card.sizes:
            raise InvalidParameter(
                f"size '{req.size}' is not supported by {card.name}; allowed sizes: "
                f"{_join(card.sizes)} (the video keeps the input image's aspect ratio at the "
                "size's resolution tier).",
                field="size",
            )
        return None, tier_of(req.size)
    if req.size is not None:
        raise InvalidParameter(
            f"size is not a parameter of image-to-video model {card.name}: the video keeps the "
            f"input image's aspect ratio; set resolution to one of {', '.join(card.tiers)}.",
            field="size",
        )
    if req.resolution is None:
        assert card.default_tier is not None
        return None, card.default_tier
    if req.resolution.upper() not in card.tiers:
        raise InvalidParameter(
            f"resolution {req.resolution!r} is not supported by {card.name}; allowed: "
            f"{', '.join(card.tiers)}.",
            field="resolution",
        )
    return None, req.resolution.upper()


def _duration(value: int | None, card: ModelCard) -> int:
    if value is None or (value == -1 and card.auto_duration):
        # -1: "the model chooses"; it makes its default length.
        return card.durations.default
    if value not in card.durations.allowed:
        raise InvalidParameter(
            f"duration {value!r} is not supported by {card.name}: it is "
            f"{card.durations.describe()} (seconds)"
            + (", or -1 to let the model choose." if card.auto_duration else "."),
            field="duration",
        )
    return value


def _guidance(value: float | None, sampling: Sampling) -> tuple[float, float | None]:
    """(guidance_scale, guidance_scale_2): a requested scale applies to both experts of a
    two-expert (Wan2.2 A14B) checkpoint, so that 1.0 turns guidance off for the whole run."""
    if value is None:
        return sampling.guidance_scale, sampling.guidance_scale_2
    return value, (value if sampling.guidance_scale_2 is not None else None)


def _shot_type(
    value: str | None, card: ModelCard, *, prompt_extend: bool, features: Features
) -> str:
    if value is None or value == "single":
        return "single"
    if not card.multi_shot:
        raise InvalidParameter(
            f"shot_type 'multi' is not supported by {card.name}: multi-shot narrative is a "
            "wan2.6 feature.",
            field="shot_type",
        )
    if not prompt_extend:
        # The seeds: shot_type "takes effect only when prompt_extend is true".
        return "single"
    if not features.multi_shot:
        raise InvalidParameter(
            "shot_type 'multi' is not available on this server: multi-shot narrative needs a "
            "prompt extender, and none is configured (see docs/configuration.md).",
            field="shot_type",
        )
    return "multi"


def _audio(value: bool | None, card: ModelCard, *, has_audio_url: bool, features: Features) -> bool:
    wanted = card.audio if value is None else value
    if has_audio_url:
        return False  # "audio_url > audio": the custom track is used, nothing is generated
    if not wanted:
        return False
    if not card.audio:
        raise InvalidParameter(
            f"audio is not supported by {card.name}: wan2.2 and earlier models generate silent "
            "video.",
            field="audio",
        )
    if not features.audio_generation:
        if value is True:
            raise InvalidParameter(
                "audio: true asks for automatic dubbing, which is not configured on this "
                "server; send audio_url with your own track, or omit audio to get a silent "
                "video (see docs/configuration.md).",
                field="audio",
            )
        return False  # default-on dubbing without a backend: silent, and usage says so
    return True


_LISTED_ADAPTERS = 20  # an error names at most this many of the available adapters


def _adapters(
    name: str | None, scale: float | None, card: ModelCard, *, features: Features
) -> tuple[AdapterUse, ...]:
    """The model's own adapter, then the one the request names (which replaces the model's
    scale when it names the same adapter)."""
    own = (AdapterUse(name=card.adapter, scale=card.adapter_scale),) if card.adapter else ()
    if name is None:
        if scale is not None:
            raise InvalidParameter(
                "lora_scale needs lora: name the adapter it scales.", field="lora_scale"
            )
        return own
    if features.adapters is None:
        raise InvalidParameter("lora is not available: this server has no LoRA adapters.")
    if not features.adapters.exists(name):
        names = features.adapters.names()
        listed = ", ".join(names[:_LISTED_ADAPTERS]) + (
            ", ..." if len(names) > _LISTED_ADAPTERS else ""
        )
        raise InvalidParameter(
            f"lora {name!r} is not an adapter on this server; available: {listed or 'none'}.",
            field="lora",
        )
    strength = 1.0 if scale is None else scale
    return (*(a for a in own if a.name != name), AdapterUse(name=name, scale=strength))


def _images(req: SynthesisRequest, card: ModelCard) -> tuple[MediaRef | None, MediaRef | None]:
    firsts = req.inputs(MediaKind.FIRST_FRAME)
    last = _one(req, MediaKind.LAST_FRAME)
    if card.kind is Kind.TEXT_TO_VIDEO:
        for media in (*firsts, *req.inputs(MediaKind.LAST_FRAME)):
            raise InvalidParameter(
                f"{media.field} is not a parameter of text-to-video model {card.name}; use an "
                "image-to-video model for a first frame.",
                field=media.field,
            )
        return None, None
    if len(firsts) > 1:
        raise InvalidParameter(
            f"send the first frame once: {firsts[0].field} or {firsts[1].field}.",
            field=firsts[1].field,
        )
    first = MediaRef.of(firsts[0]) if firsts else None
    if card.kind is Kind.IMAGE_TO_VIDEO:
        if last is not None:
            raise InvalidParameter(
                f"{last.field} is not supported by {card.name}: it takes a first frame only "
                "(img_url).",
                field=last.field,
            )
        if first is None:
            raise InvalidParameter(
                f"input.img_url is required by image-to-video model {card.name}.",
                field="img_url",
            )
        return first, None
    # Key frames: both ends are required.
    if first is None or last is None:
        raise InvalidParameter(
            f"{card.name} needs both input.first_frame_url and input.last_frame_url.",
            field="first_frame_url" if first is None else "last_frame_url",
        )
    return first, last


def _one(req: SynthesisRequest, kind: MediaKind) -> MediaRef | None:
    """The request's one input of `kind` (a door names each such field once)."""
    found = req.inputs(kind)
    if len(found) > 1:
        raise InvalidParameter(f"send one {kind.value} input, not {len(found)}.")
    return MediaRef.of(found[0]) if found else None


def _join(sizes: tuple[Size, ...]) -> str:
    return ", ".join(str(s) for s in sizes)
