"""The model catalogue: every DashScope model name, its limits, and the open checkpoint it runs.

`_CARDS` lives here and nowhere else: what each DashScope model name promises its callers
(sizes or resolution tiers, durations, output fps, prompt limits, audio and multi-shot support)
and which checkpoint serves it by default.

Checkpoint facts (families, official sampling, native fps, the 4n+1 frame rule, published
checkpoints) belong to the engine and live in the torch-free leaf `wanserve.engine.families`;
this module reads them and re-exports the names its callers already use (`Kind`, `Family`,
`FAMILIES`, ...). The dependency runs catalogue -> engine facts, never the other way.

Operators override the checkpoint and sampling of any model in configuration
(`Settings.models`); `Catalog.build` merges those overrides once at start-up.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from wanserve.engine.adapters import MAX_SCALE, is_valid_name
from wanserve.engine.families import CHECKPOINTS, DISTILLED, frames_at_least
from wanserve.engine.families import DEFAULT_NEGATIVE_PROMPT as DEFAULT_NEGATIVE_PROMPT
from wanserve.engine.families import FAMILIES as FAMILIES
from wanserve.engine.families import Checkpoint as Checkpoint
from wanserve.engine.families import Family as Family
from wanserve.engine.families import FamilyProfile as FamilyProfile
from wanserve.engine.families import Kind as Kind
from wanserve.engine.families import Sampling as Sampling
from wanserve.engine.options import CachePreset, CfgBatch, CheckpointSpeed, CompileMode
from wanserve.errors import InvalidParameter


class Generation(StrEnum):
    """The DashScope model generation; it decides the shape of `usage` and `actual_prompt`."""

    WAN21 = "wan2.1"
    WAN22 = "wan2.2"
    WAN25 = "wan2.5"
    WAN26 = "wan2.6"
    WAN27 = "wan2.7"
    WAN30 = "wan3.0"

    @property
    def returns_actual_prompt(self) -> bool:
        # "The wan2.6 model does not return this field, regardless of prompt_extend."
        return self is not Generation.WAN26


class Sizing(StrEnum):
    """How a model's request names its output size."""

    SIZE = "size"  # `size`: one of the model's width*height sizes
    TIER = "tier"  # `resolution`: a tier; the video keeps its input image's (or clip's) aspect
    RATIO = "ratio"  # `resolution` and `ratio`; "adaptive" follows the input frame, if any


@dataclass(frozen=True)
class Route:
    """One way a model serves a mix of inputs (`media[]` models choose by what is sent): the
    engine kind and checkpoint it runs, the input kinds it needs and those it takes besides.
    Kinds are `wanserve.request.MediaKind` values."""

    kind: Kind
    checkpoint: Checkpoint
    requires: frozenset[str]
    accepts: frozenset[str] = frozenset()
    sampling: Sampling | None = None  # set by `Catalog.build`: the family's, with overrides

    def serves(self, present: frozenset[str]) -> bool:
        return self.requires <= present <= self.requires | self.accepts

    def describe(self) -> str:
        need = " + ".join(sorted(self.requires)) or "no frame (text only)"
        more = sorted(self.accepts - self.requires)
        return need + (f" (+ {', '.join(more)})" if more else "")


def _route(kind: Kind, ckpt: str, requires: Iterable[str], accepts: Iterable[str] = ()) -> Route:
    return Route(kind, CHECKPOINTS[ckpt], frozenset(requires), frozenset(accepts))


@dataclass(frozen=True, order=True)
class Size:
    width: int
    height: int

    def __str__(self) -> str:
        return f"{self.width}*{self.height}"

    @property
    def area(self) -> int:
        return self.width * self.height


def _sizes(*pairs: tuple[int, int]) -> tuple[Size, ...]:
    return tuple(Size(w, h) for w, h in pairs)


