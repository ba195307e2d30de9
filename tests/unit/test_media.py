"""MP4 output: exact size, output fps and duration, H.264 yuv420p, fast start, determinism,
and the watermark."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from wanserve.media.video import (
    EncodeSettings,
    Mp4Writer,
    Timeline,
    encode_mp4,
    output_frames,
    retime_indices,
)
from wanserve.media.watermark import Watermark


def frames(n: int, h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, h, w, 3), dtype=np.uint8)


def render(
    path: Path,
    src: np.ndarray,
    *,
    fps: int,
    duration: float,
    width: int,
    height: int,
    source_fps: float = 16,
    watermark: bool = False,
) -> int:
    decorate = Watermark(width, height) if watermark else None
    out = output_frames(
        src,
        source_fps=source_fps,
        width=width,
        height=height,
        fps=fps,
        duration=duration,
        decorate=decorate,
    )
    return encode_mp4(
        out, path, width=width, height=height, fps=fps, settings=EncodeSettings(preset="ultrafast")
    )


def test_retime_nearest_frame() -> None:
    idx = retime_indices(81, source_fps=16, fps=30, duration=5)
    assert len(idx) == 150
    assert idx[:6] == [0, 1, 1, 2, 2, 3]
    assert idx[-1] == 79 and max(idx) <= 80
    assert retime_indices(121, source_fps=24, fps=24, duration=5) == list(range(120))
    # Fewer source frames than needed: the last one holds.
    assert retime_indices(5, source_fps=16, fps=30, duration=1)[-1] == 4


@pytest.mark.parametrize(
    ("fps", "duration", "size"), [(30, 5, (832, 480)), (24, 2, (624, 624)), (24, 3, (480, 832))]
)
def test_mp4_properties(tmp_path: Path, fps: int, duration: int, size: tuple[int, int]) -> None:
    path = tmp_path / "v.mp4"
    w, h = size
    n = render(path, frames(duration * 16 + 1), fps=fps, duration=duration, width=w, height=h)
    assert n == fps * duration
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert s.codec_context.pix_fmt == "yuv420p"
        assert (s.width, s.height) == (w, h)
        assert s.average_rate == fps
        assert s.frames == fps * duration
        assert abs(float(s.duration * s.time_base) - duration) < 1e-6
        decoded = sum(1 for _ in c.decode(video=0))
        assert decoded == fps * duration
    head = path.read_bytes()[:64]
    assert head[4:8] == b"ftyp" and b"moov" in head  # moov before mdat: fast start


def test_same_frames_same_bytes(tmp_path: Path) -> None:
    a, b = tmp_path / "a.mp4", tmp_path / "b.mp4"
    for p in (a, b):
        render(p, frames(33, seed=3), fps=30, duration=2, width=320, height=192, watermark=True)
    assert a.read_bytes() == b.read_bytes()


def test_watermark_marks_only_the_lower_right() -> None:
    w, h = 832, 480
    base = np.full((h, w, 3), 60, dtype=np.uint8)
    marked = Watermark(w, h)(base)
    changed = np.argwhere((marked != base).any(axis=2))
    assert len(changed) > 200
    ys, xs = changed[:, 0], changed[:, 1]
    assert ys.min() > h * 0.8 and xs.min() > w * 0.6  # lower-right corner only
    assert marked.max() > 200  # light text
    assert (base == 60).all()  # the input frame is untouched


def test_watermark_fits_tiny_frames() -> None:
    out = Watermark(64, 48)(np.zeros((48, 64, 3), dtype=np.uint8))
    assert out.shape == (48, 64, 3)


@pytest.mark.parametrize("chunks", [[1, 4, 4, 4, 4], [17], [3, 0, 14]])
def test_frames_fed_in_chunks_make_the_same_mp4(tmp_path: Path, chunks: list[int]) -> None:
    """The streaming path (a `Timeline` fed per decoded chunk into an `Mp4Writer`) writes the
    same bytes as encoding the whole video, with retiming (16 -> 30 fps, the last source
    frame held), scaling and the watermark."""
    src = frames(17, seed=4)
    whole = tmp_path / "whole.mp4"
    render(whole, src, fps=30, duration=1.2, width=96, height=64, watermark=True)
    timeline = Timeline(
        len(src),
        source_fps=16,
        width=96,
        height=64,
        fps=30,
        duration=1.2,
        decorate=Watermark(96, 64),
    )
    streamed = tmp_path / "streamed.mp4"
    settings = EncodeSettings(preset="ultrafast")
    with Mp4Writer(streamed, width=96, height=64, fps=30, settings=settings) as writer:
        start = 0
        for size in chunks:
            writer.write(timeline.feed(src[start : start + size]))
            start += size
            assert not timeline.done or start == len(src)
    assert timeline.done and writer.written == 36
    assert streamed.read_bytes() == whole.read_bytes()


def test_a_timeline_short_of_frames_is_not_done() -> None:
    timeline = Timeline(9, source_fps=16, width=64, height=48, fps=16, duration=0.5)
    assert len(list(timeline.feed(frames(5)))) == 5
    assert not timeline.done
    assert len(list(timeline.feed(frames(4)))) == 3 and timeline.done
