"""`PipelineRunner`: the `Runner` seam over diffusers Wan pipelines kept resident by a
`ModelManager`, and `build_runner`, the one way to make the real one.

The engine knows nothing of HTTP, SQL, task ids or DashScope: it gets a `GenerationRequest`
(pixels, frames, steps, seeds, prompts, conditioning images), reports typed progress events,
polls a cancel check between steps and decoded chunks, and returns raw frames at the
checkpoint's native frame rate and denoising size. Resizing, retiming, watermarking and
encoding are the media layer's job.

This module does not import torch: `build_runner` imports `wan` when called, so composition
roots (and the API process) can name the runner without loading diffusers. `wan` does not
import this module, so there is no import circle (see `manager.py` for the graph).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

from wanserve.engine.adapters import AdapterDirectory
from wanserve.engine.lora import LoraLibrary
from wanserve.engine.manager import ManagerObserver, ModelManager
from wanserve.engine.options import CheckpointSpeed
from wanserve.engine.request import (
    CancelFn,
    Clip,
    EngineConfig,
    FrameSink,
    GenerationRequest,
    ProgressFn,
)

# wan.generate(leased, request, *, on_progress, should_cancel, on_frames=None, settings)
Generate = Callable[..., Clip]


class PipelineRunner:
    """`Runner` over diffusers Wan pipelines kept resident by a `ModelManager`."""

    def __init__(
        self,
        *,
        manager: ModelManager,
        generate: Generate,
        speed: Mapping[str, CheckpointSpeed] | None = None,
    ) -> None:
        self._manager = manager
        self._generate = generate
        self._speed = dict(speed or {})

    @property
    def manager(self) -> ModelManager:
        return self._manager

    def run(
        self, request: GenerationRequest, *, on_progress: ProgressFn, should_cancel: CancelFn
    ) -> Clip:
        with self._manager.lease(request.checkpoint, request.family, request.kind) as leased:
            return self._generate(
                leased,
                request,
                on_progress=on_progress,
                should_cancel=should_cancel,
                settings=self._speed.get(request.checkpoint, CheckpointSpeed()),
            )

    def stream(
        self,
        request: GenerationRequest,
        *,
        on_progress: ProgressFn,
        should_cancel: CancelFn,
        on_frames: FrameSink,
    ) -> Clip:
        """`StreamingRunner.stream`: frames go to `on_frames` as the VAE decodes them; the
        returned clip holds none, only the run's block evaluations."""
        with self._manager.lease(request.checkpoint, request.family, request.kind) as leased:
            return self._generate(
                leased,
                request,
                on_progress=on_progress,
                should_cancel=should_cancel,
                on_frames=on_frames,
                settings=self._speed.get(request.checkpoint, CheckpointSpeed()),
            )


def build_runner(
    config: EngineConfig, *, observer: ManagerObserver | None = None
) -> PipelineRunner:
    """The real runner: loads checkpoints (or tiny dummy ones) on first use and keeps them;
    `observer` hears of every load and eviction.

    torch and diffusers are imported here, not at module level, so code that only needs the
    seam's types (the API, the task layer) does not pay for them."""
    from wanserve.engine import wan

    loader = wan.WanLoader(config)
    manager = ModelManager(loader, budget_bytes=loader.budget_bytes(), observer=observer)
    generate: Generate = wan.generate
    if config.lora_dir is not None:
        library = LoraLibrary(AdapterDirectory(config.lora_dir), cache_size=config.lora_cache_size)
        generate = functools.partial(wan.generate, lora=library)
    return PipelineRunner(manager=manager, generate=generate, speed=config.speed)
