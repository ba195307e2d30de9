"""What the engine accepts and returns: `GenerationRequest`, progress events, `Clip`, and the
seams (`Runner`, `AudioGenerator`, `AudioDrivenVideo`) with the engine's settings.

A torch-free leaf: an API-only process may import it (the composition roots name these types)
without loading torch. It speaks the engine's vocabulary only: pixels, frames, steps, seeds,
prompts and conditioning images. No DashScope model names, tiers, durations, output sizes or
error codes: `wanserve.workers.translation` builds requests from a task's `GenerationSpec`
and maps `wanserve.engine.errors` back to DashScope codes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from wanserve.engine.adapters import AdapterUse
from wanserve.engine.audio import AudioClip
from wanserve.engine.errors import BadInput
from wanserve.engine.families import FAMILIES, Family, Kind, is_valid_frame_count
from wanserve.engine.options import BlockCount, CachePreset, CheckpointSpeed

Frames = NDArray[np.uint8]  # (frames, height, width, 3), RGB
Masks = NDArray[np.uint8]  # (frames, height, width): 255 generate, 0 keep


@dataclass(frozen=True, kw_only=True)
class GenerationRequest:
    """One denoising pass on one checkpoint. Sizes are what is denoised (multiples of the
    family's `size_multiple`); scaling to the size a client asked for is the media layer's
    job. Invalid combinations raise `BadInput` at construction, before any model is touched."""

    checkpoint: str  # a diffusers-format directory or hub id
    family: Family
    kind: Kind
    width: int
    height: int
    num_frames: int  # 4n+1, at the family's native frame rate
    steps: int
    guidance_scale: float
    seed: int
    prompt: str
    negative_prompt: str
    guidance_scale_2: float | None = None  # the second expert's (Wan2.2 A14B)
    flow_shift: float | None = None  # None: the checkpoint scheduler's own
    first_frame: Image.Image | None = None  # image- and key-frame-to-video
    last_frame: Image.Image | None = None  # key-frame-to-video
    # Composite (VACE) conditioning, each optional: a source video of `num_frames` frames at
    # the denoising size; a mask of the same shape (255: generate this pixel, 0: keep the
    # source's); reference images of subjects (any size: the pipeline fits them); how
    # strongly the video and mask steer the result (VACE's context scale).
    video: Frames | None = None
    mask: Masks | None = None
    reference_images: tuple[Image.Image, ...] = ()
    conditioning_scale: float = 1.0
    # Transformer block cache for this run (lossy; see wanserve/engine/speed.py).
    cache: CachePreset = CachePreset.OFF
    # LoRA adapters active for this run (by name, in `EngineConfig.lora_dir`); none: the
    # base weights alone. Each is loaded once per resident checkpoint and then swapped.
    adapters: tuple[AdapterUse, ...] = ()

    def __post_init__(self) -> None:
        profile = FAMILIES[self.family]
        if len({a.name for a in self.adapters}) != len(self.adapters):
            raise BadInput("an adapter is named twice")
        if self.kind not in profile.kinds:
            raise BadInput(f"a {self.family.value} checkpoint cannot run {self.kind.value}")
        multiple = profile.size_multiple
        if self.width <= 0 or self.height <= 0 or self.width % multiple or self.height % multiple:
            raise BadInput(
                f"{self.width}x{self.height} is not a size {self.family.value} can denoise "
                f"(both sides positive multiples of {multiple})"
            )
        if not is_valid_frame_count(self.num_frames):
            raise BadInput(f"{self.num_frames} frames is not 4n+1")
        if self.steps < 1:
            raise BadInput("at least one denoising step is needed")
        framed = self.kind in (Kind.IMAGE_TO_VIDEO, Kind.KEYFRAMES_TO_VIDEO)
        if framed != (self.first_frame is not None):
            raise BadInput(
                f"{self.kind.value} needs a first frame"
                if self.first_frame is None
                else f"{self.kind.value} takes no first frame"
            )
        if (self.kind is Kind.KEYFRAMES_TO_VIDEO) != (self.last_frame is not None):
            raise BadInput("a last frame is needed for key frames, and taken by nothing else")
        self._check_composite()

    def _check_composite(self) -> None:
        composite = (self.video, self.mask, self.reference_images)
        if self.kind is not Kind.COMPOSITE:
            if any(x is not None and len(x) for x in composite):
                raise BadInput(f"{self.kind.value} takes no source video, mask or references")
            return
        if self.mask is not None and self.video is None:
            raise BadInput("a mask needs the source video it masks")
        shape = (self.num_frames, self.height, self.width)
        if self.video is not None and (
            self.video.shape != (*shape, 3) or self.video.dtype != np.uint8
        ):
            raise BadInput(
                f"the source video is {self.video.shape}, not {shape} frames of RGB at the "
                "denoising size"
            )
        if self.mask is not None and (self.mask.shape != shape or self.mask.dtype != np.uint8):
            raise BadInput(f"the mask is {self.mask.shape}, not {shape}")
        if self.cache is not CachePreset.OFF:
            raise BadInput("the block cache is not calibrated for composite (VACE) runs")
        if not 0.0 <= self.conditioning_scale <= 2.0:
            raise BadInput(f"conditioning scale {self.conditioning_scale} is not in [0, 2]")

    @property
    def fps(self) -> int:
        """The frame rate the checkpoint generates at."""
        return FAMILIES[self.family].native_fps


class Stage(StrEnum):
    DENOISE = "denoise"  # one event per denoising step
    DECODE = "decode"  # one event per decoded VAE chunk (latent frame, or tile of one)


@dataclass(frozen=True)
class EngineProgress:
    """Step `step` of `total` of `stage` is done."""

    stage: Stage
    step: int
    total: int


@dataclass(frozen=True)
class Clip:
    frames: Frames
    fps: int
    # Transformer block evaluations that made it (None: an engine that does not count them).
    blocks: BlockCount | None = None


ProgressFn = Callable[[EngineProgress], None]
CancelFn = Callable[[], bool]
FrameSink = Callable[[Frames], None]  # takes frames in order, a chunk at a time


class Runner(Protocol):
    def run(
        self, request: GenerationRequest, *, on_progress: ProgressFn, should_cancel: CancelFn
    ) -> Clip:
        """Frames of `request` at its denoising size and native fps. Reports progress after
        every denoising step and decoded chunk, polls `should_cancel` before each (raising
        `Canceled`), and raises only `EngineError`s on purpose."""


@runtime_checkable
class StreamingRunner(Protocol):
    """A `Runner` that can hand frames over as the VAE decodes them, so the caller encodes
    while decoding goes on and the whole video is never held as one array."""

    def stream(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
        on_frames: FrameSink,
    ) -> Clip:
        """Like `Runner.run`, but every frame goes to `on_frames`, in order, in chunks (one
        per decoded latent frame where the decode allows it, else all at once); the returned
        `Clip` holds no frames."""


class AudioGenerator(Protocol):
    """Makes a sound track for a video from its prompt (automatic dubbing)."""

    def generate(
        self, prompt: str, *, seconds: float, seed: int, should_cancel: CancelFn
    ) -> AudioClip: ...


class AudioDrivenVideo(Protocol):
    """A model that makes the video from a sound track too (lip and rhythm sync, e.g.
    Wan2.2-S2V). None is configured today; see docs/models.md."""

    def run(
        self,
        request: GenerationRequest,
        *,
        audio: AudioClip,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
    ) -> Clip: ...


@dataclass(frozen=True)
class EngineConfig:
    # "auto" | "dummy" | "random" (full-size architectures with random weights, built in
    # memory: for timing on hosts without the weights; see random_weights.py)
    weights: str
    device: str  # "auto" | "cpu" | "cuda[:N]"
    dummy_root: Path
    hf_cache_dir: Path | None = None
    allow_download: bool = True
    dtype: str = "auto"  # "auto" (bf16 on CUDA, fp32 on CPU) | "bfloat16" | "float16" | "float32"
    text_encoder_device: str = "auto"  # "auto" (with the transformer) | "cpu"
    cpu_offload: bool = False  # diffusers model CPU offload (CUDA only)
    vae_tiling: bool = False
    # Device memory resident checkpoints may use; None: 90% of the GPU's memory, or no limit
    # on a CPU.
    memory_budget_bytes: int | None = None
    # Lossless speed-ups per checkpoint source (the catalogue's per-model settings); a source
    # not listed gets `CheckpointSpeed()`.
    speed: Mapping[str, CheckpointSpeed] = field(default_factory=dict)

    def speed_for(self, source: str) -> CheckpointSpeed:
        return self.speed.get(source, CheckpointSpeed())

    lora_dir: Path | None = None  # where adapters named by requests live; None: no adapters
    # Adapters kept loaded per resident checkpoint; the least recently used is deleted
    # beyond it (each one costs rank x (in + out) weights per adapted layer).
    lora_cache_size: int = 8
