"""Input audio: WAV and MP3, 3-30 s, 15 MB; cut or padded to the video; muxed as AAC."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tests.audio_files import encoded, wav
from wanserve.errors import InvalidParameter
from wanserve.media.audio import AudioLimits, decode_audio, fit_audio
from wanserve.media.video import encode_mp4, output_frames


@pytest.mark.parametrize(
    ("data", "seconds"), [(wav(4.0), 4.0), (wav(3.5, channels=2), 3.5), (encoded(5.0), 5.0)]
)
def test_wav_and_mp3_decode(data: bytes, seconds: float) -> None:
    clip = decode_audio(data, field="audio_url")
    assert abs(clip.seconds - seconds) < 0.1
    assert clip.samples.dtype == np.float32 and np.abs(clip.samples).max() > 0.3


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (wav(2.0), "2.0 s long; audio must last 3 to 30 seconds"),
        (wav(31.0, rate=8000), "31.0 s long"),
        (encoded(4.0, fmt="ogg", codec="libopus", rate=48000), "ogg audio; send WAV or MP3"),
        (b"RIFF\x00\x00\x00\x00WAVEjunkjunk", "could not be decoded"),
        (b"not audio at all", "could not be decoded"),
    ],
)
def test_refused_audio(data: bytes, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        decode_audio(data, field="audio_url")


def test_size_limit() -> None:
    with pytest.raises(InvalidParameter, match="larger than 0 MB"):
        decode_audio(wav(4.0), field="audio_url", limits=AudioLimits(max_bytes=1000))


def test_fit_cuts_and_pads() -> None:
    clip = decode_audio(wav(4.0), field="audio_url")
    cut = fit_audio(clip, 3)
    assert cut.seconds == 3.0 and np.array_equal(cut.samples, clip.samples[:, : 3 * 22050])
    padded = fit_audio(clip, 5)
    assert padded.seconds == 5.0
    assert np.abs(padded.samples[:, : 4 * 22050]).max() > 0.3
    assert not padded.samples[:, 4 * 22050 :].any()  # the last second is silent


@pytest.mark.parametrize(("audio_seconds", "video_seconds"), [(4.0, 5), (8.0, 5), (3.0, 3)])
def test_mp4_audio_track_lasts_as_long_as_the_video(
    tmp_path: Path, audio_seconds: float, video_seconds: int
) -> None:
    clip = fit_audio(decode_audio(wav(audio_seconds), field="audio_url"), video_seconds)
    frames = np.zeros((video_seconds * 16 + 1, 48, 64, 3), dtype=np.uint8)
    path = tmp_path / "v.mp4"
    out = output_frames(frames, source_fps=16, width=64, height=48, fps=30, duration=video_seconds)
    encode_mp4(out, path, width=64, height=48, fps=30, audio=clip)
    with av.open(str(path)) as c:
        a, v = c.streams.audio[0], c.streams.video[0]
        assert a.codec_context.name == "aac"
        assert float(a.duration * a.time_base) == pytest.approx(video_seconds, abs=0.03)
        assert float(v.duration * v.time_base) == video_seconds
        decoded = np.concatenate([f.to_ndarray() for f in c.decode(audio=0)], axis=1)
    rate = 22050
    loud = np.abs(decoded[:, : int(min(audio_seconds, video_seconds) * rate) - rate // 10]).max()
    assert loud > 0.2
    if audio_seconds < video_seconds:
        tail = decoded[:, int(audio_seconds * rate) + rate // 10 : video_seconds * rate]
        assert np.abs(tail).max() < 0.01  # silent after the audio ends