# Resolution tiers, their sizes (DashScope's enumerations) and their pixel budgets.
TIER_SIZES: Mapping[str, tuple[Size, ...]] = {
    "480P": _sizes((832, 480), (480, 832), (624, 624)),
    "720P": _sizes((1280, 720), (720, 1280), (960, 960), (1088, 832), (832, 1088)),
    "1080P": _sizes((1920, 1080), (1080, 1920), (1440, 1440), (1632, 1248), (1248, 1632)),
}
TIER_AREA: Mapping[str, int] = {"480P": 832 * 480, "720P": 1280 * 720, "1080P": 1920 * 1080}
TIER_SR: Mapping[str, int] = {"480P": 480, "720P": 720, "1080P": 1080}
# wan2.7 and wan3.0 name sizes by tier and aspect ratio (their 4:3 sizes differ from the
# legacy ones); the 480P 4:3 pair is ours (DashScope lists none): the 480P budget at 4:3 in
# multiples of 16.
RATIO_SIZES: Mapping[str, Mapping[str, Size]] = {
    "480P": {
        "16:9": Size(832, 480),
        "9:16": Size(480, 832),
        "1:1": Size(624, 624),
        "4:3": Size(736, 544),
        "3:4": Size(544, 736),
    },
    "720P": {
        "16:9": Size(1280, 720),
        "9:16": Size(720, 1280),
        "1:1": Size(960, 960),
        "4:3": Size(1104, 832),
        "3:4": Size(832, 1104),
    },
    "1080P": {
        "16:9": Size(1920, 1080),
        "9:16": Size(1080, 1920),
        "1:1": Size(1440, 1440),
        "4:3": Size(1648, 1248),
        "3:4": Size(1248, 1648),
    },
}


def tier_of(size: Size) -> str:
    for tier, sizes in TIER_SIZES.items():
        if size in sizes:
            return tier
    # Image-driven sizes are not enumerated: the nearest pixel budget names the tier.
    return min(TIER_AREA, key=lambda t: abs(TIER_AREA[t] - size.area))


@dataclass(frozen=True)
class Durations:
    allowed: tuple[int, ...]
    default: int

    def describe(self) -> str:
        if len(self.allowed) == 1:
            return f"fixed at {self.allowed[0]} seconds for this model"
        lo, hi = self.allowed[0], self.allowed[-1]
        if self.allowed == tuple(range(lo, hi + 1)) and hi - lo > 2:
            return f"an integer from {lo} to {hi}"
        return "one of " + ", ".join(str(d) for d in self.allowed)


