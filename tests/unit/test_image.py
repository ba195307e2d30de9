"""Decoding untrusted images: formats, limits, bombs, corruption, orientation, transparency."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from wanserve.errors import InvalidParameter
from wanserve.media.datauri import parse_data_uri
from wanserve.media.image import ImageLimits, decode_image, fit


def encode(image: Image.Image, fmt: str, **save: object) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **save)
    return buf.getvalue()


def noise(w: int = 64, h: int = 48) -> Image.Image:
    return Image.fromarray(np.random.default_rng(0).integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "WEBP"])
def test_accepted_formats(fmt: str) -> None:
    image = decode_image(encode(noise(), fmt), field="img_url")
    assert image.mode == "RGB" and image.size == (64, 48)


@pytest.mark.parametrize("fmt", ["GIF", "TIFF", "ICO"])
def test_other_formats_are_refused(fmt: str) -> None:
    with pytest.raises(
        InvalidParameter, match=f"img_url is a {fmt} file; send JPEG, PNG, BMP or WEBP"
    ):
        decode_image(encode(noise(), fmt), field="img_url")


@pytest.mark.parametrize(
    ("side", "message"),
    [(5000, "5000x5000 pixels; at most 16777216"), (20000, "declares more pixels than the")],
)
def test_decompression_bombs_refused_before_decoding(side: int, message: str) -> None:
    bomb = encode(Image.new("1", (side, side)), "PNG")  # a few KB that expand to megapixels
    assert len(bomb) < 100_000
    with pytest.raises(InvalidParameter, match=message):
        decode_image(bomb, field="first_frame_url")


def test_size_limits() -> None:
    data = encode(noise(), "PNG")
    with pytest.raises(InvalidParameter, match="larger than 0 MB"):
        decode_image(data, field="img_url", limits=ImageLimits(max_bytes=100))
    with pytest.raises(InvalidParameter, match="each side must be at least 16"):
        decode_image(encode(noise(8, 40), "PNG"), field="img_url")


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not a readable image"),
        (b"hello world", "not a readable image"),
        (encode(noise(), "PNG")[:200], "corrupt"),
        (encode(noise(), "JPEG")[:300], "corrupt"),
    ],
)
def test_corrupt_data(data: bytes, message: str) -> None:
    with pytest.raises(InvalidParameter, match=message):
        decode_image(data, field="img_url")


def test_exif_orientation_is_applied() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotated 90 degrees: stored landscape, shown portrait
    image = decode_image(encode(noise(64, 48), "JPEG", exif=exif), field="img_url")
    assert image.size == (48, 64)


def test_transparency_becomes_white() -> None:
    rgba = Image.new("RGBA", (32, 32), (10, 20, 30, 0))
    image = decode_image(encode(rgba, "PNG"), field="img_url")
    assert image.getpixel((5, 5)) == (255, 255, 255)


def test_data_uris() -> None:
    payload = encode(noise(), "PNG")
    uri = "data:image/png;base64," + base64.b64encode(payload).decode()
    assert parse_data_uri(uri, field="img_url", max_bytes=10**6) == ("image/png", payload)
    with pytest.raises(InvalidParameter, match="not a base64 data URI"):
        parse_data_uri("data:image/png,rawbytes", field="img_url", max_bytes=10**6)
    with pytest.raises(InvalidParameter, match="invalid base64"):
        parse_data_uri("data:image/png;base64,@@@@", field="img_url", max_bytes=10**6)
    with pytest.raises(InvalidParameter, match="larger than"):
        parse_data_uri(uri, field="img_url", max_bytes=100)


def test_fit_covers_and_crops_without_distortion() -> None:
    wide = Image.new("RGB", (200, 100), (255, 0, 0))
    wide.paste((0, 0, 255), (0, 0, 50, 100))  # a blue band on the left, cropped away
    out = fit(wide, 100, 100)
    assert out.size == (100, 100)
    assert out.getpixel((50, 50)) == (255, 0, 0)
