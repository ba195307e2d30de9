"""Input videos: decode untrusted MP4 or MOV bytes safely into RGB frames at a chosen rate.

Accepted: MP4 and MOV (DashScope's list), at most `max_bytes`, with a frame size and a
duration inside `VideoLimits`. Everything that can be refused from the headers (container,
size, pixels, duration) is refused before a single frame is decoded, and the decoding itself
is bounded: it stops once the last output frame is known, keeps one source frame at a time,
converts (and resizes) only the frames it uses, and gives up on a stream that yields far more
frames than its duration and rate allow (a lying header cannot make it decode forever).

Only the MP4/MOV demuxer ever reads the bytes: the container is recognised by its first box
before FFmpeg sees it, so FFmpeg never probes other formats (playlists and other demuxers
that can open further files or URLs are never reached), and data references to outside
files stay disabled. Every refusal is an `InvalidParameter` naming the request field.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction

import av
import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageOps

from wanserve.errors import InvalidParameter

# The MP4/MOV demuxer's names are "mov,mp4,m4a,3gp,3g2,mj2": one demuxer for the family.
FORMATS = {"mp4": "video/mp4", "mov": "video/quicktime"}

# The box types an MP4 or MOV file can start with (ISO/IEC 14496-12 and QuickTime).
_FIRST_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid", b"styp"}
# Other files clients plausibly send, named in the refusal (by their leading bytes).
_OTHER_KINDS = (
    (b"\x1a\x45\xdf\xa3", "a WebM or Matroska video"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"GIF8", "a GIF image"),
    (b"ID3", "an MP3 audio file"),
    (b"OggS", "an Ogg file"),
    (b"FLV", "an FLV video"),
)
_RIFF_KINDS = {b"WAVE": "a WAV audio file", b"AVI ": "an AVI video", b"WEBP": "a WEBP image"}
# No dref-box references to other files, relative or absolute (both are FFmpeg's defaults).
_DEMUXER_OPTIONS = {"enable_drefs": "0", "use_absolute_path": "0"}
# Frame times are rationals turned to floats: comparisons allow this much rounding.
_EPSILON = 1e-6
_FALLBACK_RATE = 30.0  # a stream that declares no frame rate


@dataclass(frozen=True)
class VideoLimits:
    max_bytes: int = 100 * 1024 * 1024
    min_seconds: float = 0.0  # callers set it per input kind (e.g. 1 or 2 s)
    max_seconds: float = 30.0
    min_side: int = 16
    max_side: int = 4096
    max_pixels: int = 4096 * 2304  # per frame, checked from the stream header before decoding


@dataclass(frozen=True)
class VideoClip:
    frames: NDArray[np.uint8]  # (n, height, width, 3) RGB, at `fps`
    fps: float

    @property
    def seconds(self) -> float:
        return len(self.frames) / self.fps

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


@dataclass(frozen=True)
class _Header:
    width: int
    height: int
    seconds: float
    rate: float  # the declared (or guessed) source frame rate


def probe_video(
    data: bytes, *, field: str, limits: VideoLimits = VideoLimits()
) -> tuple[int, int, float]:
    """(width, height, seconds) from the container and stream headers, every limit checked.

    The duration is the video stream's, else the container's; a file that declares neither
    is demuxed (packets read, none decoded) to find it."""
    with _opened(data, field=field, limits=limits) as container:
        header = _header(container, field=field, limits=limits)
    return header.width, header.height, header.seconds


def decode_video(
    data: bytes,
    *,
    field: str,
    limits: VideoLimits = VideoLimits(),
    fps: float,
    max_seconds: float | None = None,
    size: tuple[int, int] | None = None,
) -> VideoClip:
    """The video's first `min(seconds, max_seconds)` seconds as frames at `fps`.

    `probe_video`'s checks come first. Output frame i shows the latest source frame whose
    time (counted from the first frame) is at most i / fps; there are
    floor(min(seconds, max_seconds) * fps) of them, at least one. With `size` (width, height)
    each frame is scaled to cover it and cropped evenly as it is decoded (as
    `wanserve.media.image.fit` does); without, frames keep the stream's size. Rotation
    metadata is ignored.

    `fps`, `max_seconds` and `size` are the caller's (not the client's): a nonsensical value
    is a `ValueError`."""
    if not fps > 0:
        raise ValueError(f"fps must be positive, not {fps}")
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be positive, not {max_seconds}")
    if size is not None and min(size) < 1:
        raise ValueError(f"size must be positive, not {size}")
    with _opened(data, field=field, limits=limits) as container:
        header = _header(container, field=field, limits=limits)
    # `_header` may have demuxed the whole file: decode from a fresh start.
    with _opened(data, field=field, limits=limits) as container:
        stream = _video_stream(container, field=field)
        return _decode(
            container,
            stream,
            header,
            field=field,
            fps=fps,
            seconds=min(header.seconds, max_seconds or header.seconds),
            size=size or (header.width, header.height),
        )


@contextmanager
def _opened(
    data: bytes, *, field: str, limits: VideoLimits
) -> Iterator[av.container.InputContainer]:
    """The MP4/MOV container in `data`; an FFmpeg or data error inside becomes a refusal."""
    if len(data) > limits.max_bytes:
        raise InvalidParameter(f"{field} is larger than {limits.max_bytes // (1024 * 1024)} MB.")
    refusal = _sniff(data)
    if refusal is not None:
        raise InvalidParameter(f"{field} {refusal}")
    try:
        with av.open(
            io.BytesIO(data), mode="r", format="mov", options=_DEMUXER_OPTIONS
        ) as container:
            name = container.format.name
            if not any(part in FORMATS for part in name.split(",")):
                raise InvalidParameter(f"{field} is a {name} file; send an MP4 or MOV video.")
            yield container
    except InvalidParameter:
        raise
    except (av.error.FFmpegError, ValueError, IndexError, OSError, EOFError):
        raise InvalidParameter(
            f"{field} could not be decoded as an MP4 or MOV video: the file is corrupt or "
            "truncated."
        ) from None


def _sniff(data: bytes) -> str | None:
    """Why `data` is plainly no MP4 or MOV file (None: it may be one)."""
    if len(data) >= 8 and data[4:8] in _FIRST_BOXES:
        return None
    if not data:
        return "is empty."
    kind = _RIFF_KINDS.get(data[8:12], "a RIFF file") if data[:4] == b"RIFF" else None
    for magic, other in _OTHER_KINDS:
        if kind is None and data.startswith(magic):
            kind = other
    if kind is None:
        return "is not an MP4 or MOV video."
    return f"is {kind}; send an MP4 or MOV video."


def _video_stream(
    container: av.container.InputContainer, *, field: str
) -> av.video.stream.VideoStream:
    """The first real video stream (cover art, an attached picture, does not count)."""
    for stream in container.streams.video:
        if not stream.disposition & av.stream.Disposition.attached_pic:
            if stream.codec_context is None:
                raise InvalidParameter(f"{field} uses a video codec this server cannot decode.")
            return stream
    raise InvalidParameter(f"{field} has no video stream.")


def _header(container: av.container.InputContainer, *, field: str, limits: VideoLimits) -> _Header:
    stream = _video_stream(container, field=field)
    width, height = stream.codec_context.width, stream.codec_context.height
    if width <= 0 or height <= 0:
        raise InvalidParameter(f"{field} does not declare its frame size.")
    if width * height > limits.max_pixels:
        raise InvalidParameter(
            f"{field} is {width}x{height} pixels; at most {limits.max_pixels} pixels per frame "
            "are accepted."
        )
    if min(width, height) < limits.min_side or max(width, height) > limits.max_side:
        raise InvalidParameter(
            f"{field} is {width}x{height} pixels; each side must be {limits.min_side} to "
            f"{limits.max_side}."
        )
    rate = _rate(stream)
    seconds = _declared_seconds(container, stream)
    if seconds is None:
        seconds = _demuxed_seconds(container, stream, rate=rate, field=field, limits=limits)
    if seconds <= 0:
        raise InvalidParameter(f"{field} holds no video frames.")
    if seconds > limits.max_seconds + _EPSILON:
        raise InvalidParameter(
            f"{field} is {seconds:.1f} s long; at most {limits.max_seconds:g} seconds are accepted."
        )
    if seconds < limits.min_seconds - _EPSILON:
        raise InvalidParameter(
            f"{field} is {seconds:.1f} s long; at least {limits.min_seconds:g} seconds are needed."
        )
    return _Header(width=width, height=height, seconds=seconds, rate=rate)


def _rate(stream: av.video.stream.VideoStream) -> float:
    for rate in (stream.average_rate, stream.guessed_rate, stream.base_rate):
        if rate is not None and 0 < rate < 1000:
            return float(rate)
    return _FALLBACK_RATE


def _declared_seconds(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream
) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / av.time_base
    return None


def _demuxed_seconds(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    *,
    rate: float,
    field: str,
    limits: VideoLimits,
) -> float:
    """The video track's length found by reading its packets (none is decoded)."""
    time_base = stream.time_base or Fraction(1, 90000)
    first: int | None = None
    end = 0.0
    packets = 0
    for packet in container.demux(stream):
        if packet.size == 0:  # the demuxer's closing flush packet
            continue
        packets += 1
        if packet.pts is None:
            end = max(end, packets / rate)
        else:
            first = packet.pts if first is None else min(first, packet.pts)
            length = packet.duration or 0
            end = max(end, float((packet.pts - first + length) * time_base))
        if end > limits.max_seconds + 1:  # long enough to refuse: read no further
            break
    return end