@dataclass(frozen=True)
class ModelCard:
    name: str
    kind: Kind
    generation: Generation
    tiers: tuple[str, ...]
    durations: Durations
    fps: int
    prompt_limit: int
    checkpoint: Checkpoint
    sampling: Sampling
    default_size: Size | None = None  # text-to-video: `size`
    default_tier: str | None = None  # image-to-video: `resolution`
    negative_prompt_limit: int = 500
    audio: bool = False  # can carry a sound track (custom or generated)
    multi_shot: bool = False
    # An image-to-video checkpoint that continues this model's videos past one pass (the last
    # frame of a segment conditions the next). Image-driven models continue themselves.
    continuation: Checkpoint | None = None
    # `media[]` models: the routes by the inputs sent (the first that serves them is taken),
    # and how many of each input kind a request may send. Empty: the legacy single kind.
    routes: tuple[Route, ...] = ()
    media_limits: Mapping[str, int] = field(default_factory=dict)
    sizing: Sizing | None = None  # None: SIZE for text-to-video, TIER for the rest
    # Seconds: -1 asks the model to choose (wan3.0); it then makes `durations.default`.
    auto_duration: bool = False
    negative_prompt: bool = True  # wan3.0 takes none
    editing: bool = False  # takes `input.function` (the VACE model)
    # Lossless speed-ups of the checkpoint, and the block cache tasks use unless they ask.
    speed: CheckpointSpeed = field(default_factory=CheckpointSpeed)
    cache: CachePreset = CachePreset.OFF
    # A LoRA adapter every run of this model uses (e.g. a distillation adapter bound by the
    # `distilled` preset), at `adapter_scale`; requests may add one of their own.
    adapter: str | None = None
    adapter_scale: float = 1.0
    sizes: tuple[Size, ...] = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "sizes", tuple(s for t in self.tiers for s in TIER_SIZES[t]))

    @property
    def profile(self) -> FamilyProfile:
        return FAMILIES[self.checkpoint.family]

    @property
    def size_rule(self) -> Sizing:
        if self.sizing is not None:
            return self.sizing
        return Sizing.SIZE if self.kind is Kind.TEXT_TO_VIDEO else Sizing.TIER

    @property
    def continued_by(self) -> Checkpoint | None:
        """The checkpoint that extends this model's videos, or None if they cannot be."""
        framed = self.kind in (Kind.IMAGE_TO_VIDEO, Kind.KEYFRAMES_TO_VIDEO)
        if framed or self.checkpoint.family is Family.WAN22_TI2V_5B:
            return self.checkpoint
        return self.continuation  # text-only and composite passes continue from an image

    def continued_on(self, route: Route | None) -> Checkpoint | None:
        """The checkpoint that extends a video `route` starts (None: the model's own kind):
        an image-to-video route continues itself, any other the model's continuation."""
        if route is None or route.kind is self.kind:
            return self.continued_by
        if route.kind is Kind.IMAGE_TO_VIDEO:
            return route.checkpoint
        if self.continuation is not None:
            return self.continuation
        if Kind.IMAGE_TO_VIDEO in FAMILIES[self.checkpoint.family].kinds:
            return self.checkpoint
        return None


def _card(name: str, *, ckpt: str, **kw: object) -> ModelCard:
    checkpoint = CHECKPOINTS[ckpt]
    return ModelCard(
        name=name,
        checkpoint=checkpoint,
        sampling=FAMILIES[checkpoint.family].sampling,
        **kw,  # type: ignore[arg-type]
    )


_2_TO_15 = Durations(tuple(range(2, 16)), 5)
_2_TO_10 = Durations(tuple(range(2, 11)), 5)
_2_TO_30 = Durations(tuple(range(2, 31)), 5)
_5_OR_10 = Durations((5, 10), 5)
_FIXED_5 = Durations((5,), 5)
_T, _I = Kind.TEXT_TO_VIDEO, Kind.IMAGE_TO_VIDEO
_W21, _W22, _W25, _W26 = Generation.WAN21, Generation.WAN22, Generation.WAN25, Generation.WAN26
_ALL_TIERS = ("480P", "720P", "1080P")
_K, _C = Kind.KEYFRAMES_TO_VIDEO, Kind.COMPOSITE
_W27, _W30 = Generation.WAN27, Generation.WAN30
# Input kinds, by their `media[].type` names.
_FF, _LF, _AUDIO, _CLIP = "first_frame", "last_frame", "driving_audio", "first_clip"
_REF_IMAGE, _REF_VIDEO, _REF_AUDIO = "reference_image", "reference_video", "reference_audio"
_VACE = "vace-14b"
MEDIA_TOTAL = "total"  # a `media_limits` key: reference images and videos together
_WAN3 = {
    "kind": _T,
    "generation": _W30,
    "tiers": _ALL_TIERS,
    "default_tier": "1080P",
    "sizing": Sizing.RATIO,
    "durations": _2_TO_30,
    "auto_duration": True,
    "fps": 30,
    "prompt_limit": 20_000,
    "negative_prompt": False,
    "audio": True,
    "continuation": CHECKPOINTS["i2v-a14b"],
    "routes": (
        _route(_T, "t2v-a14b", ()),
        _route(_I, "i2v-a14b", (_FF,)),
        _route(_K, "flf2v-720p", (_FF, _LF)),
        _route(_C, _VACE, (_REF_IMAGE,)),
    ),
    "media_limits": {_FF: 1, _LF: 1, _REF_IMAGE: 10, _REF_VIDEO: 5, _REF_AUDIO: 5},
}
_R2V26 = {
    "kind": _C,
    "generation": _W26,
    "tiers": ("720P", "1080P"),
    "default_size": Size(1920, 1080),
    "sizing": Sizing.SIZE,
    "durations": _2_TO_10,
    "fps": 24,
    "prompt_limit": 1500,
    "audio": True,
    "multi_shot": True,
    "continuation": CHECKPOINTS["i2v-a14b"],
    "routes": (_route(_C, _VACE, (_REF_IMAGE,)),),
    "media_limits": {_REF_IMAGE: 5, _REF_VIDEO: 3, MEDIA_TOTAL: 5},
}
_VACE_PLUS = {
    "kind": _C,
    "generation": _W21,
    "tiers": ("720P",),
    "default_size": Size(1280, 720),
    "sizing": Sizing.SIZE,
    "durations": _FIXED_5,
    "fps": 30,
    "prompt_limit": 800,
    "editing": True,
    "routes": (
        _route(
            _C,
            _VACE,
            (),
            (_REF_IMAGE, "video", "mask_image", "mask_video", _FF, _LF, _CLIP, "last_clip"),
        ),
    ),
    "media_limits": {
        _REF_IMAGE: 3,
        "video": 1,
        "mask_image": 1,
        "mask_video": 1,
        _FF: 1,
        _LF: 1,
        _CLIP: 1,
        "last_clip": 1,
    },
}

