"""From generated frames to the delivered MP4: exact size, output frame rate, H.264.

The engine hands over frames at the checkpoint's native rate and denoising size; `render_mp4`
resizes them to the size asked for, retimes them to the model's output fps by nearest-frame
sampling (what ffmpeg's `fps` filter does), optionally watermarks them, and encodes H.264
yuv420p (BT.709, limited range) into a fast-start MP4. Frames are processed one output frame
at a time, so a long 1080p video never sits in memory at full size.

Same frames and settings give byte-identical files: x264 runs with a fixed thread count and
the muxer writes no wall-clock metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from numpy.typing import NDArray
from PIL import Image

from wanserve.media.audio import AudioClip

Frame = NDArray[np.uint8]  # (height, width, 3) RGB
Frames = NDArray[np.uint8]  # (frames, height, width, 3) RGB

# FFmpeg enum values: AVCOL_SPC/PRI/TRC_BT709 = 1, AVCOL_RANGE_MPEG = 1.
_BT709 = 1
_LIMITED_RANGE = 1


@dataclass(frozen=True)
class EncodeSettings:
    crf: int = 20
    preset: str = "veryfast"
    threads: int = 2  # fixed, so output bytes do not depend on the machine's core count


def retime_indices(
    source_frames: int, *, source_fps: float, fps: int, duration: float
) -> list[int]:
    """For each output frame at `fps` over `duration` s, the nearest source frame's index."""
    count = round(duration * fps)
    last = source_frames - 1
    return [min(last, round(i * source_fps / fps)) for i in range(count)]


def resize(frame: Frame, width: int, height: int) -> Frame:
    if frame.shape[1] == width and frame.shape[0] == height:
        return frame
    image = Image.fromarray(frame).resize((width, height), Image.Resampling.LANCZOS)
    return np.asarray(image, dtype=np.uint8)


def output_frames(
    frames: Frames,
    *,
    source_fps: float,
    width: int,
    height: int,
    fps: int,
    duration: float,
    decorate: Callable[[Frame], Frame] | None = None,
) -> Iterator[Frame]:
    """The output video's frames, produced lazily; each source frame is prepared once."""
    last_index, prepared = -1, None
    for index in retime_indices(len(frames), source_fps=source_fps, fps=fps, duration=duration):
        if index != last_index:
            prepared = resize(frames[index], width, height)
            if decorate is not None:
                prepared = decorate(prepared)
            last_index = index
        assert prepared is not None
        yield prepared


def encode_mp4(
    frames: Iterator[Frame],
    path: Path,
    *,
    width: int,
    height: int,
    fps: int,
    settings: EncodeSettings | None = None,
    audio: AudioClip | None = None,
) -> int:
    """Write `frames` as H.264 yuv420p MP4 with the moov atom first, and `audio` (if any) as
    AAC interleaved with it. Returns the number of video frames written."""
    settings = settings or EncodeSettings()
    written = 0
    with av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"}) as container:
        stream = container.add_stream(
            "libx264",
            rate=Fraction(fps),
            options={"crf": str(settings.crf), "preset": settings.preset},
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        codec = stream.codec_context
        codec.thread_count = settings.threads
        codec.colorspace = codec.color_primaries = codec.color_trc = _BT709
        codec.color_range = _LIMITED_RANGE
        track = _AudioTrack(container, audio) if audio is not None else None
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="ITU709"
            )
            video_frame.pts = written
            container.mux(stream.encode(video_frame))
            written += 1
            if track is not None:
                track.write_until(written / fps)  # keep the tracks interleaved
        container.mux(stream.encode(None))
        if track is not None:
            track.finish()
    return written


class _AudioTrack:
    """An AAC stream fed in encoder-sized frames, in step with the video."""

    _FRAME = 1024  # AAC samples per frame

    def __init__(self, container: av.container.OutputContainer, clip: AudioClip) -> None:
        self._container = container
        self._clip = clip
        layout = "mono" if clip.channels == 1 else "stereo"
        self._stream = container.add_stream("aac", rate=clip.sample_rate, layout=layout)
        self._layout = layout
        self._next = 0  # next sample to encode

    def write_until(self, seconds: float) -> None:
        end = min(self._clip.samples.shape[1], round(seconds * self._clip.sample_rate))
        while self._next < end:
            stop = min(self._next + self._FRAME, self._clip.samples.shape[1])
            chunk = np.ascontiguousarray(self._clip.samples[:, self._next : stop])
            frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=self._layout)
            frame.sample_rate = self._clip.sample_rate
            frame.pts = self._next
            self._container.mux(self._stream.encode(frame))
            self._next = stop

    def finish(self) -> None:
        self.write_until(self._clip.seconds)
        self._container.mux(self._stream.encode(None))
