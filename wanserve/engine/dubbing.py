"""Automatic dubbing: a sound track generated from the video's prompt.

`AudioGenerator` (in `runner.py`) is the seam; `StableAudioGenerator` implements it with diffusers'
`StableAudioPipeline` (Stable Audio Open, or its tiny random build in dummy mode), loaded on
first use and kept resident.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wanserve.engine import dummy
from wanserve.engine.runner import CancelFn, GenerationCancelled
from wanserve.errors import ModelUnavailable
from wanserve.media.audio import AudioClip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DubbingConfig:
    weights: str  # "auto" | "dummy"
    checkpoint: str  # diffusers directory or hub id of a Stable Audio pipeline
    dummy_root: Path
    device: str = "auto"
    steps: int = 100
    guidance_scale: float = 7.0
    allow_download: bool = True
    hf_cache_dir: Path | None = None


class StableAudioGenerator:
    def __init__(self, config: DubbingConfig) -> None:
        self._config = config
        self._lock = threading.Lock()
        self._pipe: Any = None

    def _load(self) -> Any:
        import diffusers
        from diffusers import StableAudioPipeline

        diffusers.utils.logging.disable_progress_bar()

        config = self._config
        if config.weights == "dummy":
            location: Any = dummy.ensure_audio_checkpoint(config.dummy_root)
            common: dict[str, Any] = {"local_files_only": True}
        else:
            path = Path(config.checkpoint).expanduser()
            location = path if path.is_dir() else config.checkpoint
            common = {"local_files_only": path.is_dir() or not config.allow_download}
            if config.hf_cache_dir is not None:
                common["cache_dir"] = str(config.hf_cache_dir)
        try:
            pipe = StableAudioPipeline.from_pretrained(location, **common)
        except (OSError, ValueError, RuntimeError) as exc:
            raise ModelUnavailable(
                f"The dubbing model {config.checkpoint!r} could not be loaded: {exc}. Set "
                "WANSERVE_DUBBING_CHECKPOINT to a Stable Audio diffusers directory, or turn "
                "dubbing off (WANSERVE_DUBBING=false)."
            ) from exc
        device = config.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        pipe.to(device)
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
                    raise GenerationCancelled()

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
