"""Base64 `data:` URIs, as clients send inline images and audio."""

from __future__ import annotations

import base64
import binascii
import re

from wanserve.errors import InvalidParameter

_DATA_URI = re.compile(
    r"^data:(?P<mime>[\w/+.-]+)?(?P<params>(;[\w=.+-]+)*?)(?P<b64>;base64)?,", re.I
)


def parse_data_uri(uri: str, *, field: str, max_bytes: int) -> tuple[str, bytes]:
    """(media type, payload) of a `data:` URI; the payload must be base64."""
    match = _DATA_URI.match(uri)
    if match is None or not match.group("b64"):
        raise InvalidParameter(
            f"{field} is not a base64 data URI: write data:<media type>;base64,<data>."
        )
    payload = uri[match.end() :]
    if len(payload) * 3 // 4 > max_bytes + 3:
        raise InvalidParameter(f"{field} is larger than {max_bytes // (1024 * 1024)} MB.")
    try:
        data = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameter(f"{field} holds invalid base64 data.") from None
    return (match.group("mime") or "").lower(), data