_CARDS: tuple[ModelCard, ...] = (
    # Text-to-video (seeds 000, 001).
    _card(
        "wan2.6-t2v",
        ckpt="t2v-a14b",
        kind=_T,
        generation=_W26,
        tiers=("720P", "1080P"),
        default_size=Size(1920, 1080),
        durations=_2_TO_15,
        fps=24,
        prompt_limit=1500,
        continuation=CHECKPOINTS["i2v-a14b"],
        audio=True,
        multi_shot=True,
    ),
    _card(
        "wan2.5-t2v-preview",
        ckpt="t2v-a14b",
        kind=_T,
        generation=_W25,
        tiers=_ALL_TIERS,
        default_size=Size(1920, 1080),
        durations=_5_OR_10,
        fps=24,
        prompt_limit=1500,
        continuation=CHECKPOINTS["i2v-a14b"],
        audio=True,
    ),
    _card(
        "wan2.2-t2v-plus",
        ckpt="t2v-a14b",
        kind=_T,
        generation=_W22,
        tiers=("480P", "1080P"),
        default_size=Size(1920, 1080),
        durations=_FIXED_5,
        fps=30,
        prompt_limit=800,
    ),
    _card(
        "wan2.1-t2v-turbo",
        ckpt="t2v-1.3b",
        kind=_T,
        generation=_W21,
        tiers=("480P", "720P"),
        default_size=Size(1280, 720),
        durations=_FIXED_5,
        fps=30,
        prompt_limit=800,
    ),
    _card(
        "wan2.1-t2v-plus",
        ckpt="t2v-14b",
        kind=_T,
        generation=_W21,
        tiers=("720P",),
        default_size=Size(1280, 720),
        durations=_FIXED_5,
        fps=30,
        prompt_limit=800,
    ),
    # Image-to-video (seeds 002, 003).
    _card(
        "wan2.6-i2v-flash",
        ckpt="ti2v-5b",
        kind=_I,
        generation=_W26,
        tiers=("720P", "1080P"),
        default_tier="1080P",
        durations=_2_TO_15,
        fps=24,
        prompt_limit=1500,
        audio=True,
        multi_shot=True,
    ),
    _card(
        "wan2.6-i2v",
        ckpt="i2v-a14b",
        kind=_I,
        generation=_W26,
        tiers=("720P", "1080P"),
        default_tier="1080P",
        durations=_2_TO_15,
        fps=24,
        prompt_limit=1500,
        audio=True,
        multi_shot=True,
    ),
    _card(
        "wan2.5-i2v-preview",
        ckpt="i2v-a14b",
        kind=_I,
        generation=_W25,
        tiers=_ALL_TIERS,
        default_tier="1080P",
        durations=_5_OR_10,
        fps=24,
        prompt_limit=1500,
        audio=True,
    ),
    _card(
        "wan2.2-i2v-flash",
        ckpt="ti2v-5b",
        kind=_I,
        generation=_W22,
        tiers=_ALL_TIERS,
        default_tier="720P",
        durations=_FIXED_5,
        fps=30,
        prompt_limit=800,
    ),
    _card(
        "wan2.2-i2v-plus",
        ckpt="i2v-a14b",
        kind=_I,
        generation=_W22,
        tiers=("480P", "1080P"),
        default_tier="1080P",
        durations=_FIXED_5,
        fps=30,
        prompt_limit=800,
    ),
    _card(
        "wanx2.1-i2v-plus",
        ckpt="i2v-720p",
        kind=_I,
        generation=_W21,
        tiers=("720P",),
        default_tier="720P",
        durations=_FIXED_5,
        fps=30,
        prompt_limit=800,
    ),
    _card(
        "wanx2.1-i2v-turbo",
        ckpt="i2v-480p",
        kind=_I,
        generation=_W21,
        tiers=("480P", "720P"),
        default_tier="720P",
        durations=Durations((3, 4, 5), 5),
        fps=30,
        prompt_limit=800,
    ),
    # First and last frame (DashScope's key-frame model name): beyond the seeds.
    _card(
        "wanx2.1-kf2v-plus",
        ckpt="flf2v-720p",
        kind=Kind.KEYFRAMES_TO_VIDEO,
        generation=_W21,
        tiers=("720P",),
        default_tier="720P",
        durations=_FIXED_5,
        fps=30,
        prompt_limit=800,
    ),
)

