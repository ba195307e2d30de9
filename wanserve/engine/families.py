"""Facts about the open Wan checkpoints: their families, how each samples, and their shapes.

A torch-free leaf: the catalogue (API side) and the engine (worker side) both read it, and an
API-only process must be able to import it without loading torch. It imports nothing from
`wanserve`.

* `Family`, `Kind`: a checkpoint layout as diffusers loads it, and what a pipeline is
  conditioned on.
* `FAMILIES`: official sampling defaults (steps, guidance, flow shift), native frame rate,
  the pixel multiple the VAE needs, and one pass's training length (Wan-Video/Wan2.x configs).
* `CHECKPOINTS`: the published checkpoints (hub ids) and the pixel budget each was trained at.
* The 4n+1 frame rule: the Wan VAE compresses time by four and keeps the first frame on its
  own, so a clip of n latent frames decodes to 4(n - 1) + 1 frames.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import TypeVar


class Kind(StrEnum):
    """What a model is conditioned on."""

    TEXT_TO_VIDEO = "t2v"
    IMAGE_TO_VIDEO = "i2v"
    KEYFRAMES_TO_VIDEO = "kf2v"
    # VACE's composite conditioning: a source video with a mask of what to generate in it
    # (extension, in- and outpainting, repainting from a control video) and reference images
    # of subjects to put in it; any of them may be absent.
    COMPOSITE = "vace"


class Family(StrEnum):
    """An open Wan checkpoint layout, as diffusers loads it."""

    WAN21_T2V = "wan2.1-t2v"
    WAN22_T2V_A14B = "wan2.2-t2v-a14b"
    WAN21_I2V = "wan2.1-i2v"
    WAN22_I2V_A14B = "wan2.2-i2v-a14b"
    WAN22_TI2V_5B = "wan2.2-ti2v-5b"
    WAN21_FLF2V = "wan2.1-flf2v"
    WAN21_VACE = "wan2.1-vace"


# The official Wan negative prompt (Wan-Video/Wan2.x `sample_neg_prompt`), used when a request
# sends none: it suppresses the over-saturated, static, malformed output Wan is prone to.
DEFAULT_NEGATIVE_PROMPT = (
    "色调艳丽，过曝，静态，细节模糊不清，字幕，风格，作品，画作，画面，静止，整体发灰，最差质量，"
    "低质量，JPEG压缩残留，丑陋的，残缺的，多余的手指，画得不好的手部，画得不好的脸部，畸形的，"
    "毁容的，形态畸形的肢体，手指融合，静止不动的画面，杂乱的背景，三条腿，背景人很多，倒着走"
)

# 480P: generations at or below this area (832x480) use a family's low-resolution flow shift.
LOW_RES_AREA = 832 * 480

# Frames per latent frame after the first (every Wan VAE, 2.1 and 2.2 alike).
TEMPORAL_COMPRESSION = 4


def frames_at_least(frames: int) -> int:
    """The smallest valid (4n+1) frame count of at least `frames`."""
    step = TEMPORAL_COMPRESSION
    return max(0, -(-(frames - 1) // step)) * step + 1


def frames_at_most(frames: int) -> int:
    """The largest valid (4n+1) frame count of at most `frames` (at least one frame)."""
    step = TEMPORAL_COMPRESSION
    return max(0, (frames - 1) // step) * step + 1


def is_valid_frame_count(frames: int) -> bool:
    return frames >= 1 and (frames - 1) % TEMPORAL_COMPRESSION == 0


def latent_frames(frames: int) -> int:
    """Latent frames of a valid (4n+1) clip: what the VAE decodes, one at a time."""
    if not is_valid_frame_count(frames):
        raise ValueError(f"{frames} frames is not 4n+1")
    return (frames - 1) // TEMPORAL_COMPRESSION + 1


def is_low_resolution(area: int) -> bool:
    """Whether `area` denoised pixels are 480P or below (at most 832x480): where the official
    code samples with a family's low-resolution flow shift, and where the 480P MagCache
    calibrations apply (`engine/speed.py`)."""
    return area <= LOW_RES_AREA


_Shift = TypeVar("_Shift", bound=float | None)


def flow_shift_at(
    area: int, *, flow_shift: _Shift, low_res_flow_shift: float | None
) -> _Shift | float:
    """The flow shift to denoise `area` pixels with: `low_res_flow_shift` at 480P or below,
    where a family (or a model's override) has one, else `flow_shift`. The one place of the
    rule: `Sampling.flow_shift_for` and the spec's sizing both ask it."""
    if low_res_flow_shift is not None and is_low_resolution(area):
        return low_res_flow_shift
    return flow_shift


@dataclass(frozen=True)
class Sampling:
    steps: int
    guidance_scale: float
    guidance_scale_2: float | None
    flow_shift: float
    # Flow shift the official code recommends when generating at 480P or below.
    low_res_flow_shift: float | None = None

    def flow_shift_for(self, area: int) -> float:
        return flow_shift_at(
            area, flow_shift=self.flow_shift, low_res_flow_shift=self.low_res_flow_shift
        )


@dataclass(frozen=True)
class FamilyProfile:
    """Official sampling defaults and shapes of a checkpoint family (Wan-Video/Wan2.x)."""

    family: Family
    sampling: Sampling
    native_fps: int
    size_multiple: int
    kinds: frozenset[Kind]
    # Wan2.2 two-expert models switch from `transformer` to `transformer_2` at this ratio.
    boundary_ratio: float | None = None
    # Longest clip one denoising pass makes well (the training length); longer videos are
    # generated as chained segments. 81 frames is 5 s at 16 fps; TI2V-5B trained on 121.
    frames_per_pass: int = 81
    # The checkpoint is an image-to-video pipeline; with `clip`, it has a CLIP image encoder.
    image_pipeline: bool = False
    clip: bool = False
    # The checkpoint is a VACE pipeline (`WanVACEPipeline`): a Wan2.1 text-to-video model with
    # context blocks that read the source video, its mask and reference images.
    composite: bool = False


# Wan2.1 text-to-video's official sampling (its VACE models share it).
_WAN21_T2V = Sampling(
    steps=50, guidance_scale=5.0, guidance_scale_2=None, flow_shift=5.0, low_res_flow_shift=3.0
)
_T2V = frozenset({Kind.TEXT_TO_VIDEO})
_I2V = frozenset({Kind.IMAGE_TO_VIDEO})

FAMILIES: Mapping[Family, FamilyProfile] = {
    p.family: p
    for p in (
        FamilyProfile(
            family=Family.WAN21_T2V,
            sampling=_WAN21_T2V,
            native_fps=16,
            size_multiple=16,
            kinds=_T2V,
        ),
        FamilyProfile(
            family=Family.WAN22_T2V_A14B,
            sampling=Sampling(steps=40, guidance_scale=4.0, guidance_scale_2=3.0, flow_shift=12.0),
            boundary_ratio=0.875,
            native_fps=16,
            size_multiple=16,
            kinds=_T2V,
        ),
        FamilyProfile(
            family=Family.WAN21_I2V,
            sampling=Sampling(
                steps=40,
                guidance_scale=5.0,
                guidance_scale_2=None,
                flow_shift=5.0,
                low_res_flow_shift=3.0,
            ),
            native_fps=16,
            size_multiple=16,
            kinds=_I2V,
            image_pipeline=True,
            clip=True,
        ),
        FamilyProfile(
            family=Family.WAN22_I2V_A14B,
            sampling=Sampling(steps=40, guidance_scale=3.5, guidance_scale_2=3.5, flow_shift=5.0),
            boundary_ratio=0.9,
            native_fps=16,
            size_multiple=16,
            kinds=_I2V,
            image_pipeline=True,
        ),
        FamilyProfile(
            family=Family.WAN22_TI2V_5B,
            sampling=Sampling(steps=50, guidance_scale=5.0, guidance_scale_2=None, flow_shift=5.0),
            native_fps=24,
            size_multiple=32,
            frames_per_pass=121,
            kinds=frozenset({Kind.TEXT_TO_VIDEO, Kind.IMAGE_TO_VIDEO}),
        ),
        FamilyProfile(
            family=Family.WAN21_FLF2V,
            sampling=Sampling(steps=50, guidance_scale=5.0, guidance_scale_2=None, flow_shift=16.0),
            native_fps=16,
            size_multiple=16,
            kinds=frozenset({Kind.KEYFRAMES_TO_VIDEO, Kind.IMAGE_TO_VIDEO}),
            image_pipeline=True,
            clip=True,
        ),
        FamilyProfile(
            # Wan2.1-VACE (1.3B, 14B): the Wan2.1 T2V defaults (Wan-Video/Wan2.1 vace configs).
            family=Family.WAN21_VACE,
            sampling=_WAN21_T2V,
            native_fps=16,
            size_multiple=16,
            kinds=frozenset({Kind.COMPOSITE}),
            composite=True,
        ),
    )
}


# The distilled ("turbo") preset: a step- and CFG-distillation LoRA (lightx2v's 4-step
# adapters; CausVid-style ones work the same way) on the base checkpoint. Four steps, guidance
# off (1.0: diffusers then skips the unconditional pass), flow shift 5, as LightX2V's own
# configuration for its Wan2.1 T2V distillation LoRA states (ModelTC/LightX2V
# configs/distill/wan21/wan_t2v_distill_lora_4step_cfg.json: infer_steps 4, sample_shift 5,
# enable_cfg false). LightX2V samples the fixed timesteps [1000, 750, 500, 250]; diffusers'
# UniPC/Euler schedulers at 4 steps and shift 5 place theirs close to those, not on them.
DISTILLED = Sampling(steps=4, guidance_scale=1.0, guidance_scale_2=1.0, flow_shift=5.0)


@dataclass(frozen=True)
class Checkpoint:
    """Where a model's weights come from: a diffusers-format directory or a hub id."""

    source: str
    family: Family
    # Largest area the checkpoint was trained for; bigger requests are generated at this
    # budget (same aspect) and scaled up to the exact size asked for.
    max_area: int


_HUB = "Wan-AI/"

# The published diffusers-format checkpoints, by a short name.
CHECKPOINTS: Mapping[str, Checkpoint] = {
    "t2v-1.3b": Checkpoint(_HUB + "Wan2.1-T2V-1.3B-Diffusers", Family.WAN21_T2V, 832 * 480),
    "t2v-14b": Checkpoint(_HUB + "Wan2.1-T2V-14B-Diffusers", Family.WAN21_T2V, 1280 * 720),
    "t2v-a14b": Checkpoint(_HUB + "Wan2.2-T2V-A14B-Diffusers", Family.WAN22_T2V_A14B, 1280 * 720),
    "i2v-480p": Checkpoint(_HUB + "Wan2.1-I2V-14B-480P-Diffusers", Family.WAN21_I2V, 832 * 480),
    "i2v-720p": Checkpoint(_HUB + "Wan2.1-I2V-14B-720P-Diffusers", Family.WAN21_I2V, 1280 * 720),
    "i2v-a14b": Checkpoint(_HUB + "Wan2.2-I2V-A14B-Diffusers", Family.WAN22_I2V_A14B, 1280 * 720),
    "ti2v-5b": Checkpoint(_HUB + "Wan2.2-TI2V-5B-Diffusers", Family.WAN22_TI2V_5B, 1280 * 704),
    "flf2v-720p": Checkpoint(
        _HUB + "Wan2.1-FLF2V-14B-720P-Diffusers", Family.WAN21_FLF2V, 1280 * 720
    ),
    # The VACE repositories spell the suffix in lower case.
    "vace-1.3b": Checkpoint(_HUB + "Wan2.1-VACE-1.3B-diffusers", Family.WAN21_VACE, 832 * 480),
    "vace-14b": Checkpoint(_HUB + "Wan2.1-VACE-14B-diffusers", Family.WAN21_VACE, 1280 * 720),
}
