"""Decoding untrusted input videos: probing, resampling by timestamp, cutting, resizing, and a
refusal (never a crash) for every file that is not a usable MP4 or MOV video."""

from __future__ import annotations

import io
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from tests.audio_files import encoded, wav
from tests.video_files import STEP, video
from wanserve.errors import InvalidParameter
from wanserve.media.clips import VideoClip, VideoLimits, decode_video, probe_video
from wanserve.media.image import fit


def indices(clip: VideoClip) -> list[int]:
    """The source frame each output frame shows (read back from its grey level)."""
    levels = clip.frames.reshape(len(clip.frames), -1).mean(axis=1)
    found = [round(level / STEP) for level in levels]
    # Each frame is flat: every pixel is close to the level that names it.
    for frame, index in zip(clip.frames, found, strict=True):
        assert np.abs(frame.astype(int) - index * STEP).max() <= 6
    return found


CLIP = video()


def test_probe_reads_the_headers() -> None:
    width, height, seconds = probe_video(CLIP, field="video_url")
    assert (width, height) == (64, 48) and seconds == pytest.approx(2.0)


def test_decode_at_the_source_rate_gives_every_frame() -> None:
    clip = decode_video(CLIP, field="video_url", fps=12)
    assert clip.frames.shape == (24, 48, 64, 3) and clip.frames.dtype == np.uint8
    assert indices(clip) == list(range(24))
    assert clip.fps == 12 and clip.seconds == pytest.approx(2.0) and clip.size == (64, 48)


def test_half_the_rate_takes_every_other_frame() -> None:
    clip = decode_video(CLIP, field="video_url", fps=6)
    assert indices(clip) == list(range(0, 24, 2))


