"""Small input videos made in memory, for the tests of video inputs."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import av
import numpy as np

STEP = 10  # frame i is a flat grey of value i * STEP, so a decoded frame names its index


def video(
    *,
    seconds: float = 2.0,
    fps: int = 12,
    width: int = 64,
    height: int = 48,
    fmt: str = "mp4",
    codec: str = "libx264",
    path: Path | None = None,
    options: dict[str, str] | None = None,
    pattern: bool = False,
) -> bytes:
    """A small video whose frame i is grey i * STEP (or, with `pattern`, a red left quarter on
    grey, to see where a crop falls)."""
    buf = io.BytesIO()
    with av.open(path or buf, "w", format=fmt, options=options or {}) as container:
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for i in range(round(seconds * fps)):
            rgb = np.full((height, width, 3), (i * STEP) % 256, dtype=np.uint8)
            if pattern:
                rgb[:, : width // 4] = (255, 0, 0)
            frame = av.VideoFrame.from_ndarray(rgb, format="rgb24")
            frame.pts = i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path.read_bytes() if path else buf.getvalue()


def video_data_uri(**kwargs: object) -> str:
    """`video(**kwargs)` as a base64 data URI."""
    return "data:video/mp4;base64," + base64.b64encode(video(**kwargs)).decode()  # type: ignore[arg-type]
