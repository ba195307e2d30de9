"""HMAC-signed, expiring URLs for objects the app serves itself."""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import datetime

from wanserve.errors import AccessDenied


class UrlSigner:
    def __init__(self, secret: bytes) -> None:
        if len(secret) < 16:
            raise ValueError("signing secret must be at least 16 bytes")
        self._secret = secret

    def mac(self, purpose: str, message: bytes) -> str:
        """HMAC-SHA256 of `message`, domain-separated by `purpose` so a signature made for one
        use (a download URL) can never be replayed as another (an upload policy)."""
        digest = hmac.new(self._secret, purpose.encode() + b"\0" + message, hashlib.sha256)
        return base64.urlsafe_b64encode(digest.digest()).rstrip(b"=").decode()

    def signature(self, path: str, expires: int) -> str:
        return self.mac("url", f"{path}\n{expires}".encode())

    def verify(
        self, path: str, expires: str | None, signature: str | None, *, now: datetime
    ) -> None:
        """Raise `AccessDenied` unless `signature` signs `path` and `expires` is in the future."""
        if (
            expires is None
            or not signature
            or not (expires.isascii() and expires.isdigit() and len(expires) <= 12)
        ):
            raise AccessDenied("The URL is not signed: request it again from the task.")
        # As bytes: compare_digest refuses non-ASCII str, and a signature is client input.
        expected = self.signature(path, int(expires)).encode()
        if not hmac.compare_digest(expected, signature.encode("utf-8", "surrogateescape")):
            raise AccessDenied("The URL signature does not match.")
        if int(expires) <= now.timestamp():
            raise AccessDenied("The URL has expired.")