def test_an_uneven_rate_takes_the_latest_frame_at_or_before_each_time() -> None:
    # Output frame i at i/5 s shows source frame floor(12 * i / 5).
    clip = decode_video(CLIP, field="video_url", fps=5)
    assert indices(clip) == [12 * i // 5 for i in range(10)]


def test_a_higher_rate_repeats_frames() -> None:
    clip = decode_video(CLIP, field="video_url", fps=24)
    assert indices(clip) == [i // 2 for i in range(48)]


def test_max_seconds_cuts_the_clip() -> None:
    clip = decode_video(CLIP, field="video_url", fps=12, max_seconds=1.0)
    assert indices(clip) == list(range(12))
    # A cut longer than the video changes nothing.
    assert len(decode_video(CLIP, field="video_url", fps=12, max_seconds=9.0).frames) == 24


def test_at_least_one_frame() -> None:
    clip = decode_video(CLIP, field="video_url", fps=0.25)
    assert indices(clip) == [0]


@pytest.mark.parametrize("size", [(32, 32), (40, 20), (128, 96), (100, 30)])
def test_size_gives_exact_frames(size: tuple[int, int]) -> None:
    clip = decode_video(CLIP, field="video_url", fps=6, size=size)
    assert clip.frames.shape == (12, size[1], size[0], 3) and clip.size == size
    assert indices(clip) == list(range(0, 24, 2))


def test_resizing_covers_and_crops_evenly_like_images() -> None:
    data = video(pattern=True)
    full = decode_video(data, field="video_url", fps=12).frames[5]
    small = decode_video(data, field="video_url", fps=12, size=(32, 32)).frames[5]
    expected = np.asarray(fit(Image.fromarray(full), 32, 32))
    # Scaled by 2/3 to 43x32, cropped by ~5 px each side: red shrinks to the first ~5 columns.
    assert np.abs(small.astype(int) - expected.astype(int)).mean() < 4
    assert small[:, :4, 0].min() > 200 and small[:, 8:, 0].max() < 100


def test_mov_and_mpeg4_are_accepted() -> None:
    mov = video(fmt="mov")
    assert probe_video(mov, field="video_url")[:2] == (64, 48)
    assert indices(decode_video(mov, field="video_url", fps=6)) == list(range(0, 24, 2))
    mpeg4 = video(codec="mpeg4")
    assert indices(decode_video(mpeg4, field="video_url", fps=6)) == list(range(0, 24, 2))


def test_fast_start_mp4(tmp_path: Path) -> None:
    data = video(path=tmp_path / "a.mp4", options={"movflags": "+faststart"})
    assert data[4:8] == b"ftyp" and data.find(b"moov") < data.find(b"mdat")
    assert indices(decode_video(data, field="video_url", fps=12)) == list(range(24))


def test_fragmented_mp4_starts_at_its_first_frame() -> None:
    # No edit list: the first frame's timestamp is not zero; times count from it.
    data = video(options={"movflags": "frag_keyframe+empty_moov"})
    assert probe_video(data, field="video_url")[2] == pytest.approx(2.0)
    assert indices(decode_video(data, field="video_url", fps=6)) == list(range(0, 24, 2))


def zero_frames() -> bytes:
    buf = io.BytesIO()
    with av.open(buf, "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=12)
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        container.start_encoding()
    return buf.getvalue()


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


REFUSED = [
    pytest.param(CLIP, VideoLimits(max_bytes=1000), "larger than 0 MB", id="bytes"),
    pytest.param(CLIP, VideoLimits(max_seconds=1.5), "2.0 s long; at most 1.5 seconds", id="long"),
    pytest.param(CLIP, VideoLimits(min_seconds=3), "2.0 s long; at least 3 seconds", id="short"),
    pytest.param(
        CLIP, VideoLimits(min_side=50), "64x48 pixels; each side must be 50 to", id="side"
    ),
    pytest.param(CLIP, VideoLimits(max_side=60), "each side must be 16 to 60", id="big-side"),
    pytest.param(
        CLIP, VideoLimits(max_pixels=64 * 48 - 1), "at most 3071 pixels per frame", id="pixels"
    ),
    pytest.param(video(width=64, height=10), VideoLimits(), "64x10 pixels", id="thin"),
    pytest.param(b"", VideoLimits(), "is empty", id="empty"),
    pytest.param(
        np.random.default_rng(0).bytes(5000), VideoLimits(), "is not an MP4 or MOV", id="random"
    ),
    pytest.param(
        b"\x00\x00\x00\x18ftypisom" + np.random.default_rng(1).bytes(5000),
        VideoLimits(),
        "could not be decoded as an MP4 or MOV video",
        id="random-after-ftyp",
    ),
    pytest.param(png(), VideoLimits(), "is a PNG image; send an MP4 or MOV", id="png"),
    pytest.param(wav(1.0), VideoLimits(), "is a WAV audio file", id="wav"),
    pytest.param(encoded(1.0), VideoLimits(), "is an MP3 audio file", id="mp3"),
    pytest.param(
        encoded(1.0, fmt="mp4", codec="aac"), VideoLimits(), "has no video stream", id="m4a"
    ),
    pytest.param(zero_frames(), VideoLimits(), "has no video stream", id="zero-frames"),
    pytest.param(CLIP[: len(CLIP) // 2], VideoLimits(), "corrupt or truncated", id="truncated"),
    pytest.param(
        video(fmt="webm", codec="libvpx"), VideoLimits(), "is a WebM or Matroska video", id="webm"
    ),
    pytest.param(
        video(fmt="matroska"), VideoLimits(), "is a WebM or Matroska video", id="matroska"
    ),
    pytest.param(video(fmt="avi", codec="mpeg4"), VideoLimits(), "is an AVI video", id="avi"),
]


@pytest.mark.parametrize(("data", "limits", "message"), REFUSED)
def test_refused_videos(data: bytes, limits: VideoLimits, message: str) -> None:
    with pytest.raises(InvalidParameter, match=r"input.media\[1\] (is|has|could|holds)") as probed:
        probe_video(data, field="input.media[1]", limits=limits)
    assert message in probed.value.message
    with pytest.raises(InvalidParameter) as decoded:
        decode_video(data, field="input.media[1]", limits=limits, fps=6, size=(32, 32))
    assert message in decoded.value.message


@pytest.mark.parametrize("keep", [0.25, 0.5, 0.75, 0.9])
def test_a_fast_start_file_cut_short_is_refused(tmp_path: Path, keep: float) -> None:
    # The header (moov first) is whole and passes the probe; the frames are missing.
    data = video(seconds=4.0, path=tmp_path / "a.mp4", options={"movflags": "+faststart"})
    cut = data[: int(len(data) * keep)]
    with pytest.raises(InvalidParameter, match=r"video_url (declares|could not be decoded)"):
        decode_video(cut, field="video_url", fps=6)


def test_a_cut_short_file_is_fine_when_the_frames_used_are_whole(tmp_path: Path) -> None:
    data = video(seconds=4.0, path=tmp_path / "a.mp4", options={"movflags": "+faststart"})
    with av.open(io.BytesIO(data), "r") as container:
        stream = container.streams.video[0]
        # Cut where the frame at 2 s starts: the first second is whole, with frames to spare.
        starts = {p.pts * stream.time_base: p.pos for p in container.demux(stream) if p.pts}
    cut = data[: starts[2]]
    clip = decode_video(cut, field="video_url", fps=6, max_seconds=1.0)
    assert indices(clip) == list(range(0, 12, 2))


def test_caller_errors_are_not_the_clients() -> None:
    with pytest.raises(ValueError, match="fps"):
        decode_video(CLIP, field="video_url", fps=0)
    with pytest.raises(ValueError, match="size"):
        decode_video(CLIP, field="video_url", fps=6, size=(0, 10))


def test_damaged_files_are_refused_or_decoded_never_a_crash() -> None:
    rng = np.random.default_rng(7)
    damaged = [CLIP[:cut] for cut in range(0, len(CLIP), len(CLIP) // 40)]
    for _ in range(60):
        data = bytearray(CLIP)
        for at in rng.integers(0, len(data), size=int(rng.integers(1, 12))):
            data[at] = int(rng.integers(0, 256))
        damaged.append(bytes(data))
    refused = 0
    for data in damaged:
        try:
            clip = decode_video(data, field="video_url", fps=6, size=(32, 24))
        except InvalidParameter:
            refused += 1
        else:
            # Damaged timing tables may change the length; within the limits, never the size.
            assert clip.frames.shape[1:] == (24, 32, 3) and 1 <= len(clip.frames) <= 6 * 30
    # Every cut is refused but those in the file's trailing metadata box (the moov comes last).
    assert refused >= 35