_CARDS += (
    # The media[] protocol (wan2.7, wan3.0): one model, several routes by the inputs sent.
    _card(
        "wan2.7-i2v",
        ckpt="i2v-a14b",
        kind=_I,
        generation=_W27,
        tiers=("720P", "1080P"),
        default_tier="1080P",
        durations=_2_TO_15,
        fps=30,
        prompt_limit=5000,
        audio=True,
        routes=(
            _route(_I, "i2v-a14b", (_FF,), (_AUDIO,)),
            _route(_K, "flf2v-720p", (_FF, _LF), (_AUDIO,)),
            _route(_C, _VACE, (_CLIP,), (_LF,)),
        ),
        media_limits={_FF: 1, _LF: 1, _AUDIO: 1, _CLIP: 1},
    ),
    _card("wan3.0-video", ckpt="t2v-a14b", **_WAN3),
    _card("wan3.0-video-prime", ckpt="t2v-a14b", **_WAN3),
    # Reference-to-video: subjects from reference images (VACE), named in the prompt.
    _card("wan2.6-r2v", ckpt=_VACE, **_R2V26),
    _card("wan2.6-r2v-flash", ckpt=_VACE, **_R2V26),
    _card(
        "wan2.7-r2v",
        ckpt=_VACE,
        kind=_C,
        generation=_W27,
        tiers=("720P", "1080P"),
        default_tier="1080P",
        sizing=Sizing.RATIO,
        durations=_2_TO_15,
        fps=30,
        prompt_limit=5000,
        audio=True,
        continuation=CHECKPOINTS["i2v-a14b"],
        routes=(_route(_C, _VACE, (_REF_IMAGE,), (_FF,)),),
        media_limits={_REF_IMAGE: 5, _REF_VIDEO: 5, _FF: 1, MEDIA_TOTAL: 5},
    ),
    # Instruction editing and restyling of a video (its edges steer a VACE pass).
    _card(
        "wan2.7-videoedit",
        ckpt=_VACE,
        kind=_C,
        generation=_W27,
        tiers=("720P", "1080P"),
        default_tier="1080P",
        sizing=Sizing.RATIO,
        # 0 (the default): as long as the source video (2 to 10 s); else its first seconds.
        durations=Durations((0, *range(2, 11)), 0),
        fps=30,
        prompt_limit=5000,
        audio=True,
        routes=(_route(_C, _VACE, ("video",), (_REF_IMAGE,)),),
        media_limits={"video": 1, _REF_IMAGE: 4},
    ),
    # VACE editing: five functions on one checkpoint.
    _card("wan2.1-vace-plus", ckpt=_VACE, **_VACE_PLUS),
)

