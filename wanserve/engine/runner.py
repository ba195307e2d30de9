"""The engine seam: `Runner.run(spec, ...) -> Clip`, and the resident-model runner behind it.

The engine knows nothing of HTTP, SQL or task ids. It gets a `GenerationSpec` and resolved
inputs, reports typed progress events, polls a cancel check between steps, and returns raw
frames at the checkpoint's native frame rate and denoising size. Resizing, retiming,
watermarking and encoding are the media layer's job.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from PIL import Image

from wanserve.catalog import Family, Kind
from wanserve.spec import GenerationSpec

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


PipelineKey = tuple[str, Family, Kind]
Loader = Callable[[str, Family, Kind], Any]


class ModelManager:
    """Keeps loaded pipelines resident between tasks; loads each at most once.

    A pipeline is used by one run at a time (`lease`), so two workers never interleave
    scheduler state on the same pipeline object.
    """

    def __init__(self, loader: Loader) -> None:
        self._loader = loader
        self._pipelines: dict[PipelineKey, Any] = {}
        self._locks: dict[PipelineKey, threading.Lock] = {}
        self._guard = threading.Lock()
        self.loads = 0  # how many times a checkpoint was actually loaded (for tests/metrics)

    def _lock_for(self, key: PipelineKey) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault(key, threading.Lock())

    def lease(self, source: str, family: Family, kind: Kind) -> _Lease:
        return _Lease(self, (source, family, kind))

    def _acquire(self, key: PipelineKey) -> Any:
        lock = self._lock_for(key)
        lock.acquire()
        try:
            pipe = self._pipelines.get(key)
            if pipe is None:
                pipe = self._loader(*key)
                self._pipelines[key] = pipe
                self.loads += 1
            return pipe
        except BaseException:
            lock.release()
            raise

    def _release(self, key: PipelineKey) -> None:
        self._lock_for(key).release()

    def resident(self) -> list[PipelineKey]:
        with self._guard:
            return list(self._pipelines)


class _Lease:
    def __init__(self, manager: ModelManager, key: PipelineKey) -> None:
        self._manager = manager
        self._key = key

    def __enter__(self) -> Any:
        return self._manager._acquire(self._key)

    def __exit__(self, *exc: object) -> None:
        self._manager._release(self._key)


Generate = Callable[..., Frames]


class PipelineRunner:
    """`Runner` over diffusers Wan pipelines kept resident by a `ModelManager`."""

    def __init__(self, *, manager: ModelManager, generate: Generate) -> None:
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
        with self._manager.lease(spec.checkpoint, spec.family, spec.kind) as pipe:
            frames = self._generate(
                pipe,
                spec,
                conditioning=conditioning,
                on_progress=on_progress,
                should_cancel=should_cancel,
            )
        return Clip(frames=frames, fps=spec.native_fps)


def build_runner(config: EngineConfig) -> PipelineRunner:
    """The real runner: loads checkpoints (or tiny dummy ones) on first use, keeps them.

    torch and diffusers are imported here, not at module level, so code that only needs the
    seam's types (the API, the task layer) does not pay for them."""
    from wanserve.engine import wan

    def load(source: str, family: Family, kind: Kind) -> Any:
        return wan.load_pipeline(source, family, kind, config=config)

    return PipelineRunner(manager=ModelManager(load), generate=wan.generate)
