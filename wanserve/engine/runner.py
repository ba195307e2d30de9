"""The engine seam: `Runner.run(spec, ...) -> Clip`, and the resident-model runner behind it.

The engine knows nothing of HTTP, SQL or task ids. It gets a `GenerationSpec` and resolved
inputs, reports typed progress events, polls a cancel check between steps, and returns raw
frames at the checkpoint's native frame rate and denoising size. Resizing, retiming,
watermarking and encoding are the media layer's job.

`ModelManager` keeps checkpoints resident between tasks. A checkpoint is loaded once however
many catalogue entries and pipeline kinds use it (Wan2.2-TI2V-5B serves text- and
image-to-video from one copy), and least recently used checkpoints are unloaded when a memory
budget would be exceeded.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from wanserve.catalog import Family, Kind
from wanserve.media.audio import AudioClip
from wanserve.spec import GenerationSpec

log = logging.getLogger(__name__)

Frames = NDArray[np.uint8]  # (frames, height, width, 3), RGB


@dataclass(frozen=True)
class EngineProgress:
    stage: str  # "denoise" | "decode"
    step: int
    total: int


@dataclass(frozen=True)
class Clip:
    frames: Frames
    fps: int


@dataclass(frozen=True)
class Conditioning:
    """Inputs resolved by the worker (decoded images), ready for the pipeline."""

    image: Image.Image | None = None
    last_image: Image.Image | None = None


class GenerationCancelled(Exception):
    """Raised inside a run when `should_cancel` turned true; the run stopped early."""


ProgressFn = Callable[[EngineProgress], None]
CancelFn = Callable[[], bool]


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
        spec: GenerationSpec,
        *,
        conditioning: Conditioning,
        audio: AudioClip,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
    ) -> Clip: ...


class Runner(Protocol):
    def run(
        self,
        spec: GenerationSpec,
        *,
        conditioning: Conditioning,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
    ) -> Clip: ...


@dataclass(frozen=True)
class EngineConfig:
    weights: str  # "auto" | "dummy"
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


CheckpointKey = tuple[str, Family]


@dataclass
class Resident:
    """One loaded checkpoint: its pipeline views by kind, and per-checkpoint caches."""

    base: Any
    nbytes: int
    views: dict[Kind, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # e.g. prompt embeddings
    lock: threading.Lock = field(default_factory=threading.Lock)  # one run at a time
    leases: int = 0
    last_used: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Leased:
    pipeline: Any
    cache: dict[str, Any]


@dataclass(frozen=True)
class Prepared:
    """A checkpoint on local disk, ready to load, and what it will occupy on the device."""

    location: Any
    nbytes: int


class CheckpointLoader(Protocol):
    def prepare(self, source: str, family: Family) -> Prepared:
        """Put the checkpoint on local disk (download it if allowed) and size it."""

    def load(self, prepared: Prepared, family: Family) -> Any:
        """Load a prepared checkpoint's base pipeline onto its device."""

    def view(self, base: Any, family: Family, kind: Kind) -> Any:
        """The pipeline serving `kind`, sharing `base`'s modules (may be `base` itself)."""

    def nbytes(self, base: Any) -> int:
        """Device memory the loaded checkpoint's weights occupy."""

    def release(self) -> None:
        """Return freed memory to the device (after an unload or a failed run)."""


