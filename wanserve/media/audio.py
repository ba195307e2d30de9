"""Input audio tracks: decode WAV or MP3 safely, check the seeds' limits, fit to the video.

The seeds: WAV or MP3, 3 to 30 seconds, at most 15 MB; audio longer than the video is cut to
the video's duration, and shorter audio leaves the rest of the video silent (we pad the track
with silence, so the track and the video end together).

`AudioClip` itself is the engine's (`engine/audio.py`, which imports no server error); it is
re-exported here under its old import path.
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import av
import numpy as np
from numpy.typing import NDArray

from wanserve.engine.audio import AudioClip as AudioClip
from wanserve.errors import InvalidParameter

FORMATS = {"wav": "WAV", "mp3": "MP3"}


@dataclass(frozen=True)
class AudioLimits:
    max_bytes: int = 15 * 1024 * 1024
    min_seconds: float = 3.0
    max_seconds: float = 30.0


def decode_audio(data: bytes, *, field: str, limits: AudioLimits | None = None) -> AudioClip:
    limits = limits or AudioLimits()
    if len(data) > limits.max_bytes:
        raise InvalidParameter(f"{field} is larger than {limits.max_bytes // (1024 * 1024)} MB.")
    try:
        with av.open(io.BytesIO(data), mode="r") as container:
            name = container.format.name
            if not any(part in FORMATS for part in name.split(",")):
                raise InvalidParameter(f"{field} is {name} audio; send WAV or MP3.")
            if not container.streams.audio:
                raise InvalidParameter(f"{field} has no audio stream.")
            stream = container.streams.audio[0]
            layout = "mono" if stream.channels == 1 else "stereo"
            resampler = av.AudioResampler(format="fltp", layout=layout, rate=stream.rate)
            cap = int((limits.max_seconds + 1) * stream.rate)
            parts: list[NDArray[np.float32]] = []
            total = 0
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    chunk = out.to_ndarray().astype(np.float32, copy=False)
                    parts.append(chunk)
                    total += chunk.shape[1]
                if total > cap:  # long enough to refuse; stop decoding
                    break
            rate = stream.rate
    except InvalidParameter:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, OSError):
        raise InvalidParameter(f"{field} could not be decoded as WAV or MP3 audio.") from None
    if not parts:
        raise InvalidParameter(f"{field} holds no audio samples.")
    clip = AudioClip(samples=np.concatenate(parts, axis=1), sample_rate=rate)
    if not limits.min_seconds <= clip.seconds <= limits.max_seconds:
        raise InvalidParameter(
            f"{field} is {clip.seconds:.1f} s long; audio must last {limits.min_seconds:g} to "
            f"{limits.max_seconds:g} seconds."
        )
    return clip


def fit_audio(clip: AudioClip, seconds: float) -> AudioClip:
    """Exactly `seconds` long: cut, or padded with silence at the end."""
    target = round(seconds * clip.sample_rate)
    samples = clip.samples[:, :target]
    if samples.shape[1] < target:
        pad = np.zeros((clip.channels, target - samples.shape[1]), dtype=np.float32)
        samples = np.concatenate([samples, pad], axis=1)
    return AudioClip(samples=np.ascontiguousarray(samples), sample_rate=clip.sample_rate)
