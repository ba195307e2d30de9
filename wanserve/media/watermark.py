"""The "AI Generated" mark DashScope stamps in the lower-right corner when `watermark: true`."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from PIL import Image, ImageDraw, ImageFont

TEXT = "AI Generated"


class Watermark:
    """Renders the mark once for a frame size, then alpha-blends it into each frame."""

    def __init__(self, width: int, height: int, *, text: str = TEXT) -> None:
        size = max(12, round(min(width, height) * 0.04))
        font = ImageFont.load_default(size=size)
        left, top, right, bottom = (int(v) for v in font.getbbox(text))
        pad = max(1, size // 12)  # room for the shadow
        patch = Image.new("RGBA", (right - left + 2 * pad, bottom - top + 2 * pad), (0, 0, 0, 0))
        draw = ImageDraw.Draw(patch)
        draw.text(
            (pad - left + pad // 2 + 1, pad - top + pad // 2 + 1),
            text,
            font=font,
            fill=(0, 0, 0, 150),
        )
        draw.text((pad - left, pad - top), text, font=font, fill=(255, 255, 255, 220))
        rgba = np.asarray(patch, dtype=np.float32) / 255.0
        ph, pw = rgba.shape[:2]
        margin = max(4, round(min(width, height) * 0.03))
        self.x = max(0, width - pw - margin)
        self.y = max(0, height - ph - margin)
        # Clip the patch to the frame for very small videos.
        ph, pw = min(ph, height - self.y), min(pw, width - self.x)
        self._rgb = rgba[:ph, :pw, :3] * 255.0
        self._alpha = rgba[:ph, :pw, 3:4]

    def __call__(self, frame: NDArray[np.uint8]) -> NDArray[np.uint8]:
        out = frame.copy()
        h, w = self._alpha.shape[:2]
        region = out[self.y : self.y + h, self.x : self.x + w].astype(np.float32)
        blended = region * (1.0 - self._alpha) + self._rgb * self._alpha
        out[self.y : self.y + h, self.x : self.x + w] = np.rint(blended).astype(np.uint8)
        return out