class ModelManager:
    def __init__(self, loader: CheckpointLoader, *, budget_bytes: int | None = None) -> None:
        self._loader = loader
        self._budget = budget_bytes
        self._resident: dict[CheckpointKey, Resident] = {}
        self._loading: dict[CheckpointKey, threading.Lock] = {}
        self._reserved: dict[CheckpointKey, int] = {}  # loads in flight
        self._guard = threading.Lock()
        self.loads = 0  # checkpoints actually loaded (a warm lease does not count)
        self.evictions = 0

    @contextmanager
    def lease(self, source: str, family: Family, kind: Kind) -> Iterator[Leased]:
        """Hold the checkpoint's pipeline for `kind` for one run."""
        key = (source, family)
        resident = self._ensure(key)
        with resident.lock:
            try:
                view = resident.views.get(kind)
                if view is None:
                    view = resident.views[kind] = self._loader.view(resident.base, family, kind)
                yield Leased(pipeline=view, cache=resident.cache)
            finally:
                with self._guard:
                    resident.leases -= 1
                    resident.last_used = time.monotonic()

    def resident(self) -> list[CheckpointKey]:
        with self._guard:
            return list(self._resident)

    def resident_bytes(self) -> int:
        with self._guard:
            return sum(r.nbytes for r in self._resident.values())

    def _ensure(self, key: CheckpointKey) -> Resident:
        with self._guard:
            resident = self._resident.get(key)
            if resident is not None:
                resident.leases += 1
                return resident
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one loader per checkpoint; others wait for it
            with self._guard:
                resident = self._resident.get(key)
                if resident is not None:
                    resident.leases += 1
                    return resident
            # Downloading and sizing happen outside the guard: other checkpoints stay usable.
            prepared = self._loader.prepare(*key)
            with self._guard:
                # Make room before loading, counting loads already in flight.
                self._evict_for(prepared.nbytes, keep=key)
                self._reserved[key] = prepared.nbytes
            try:
                base = self._loader.load(prepared, key[1])
            finally:
                with self._guard:
                    self._reserved.pop(key, None)
            size = self._loader.nbytes(base)
            with self._guard:
                self.loads += 1
                resident = Resident(base=base, nbytes=size, leases=1)
                self._resident[key] = resident
                self._evict_for(0, keep=key)
            log.info(
                "resident: %s (%.1f MB); total %.1f MB",
                key[0],
                size / 1e6,
                self.resident_bytes() / 1e6,
            )
            return resident

    def _held(self) -> int:
        return sum(r.nbytes for r in self._resident.values())

    def _evict_for(self, incoming: int, *, keep: CheckpointKey) -> None:
        """Unload idle checkpoints, least recently used first, until `incoming` more bytes fit.
        Caller holds `_guard`. Checkpoints in use are never unloaded."""
        if self._budget is None:
            return
        idle = sorted(
            (k for k, r in self._resident.items() if r.leases == 0 and k != keep),
            key=lambda k: self._resident[k].last_used,
        )
        freed = False
        in_flight = sum(self._reserved.values())
        while idle and self._held() + in_flight + incoming > self._budget:
            victim = idle.pop(0)
            log.info("unloading %s to stay within the model memory budget", victim[0])
            del self._resident[victim]
            self.evictions += 1
            freed = True
        if freed:
            self._loader.release()


class PipelineRunner:
    """`Runner` over diffusers Wan pipelines kept resident by a `ModelManager`."""

    def __init__(self, *, manager: ModelManager, generate: Callable[..., Frames]) -> None:
        self._manager = manager
        self._generate = generate

    @property
    def manager(self) -> ModelManager:
        return self._manager

    def run(
        self,
        spec: GenerationSpec,
        *,
        conditioning: Conditioning,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
    ) -> Clip:
        with self._manager.lease(spec.checkpoint, spec.family, spec.kind) as leased:
            frames = self._generate(
                leased,
                spec,
                conditioning=conditioning,
                on_progress=on_progress,
                should_cancel=should_cancel,
            )
        return Clip(frames=frames, fps=spec.native_fps)


def build_runner(config: EngineConfig) -> PipelineRunner:
    """The real runner: loads checkpoints (or tiny dummy ones) on first use and keeps them.

    torch and diffusers are imported here, not at module level, so code that only needs the
    seam's types (the API, the task layer) does not pay for them."""
    from wanserve.engine import wan

    loader = wan.WanLoader(config)
    manager = ModelManager(loader, budget_bytes=loader.budget_bytes())
    return PipelineRunner(manager=manager, generate=wan.generate)