# DashScope accepts both spellings of the Wan 2.1 names.
_ALIASES = {
    "wanx2.1-t2v-turbo": "wan2.1-t2v-turbo",
    "wanx2.1-t2v-plus": "wan2.1-t2v-plus",
    "wanx2.1-vace-plus": "wan2.1-vace-plus",
}


class ModelOverride(BaseModel):
    """Per-deployment changes to one catalogue entry (`Settings.models[name]`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    checkpoint: str | None = Field(
        default=None, description="diffusers-format directory or hub id to load"
    )
    family: Family | None = Field(
        default=None, description="layout of that checkpoint, if it differs from the default"
    )
    max_area: int | None = Field(default=None, gt=0)
    steps: int | None = Field(default=None, ge=1, le=1000)
    guidance_scale: float | None = Field(default=None, ge=0)
    guidance_scale_2: float | None = Field(default=None, ge=0)
    flow_shift: float | None = Field(default=None, gt=0)
    continuation_checkpoint: str | None = Field(
        default=None, description="image-to-video checkpoint that extends long videos"
    )
    continuation_family: Family | None = None
    composite_checkpoint: str | None = Field(
        default=None,
        description="VACE checkpoint (wan2.1-vace family) for reference, clip and editing "
        "inputs of media[] models",
    )
    # Speed (docs/performance.md). Lossless: output within one 8-bit level of plain diffusers.
    cfg_batch: CfgBatch | None = Field(
        default=None, description="auto | on | off: both guidance passes in one batch-2 forward"
    )
    compile: CompileMode | None = Field(
        default=None, description="off | regional: torch.compile the repeated block at load"
    )
    attention_backend: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9_]{1,40}$",
        description="diffusers attention backend (native, flash, sage, _native_cudnn, ...)",
    )
    cache: CachePreset | None = Field(
        default=None, description="off | fast | faster: the block cache tasks use by default"
    )
    preset: Literal["distilled"] | None = Field(
        default=None,
        description="distilled: 4 steps, guidance 1.0 (no CFG), flow shift 5, with the "
        "distillation adapter named by `lora` (fields set here override the preset's)",
    )
    lora: str | None = Field(
        default=None, description="LoRA adapter (in lora_dir) every run of this model uses"
    )
    lora_scale: float | None = Field(default=None, ge=0, le=MAX_SCALE)

    @field_validator("lora")
    @classmethod
    def _adapter_name(cls, value: str | None) -> str | None:
        if value is not None and not is_valid_name(value):
            raise ValueError(f"{value!r} is not an adapter name (letters, digits, . _ -)")
        return value

    @model_validator(mode="after")
    def _preset_needs_adapter(self) -> ModelOverride:
        if self.preset == "distilled" and self.lora is None:
            raise ValueError("preset distilled needs lora: the distillation adapter's name")
        if self.lora_scale is not None and self.lora is None:
            raise ValueError("lora_scale needs lora")
        return self


class Catalog:
    """DashScope model name -> `ModelCard`, with the deployment's overrides applied."""

    def __init__(self, cards: Iterable[ModelCard]) -> None:
        self._cards = {c.name: c for c in cards}

    @classmethod
    def build(
        cls,
        overrides: Mapping[str, ModelOverride] | None = None,
        *,
        steps: int | None = None,
    ) -> Catalog:
        """The built-in catalogue with `overrides` (by model name) and a global step count."""
        overrides = dict(overrides or {})
        cards = list(_CARDS) + [
            dataclasses.replace(next(c for c in _CARDS if c.name == target), name=alias)
            for alias, target in _ALIASES.items()
        ]
        unknown = set(overrides) - {c.name for c in cards}
        if unknown:
            raise ValueError(f"configuration overrides unknown models: {sorted(unknown)}")
        return cls(_apply_override(c, overrides.get(c.name), steps) for c in cards)

    def get(self, name: str) -> ModelCard:
        try:
            return self._cards[name]
        except KeyError:
            raise InvalidParameter(
                f"Model not exist: {name!r}. Available models: {', '.join(self.names())}.",
                field="model",
            ) from None

    def names(self) -> list[str]:
        return sorted(self._cards)

    def __iter__(self) -> Iterator[ModelCard]:
        return iter(self._cards.values())

    def __len__(self) -> int:
        return len(self._cards)


