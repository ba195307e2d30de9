"""Sound as the engine makes and takes it: `AudioClip`, planar float samples at a rate.

A torch-free leaf that imports nothing from `wanserve` (numpy only): the engine's audio seams
(`AudioGenerator`, `AudioDrivenVideo` in `request.py`) and Stable Audio (`dubbing.py`) speak
it, and the media layer (`media/audio.py` decodes and fits input tracks, `media/video.py`
muxes them) uses the same type. Checking a client's file against the seeds' limits, with
their error codes, is the media layer's job, not the engine's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class AudioClip:
    samples: NDArray[np.float32]  # (channels, samples), planar float in [-1, 1]
    sample_rate: int

    @property
    def channels(self) -> int:
        return int(self.samples.shape[0])

    @property
    def seconds(self) -> float:
        return float(self.samples.shape[1] / self.sample_rate)
