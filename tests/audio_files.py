"""Audio files made on the fly for tests: WAV with the stdlib, MP3 and others with PyAV."""

from __future__ import annotations

import io
import wave

import av
import numpy as np


def tone(seconds: float, rate: int = 22050, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(seconds * rate)) / rate
    mono = 0.4 * np.sin(2 * np.pi * freq * t)
    return np.stack([mono] * channels).astype(np.float32)


def wav(seconds: float, rate: int = 22050, channels: int = 1) -> bytes:
    pcm = (tone(seconds, rate, channels).T * 32767).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return buf.getvalue()


def encoded(
    seconds: float, *, fmt: str = "mp3", codec: str = "libmp3lame", rate: int = 22050
) -> bytes:
    samples = tone(seconds, rate)
    buf = io.BytesIO()
    with av.open(buf, "w", format=fmt) as c:
        stream = c.add_stream(codec, rate=rate, layout="mono")
        frame_size = stream.codec_context.frame_size or 1152
        for start in range(0, samples.shape[1], frame_size):
            chunk = samples[:, start : start + frame_size]
            target = stream.codec_context.format.name
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(chunk), format="fltp", layout="mono"
            )
            frame.sample_rate = rate
            frame.pts = start
            if target != "fltp":
                frame = av.AudioResampler(format=target, layout="mono", rate=rate).resample(frame)[
                    0
                ]
            c.mux(stream.encode(frame))
        c.mux(stream.encode(None))
    return buf.getvalue()
