"""From generated frames to the delivered MP4: exact size, output frame rate, H.264.

The engine hands over frames at the checkpoint's native rate and denoising size; `render_mp4`
resizes them to the size asked for, retimes them to the model's output fps by nearest-frame
sampling (what ffmpeg's `fps` filter does), optionally watermarks them, and encodes H.264
yuv420p (BT.709, limited range) into a fast-start MP4. Frames are processed one output frame
at a time, so a long 1080p video never sits in memory at full size.

Both steps also run incrementally: a `Timeline` takes source frames in chunks as the engine
decodes them and gives the output frames each chunk completes, and an `Mp4Writer` encodes
them as they come, so encoding overlaps decoding and the video is never held whole.

Same frames and settings give byte-identical files: x264 runs with a fixed thread count and
the muxer writes no wall-clock metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
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


class Timeline:
    """Retiming, resizing and decoration over source frames fed in order, in chunks.

    `source_frames` (the total to come) must be known up front: the last output frames may
    repeat the last source frame, and nearest-frame sampling clamps to it."""

    def __init__(
        self,
        source_frames: int,
        *,
        source_fps: float,
        width: int,
        height: int,
        fps: int,
        duration: float,
        decorate: Callable[[Frame], Frame] | None = None,
    ) -> None:
        self._indices = retime_indices(
            source_frames, source_fps=source_fps, fps=fps, duration=duration
        )
        self._size = (width, height)
        self._decorate = decorate
        self._received = 0  # source frames fed so far
        self._next = 0  # next output frame
        self._last_index = -1
        self._prepared: Frame | None = None

    @property
    def done(self) -> bool:
        """Every output frame has been produced."""
        return self._next == len(self._indices)

    def feed(self, frames: Frames) -> Iterator[Frame]:
        """The output frames `frames` complete (each source frame is prepared once)."""
        start = self._received
        self._received += len(frames)
        indices = self._indices
        while self._next < len(indices) and indices[self._next] < self._received:
            index = indices[self._next]
            if index != self._last_index:
                # Indices never go back, so an index below `start` was the last one prepared.
                prepared = resize(frames[index - start], *self._size)
                if self._decorate is not None:
                    prepared = self._decorate(prepared)
                self._last_index, self._prepared = index, prepared
            assert self._prepared is not None
            yield self._prepared
            self._next += 1


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
    timeline = Timeline(
        len(frames),
        source_fps=source_fps,
        width=width,
        height=height,
        fps=fps,
        duration=duration,
        decorate=decorate,
    )
    return timeline.feed(frames)


class Mp4Writer:
    """An H.264 yuv420p MP4 (moov atom first) written as frames come, with an optional AAC
    track interleaved with them. Use as a context manager; `written` counts video frames."""

    def __init__(
        self,
        path: Path,
        *,
        width: int,
        height: int,
        fps: int,
        settings: EncodeSettings | None = None,
        audio: AudioClip | None = None,
    ) -> None:
        settings = settings or EncodeSettings()
        self.written = 0
        self._fps = fps
        self._closed = False
        self._container = av.open(str(path), "w", format="mp4", options={"movflags": "+faststart"})
        stream = self._container.add_stream(
            "libx264",
            rate=Fraction(fps),
            options={"crf": str(settings.crf), "preset": settings.preset},
        )
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        codec = stream.codec_context
        codec.thread_count = settings.threads
        codec.colorspace = codec.color_primaries = codec.color_trc = _BT709
        codec.color_range = _LIMITED_RANGE
        self._stream = stream
        # Every track is added before the first packet: the muxer writes its header then.
        self._track = _AudioTrack(self._container, audio) if audio is not None else None

    def write(self, frames: Iterable[Frame]) -> None:
        for frame in frames:
            video_frame = av.VideoFrame.from_ndarray(frame, format="rgb24").reformat(
                format="yuv420p", dst_colorspace="ITU709"
            )
            video_frame.pts = self.written
            self._container.mux(self._stream.encode(video_frame))
            self.written += 1
            if self._track is not None:
                self._track.write_until(self.written / self._fps)  # keep the tracks interleaved

    def finish(self) -> None:
        """Flush the encoders and finish the file (the muxer moves the moov atom first)."""
        self._container.mux(self._stream.encode(None))
        if self._track is not None:
            self._track.finish()
        self._close()

    def abandon(self) -> None:
        """Give the file up (it is incomplete): release the encoder and the descriptor."""
        self._close()

    def _close(self) -> None:
        if not self._closed:  # a failed `finish` is followed by `abandon`
            self._closed = True
            self._container.close()

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, exc_type: object, *_: object) -> None:
        if exc_type is None:
            self.finish()
        else:
            self.abandon()


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
    with Mp4Writer(
        path, width=width, height=height, fps=fps, settings=settings, audio=audio
    ) as writer:
        writer.write(frames)
    return writer.written


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