def _apply_override(card: ModelCard, o: ModelOverride | None, steps: int | None) -> ModelCard:
    checkpoint = card.checkpoint
    if o is not None and (o.checkpoint or o.family or o.max_area):
        checkpoint = Checkpoint(
            source=o.checkpoint or checkpoint.source,
            family=o.family or checkpoint.family,
            max_area=o.max_area or checkpoint.max_area,
        )
    base = FAMILIES[checkpoint.family].sampling
    if o is not None and o.preset == "distilled":
        # Guidance off for both experts of a two-expert model; none where there is no second.
        second = DISTILLED.guidance_scale_2 if base.guidance_scale_2 is not None else None
        base = dataclasses.replace(DISTILLED, guidance_scale_2=second)
        steps = None  # the preset's step count beats the global one; `o.steps` beats both
    if card.kind not in FAMILIES[checkpoint.family].kinds:
        raise ValueError(
            f"model {card.name} ({card.kind.value}) cannot run on a {checkpoint.family.value} "
            "checkpoint"
        )
    sampling = Sampling(
        steps=(o.steps if o and o.steps else None) or steps or base.steps,
        guidance_scale=o.guidance_scale
        if o and o.guidance_scale is not None
        else base.guidance_scale,
        guidance_scale_2=(
            o.guidance_scale_2 if o and o.guidance_scale_2 is not None else base.guidance_scale_2
        ),
        flow_shift=o.flow_shift if o and o.flow_shift is not None else base.flow_shift,
        # An explicit flow shift applies at every resolution.
        low_res_flow_shift=(
            o.flow_shift if o and o.flow_shift is not None else base.low_res_flow_shift
        ),
    )
    continuation = card.continuation
    if o is not None and (o.continuation_checkpoint or o.continuation_family):
        base_cont = continuation or CHECKPOINTS["i2v-a14b"]
        continuation = Checkpoint(
            source=o.continuation_checkpoint or base_cont.source,
            family=o.continuation_family or base_cont.family,
            max_area=base_cont.max_area,
        )
    speed = CheckpointSpeed(
        cfg_batch=o.cfg_batch if o and o.cfg_batch else CfgBatch.AUTO,
        compile=o.compile if o and o.compile else CompileMode.OFF,
        attention=o.attention_backend if o else None,
    )
    built = dataclasses.replace(
        card,
        checkpoint=checkpoint,
        sampling=sampling,
        continuation=continuation,
        speed=speed,
        cache=o.cache if o and o.cache else CachePreset.OFF,
        adapter=o.lora if o is not None else None,
        adapter_scale=o.lora_scale if o is not None and o.lora_scale is not None else 1.0,
    )
    built = dataclasses.replace(
        built,
        routes=_routes(
            card,
            checkpoint,
            sampling,
            o.composite_checkpoint if o else None,
            o.steps if o and o.steps else steps,
            o.max_area if o else None,
        ),
    )
    effective = built.continued_by
    if effective is not None and effective is not checkpoint:
        cont = FAMILIES[effective.family]
        if Kind.IMAGE_TO_VIDEO not in cont.kinds:
            raise ValueError(
                f"model {card.name}: continuation must be an image-to-video checkpoint"
            )
        if cont.native_fps != FAMILIES[checkpoint.family].native_fps:
            # Segments are joined frame by frame: a different frame rate would change the speed.
            raise ValueError(
                f"model {card.name}: continuation {effective.family.value} runs at "
                f"{cont.native_fps} fps, the model's checkpoint at "
                f"{FAMILIES[checkpoint.family].native_fps} fps"
            )
    return built


