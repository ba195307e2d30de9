"""Input images: decode untrusted bytes safely, and fit them to the denoising size.

Accepted: JPEG, PNG, BMP and WEBP (DashScope's list), at most `max_bytes` and `max_pixels`.
The pixel count is checked from the header before any pixel is decoded, so a small file that
expands to gigabytes (a decompression bomb) is refused cheaply. Every refusal is an
`InvalidParameter` naming the request field.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

from wanserve.errors import InvalidParameter

FORMATS = {"JPEG": "image/jpeg", "PNG": "image/png", "BMP": "image/bmp", "WEBP": "image/webp"}


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 4096 * 4096
    min_side: int = 16


def decode_image(data: bytes, *, field: str, limits: ImageLimits = ImageLimits()) -> Image.Image:
    """An RGB image from untrusted bytes, upright (EXIF orientation applied)."""
    if len(data) > limits.max_bytes:
        raise InvalidParameter(f"{field} is larger than {limits.max_bytes // (1024 * 1024)} MB.")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image: Image.Image = Image.open(io.BytesIO(data))
            fmt = image.format or ""
            if fmt not in FORMATS:
                raise InvalidParameter(
                    f"{field} is a {fmt or 'unrecognised'} file; send JPEG, PNG, BMP or WEBP."
                )
            width, height = image.size
            if width * height > limits.max_pixels:
                raise InvalidParameter(
                    f"{field} is {width}x{height} pixels; at most {limits.max_pixels} pixels are "
                    "accepted."
                )
            if min(width, height) < limits.min_side:
                raise InvalidParameter(
                    f"{field} is {width}x{height} pixels; each side must be at least "
                    f"{limits.min_side}."
                )
            image.load()
    except InvalidParameter:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidParameter(
            f"{field} declares more pixels than the {limits.max_pixels} accepted."
        ) from None
    except UnidentifiedImageError:
        raise InvalidParameter(f"{field} is not a readable image.") from None
    except (OSError, ValueError, SyntaxError):
        raise InvalidParameter(
            f"{field} could not be decoded: the image data is corrupt."
        ) from None
    image = ImageOps.exif_transpose(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # Transparent pixels become white rather than whatever colour hides under them.
        canvas = Image.new("RGB", image.size, (255, 255, 255))
        canvas.paste(image.convert("RGBA"), mask=image.convert("RGBA").getchannel("A"))
        return canvas
    return image.convert("RGB")


def fit(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scale `image` to cover width x height and crop the overflow evenly (no distortion)."""
    if image.size == (width, height):
        return image
    return ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS)
