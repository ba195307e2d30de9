"""Automatic dubbing: a sound track generated from the video's prompt.

`AudioGenerator` (in `request.py`) is the seam; `StableAudioGenerator` implements it with diffusers'
`StableAudioPipeline` (Stable Audio Open, or its tiny random build in dummy mode), loaded on
first use and kept resident.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import Any

import diffusers
import numpy as np
import torch
from diffusers import StableAudioPipeline

from wanserve.engine import dummy
from wanserve.engine.audio import AudioClip
from wanserve.engine.errors import Canceled, WeightsUnavailable
from wanserve.engine.request import CancelFn, EngineConfig
from wanserve.engine.wan import resolve_device
from wanserve.engine.weights import local_checkpoint

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DubbingConfig:
    checkpoint: str  # diffusers directory or hub id of a Stable Audio pipeline
    steps: int = 100
    guidance_scale: float = 7.0


class StableAudioGenerator:
    def __init__(self, engine: EngineConfig, config: DubbingConfig) -> None:
        self._engine = engine
        self._config = config
        self._lock = threading.Lock()
        self._pipe: Any = None

    def _load(self) -> Any:
        diffusers.utils.logging.disable_progress_bar()

        config = self._config
        try:
            location = local_checkpoint(
                self._engine, config.checkpoint, dummy=dummy.ensure_audio_checkpoint
            )
            pipe = StableAudioPipeline.from_pretrained(location, local_files_only=True)
        except (OSError, ValueError, RuntimeError) as exc:
            raise WeightsUnavailable(
                f"The dubbing model {config.checkpoint!r} could not be loaded: {exc}. Set "
                "WANSERVE_DUBBING_CHECKPOINT to a Stable Audio diffusers directory, or turn "
                "dubbing off (WANSERVE_DUBBING=false)."
            ) from exc
        pipe.to(resolve_device(self._engine.device))
        pipe.set_progress_bar_config(disable=True)
        return pipe

    def generate(
        self, prompt: str, *, seconds: float, seed: int, should_cancel: CancelFn
    ) -> AudioClip:
        with self._lock:
            if self._pipe is None:
                self._pipe = self._load()
            pipe = self._pipe

            def on_step(_step: int, _timestep: Any, _latents: Any) -> None:
                if should_cancel():
                    raise Canceled()

            with torch.inference_mode():
                audio = pipe(
                    prompt,
                    audio_end_in_s=seconds,
                    num_inference_steps=self._config.steps,
                    guidance_scale=self._config.guidance_scale,
                    generator=torch.Generator("cpu").manual_seed(seed),
                    callback=on_step,
                    callback_steps=1,
                ).audios[0]
            samples = audio.float().cpu().numpy().clip(-1.0, 1.0).astype(np.float32)
            return AudioClip(samples=samples, sample_rate=int(pipe.vae.sampling_rate))