def _decode(
    container: av.container.InputContainer,
    stream: av.video.stream.VideoStream,
    header: _Header,
    *,
    field: str,
    fps: float,
    seconds: float,
    size: tuple[int, int],
) -> VideoClip:
    count = max(1, math.floor(seconds * fps + _EPSILON))
    width, height = size
    frames = np.empty((count, height, width, 3), dtype=np.uint8)
    # A stream that yields this many frames without reaching `seconds` has lying timestamps.
    budget = math.ceil(seconds * max(2 * header.rate, 120.0)) + 120
    step = 1 / header.rate
    max_pixels = header.width * header.height
    stream.codec_context.thread_type = "AUTO"
    done = 0  # output frames filled
    origin: float | None = None
    latest_time = 0.0
    latest: av.VideoFrame | None = None
    latest_rgb: NDArray[np.uint8] | None = None  # `latest`, converted once when first used
    for decoded, frame in enumerate(container.decode(stream), start=1):
        if decoded > budget:
            raise InvalidParameter(
                f"{field} holds more frames than its duration and frame rate allow; the file "
                "is malformed."
            )
        if frame.pts is None or frame.time_base is None:
            time = latest_time + step if latest is not None else 0.0
        else:
            stamp = float(frame.pts * frame.time_base)
            origin = stamp if origin is None else origin
            time = stamp - origin
        # Output frames before this frame's time show the latest one before it.
        while done < count and latest is not None and done / fps < time - _EPSILON:
            if latest_rgb is None:
                latest_rgb = _rgb(latest, size, field=field, max_pixels=max_pixels)
            frames[done] = latest_rgb
            done += 1
        if done == count:
            break
        latest, latest_rgb, latest_time = frame, None, time
    if latest is None:
        raise InvalidParameter(f"{field} holds no video frames that could be decoded.")
    if done < count:
        # The stream ended: the rest show the last frame, unless frames are plainly missing.
        covered = latest_time + step
        if covered < seconds - max(0.5, 0.1 * seconds):
            raise InvalidParameter(
                f"{field} declares {header.seconds:.1f} s of video but only {covered:.1f} s "
                "could be decoded; the file is truncated or corrupt."
            )
        if latest_rgb is None:
            latest_rgb = _rgb(latest, size, field=field, max_pixels=max_pixels)
        frames[done:] = latest_rgb
    return VideoClip(frames=frames, fps=fps)


def _rgb(
    frame: av.VideoFrame, size: tuple[int, int], *, field: str, max_pixels: int
) -> NDArray[np.uint8]:
    """`frame` as RGB at exactly `size`: scaled to cover it, the overflow cropped evenly."""
    # The header's size was checked; a stream can still change size midway.
    if frame.width * frame.height > max_pixels or min(frame.width, frame.height) < 1:
        raise InvalidParameter(
            f"{field} changes its frame size to {frame.width}x{frame.height} midway; send a "
            "video of one frame size."
        )
    rgb = np.asarray(frame.to_ndarray(format="rgb24"), dtype=np.uint8)
    if (frame.width, frame.height) == size:
        return rgb
    image = ImageOps.fit(Image.fromarray(rgb), size, method=Image.Resampling.BILINEAR)
    return np.asarray(image, dtype=np.uint8)