def _routes(
    card: ModelCard,
    checkpoint: Checkpoint,
    sampling: Sampling,
    composite: str | None,
    steps: int | None,
    max_area: int | None,
) -> tuple[Route, ...]:
    """The card's routes on this deployment: the model's own checkpoint (overridden or not)
    where a route runs it, the configured VACE checkpoint for composite routes, and each
    other checkpoint's official sampling at the global step count. A model's `max_area`
    budgets every route."""
    routes = []
    for route in card.routes:
        if route.kind is Kind.COMPOSITE and composite is not None:
            target = dataclasses.replace(route.checkpoint, source=composite)
        elif route.checkpoint == card.checkpoint:
            routes.append(dataclasses.replace(route, checkpoint=checkpoint, sampling=sampling))
            continue
        else:
            target = route.checkpoint
        if max_area is not None:
            target = dataclasses.replace(target, max_area=max_area)
        base = FAMILIES[target.family].sampling
        own = dataclasses.replace(base, steps=steps or base.steps)
        routes.append(dataclasses.replace(route, checkpoint=target, sampling=own))
    return tuple(routes)


def checkpoint_speeds(catalog: Catalog) -> dict[str, CheckpointSpeed]:
    """The lossless speed-ups of every checkpoint the catalogue runs. A checkpoint is loaded
    once for every model that names it, so models sharing one must agree (ValueError)."""
    speeds: dict[str, CheckpointSpeed] = {}
    owners: dict[str, str] = {}
    for card in catalog:
        source = card.checkpoint.source
        if source in speeds and speeds[source] != card.speed:
            raise ValueError(
                f"models {owners[source]} and {card.name} share checkpoint {source} but set "
                "different cfg_batch, compile or attention_backend; set them alike"
            )
        speeds[source], owners[source] = card.speed, card.name
    return speeds


def generation_size(size: Size, *, max_area: int, multiple: int) -> Size:
    """The size to denoise at: `size` itself when the checkpoint handles it, else the largest
    size of the same aspect within `max_area`; both sides multiples of `multiple`."""
    scale = min(1.0, math.sqrt(max_area / size.area))
    w, h = size.width * scale / multiple, size.height * scale / multiple
    budget = max(max_area, size.area) if scale == 1.0 else max_area
    candidates = [
        Size(max(1, fw(w)) * multiple, max(1, fh(h)) * multiple)
        for fw in (round, math.floor)
        for fh in (round, math.floor)
    ]
    fitting = [c for c in candidates if c.area <= budget] or [min(candidates, key=_area)]
    aspect = size.width / size.height
    return min(fitting, key=lambda c: (abs(c.width / c.height - aspect), -c.area))


def _area(size: Size) -> int:
    return size.area


def frames_for(duration: int, fps: int) -> int:
    """Native frame count for `duration` seconds at `fps`: the smallest 4n+1 covering it
    (both ends: `duration * fps` intervals need one frame more)."""
    return frames_at_least(duration * fps + 1)
