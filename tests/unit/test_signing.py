from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from wanserve.errors import AccessDenied
from wanserve.storage.base import check_key
from wanserve.storage.local import LocalStorage
from wanserve.storage.signing import UrlSigner

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_sign_and_verify() -> None:
    signer = UrlSigner(b"k" * 32)
    expires = int((NOW + timedelta(hours=1)).timestamp())
    sig = signer.signature("/files/a.mp4", expires)
    signer.verify("/files/a.mp4", str(expires), sig, now=NOW)
    with pytest.raises(AccessDenied, match="does not match"):
        signer.verify("/files/b.mp4", str(expires), sig, now=NOW)
    with pytest.raises(AccessDenied, match="does not match"):
        signer.verify("/files/a.mp4", str(expires + 1), sig, now=NOW)
    with pytest.raises(AccessDenied, match="does not match"):
        UrlSigner(b"x" * 32).verify("/files/a.mp4", str(expires), sig, now=NOW)
    with pytest.raises(AccessDenied, match="expired"):
        signer.verify("/files/a.mp4", str(expires), sig, now=NOW + timedelta(hours=2))
    for expires_text, signature in ((None, sig), (str(expires), None), ("soon", sig)):
        with pytest.raises(AccessDenied, match="not signed"):
            signer.verify("/files/a.mp4", expires_text, signature, now=NOW)


def test_short_secret_refused() -> None:
    with pytest.raises(ValueError):
        UrlSigner(b"short")


@pytest.mark.parametrize("key", ["../x", "/etc/passwd", "a/../../b", "", "a//b", "./a"])
def test_keys_cannot_escape_the_root(key: str) -> None:
    with pytest.raises(ValueError):
        check_key(key)


def test_local_storage_round_trip(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path / "root", signer=UrlSigner(b"k" * 32))
    src = tmp_path / "src.mp4"
    src.write_bytes(b"video")
    storage.put("videos/t.mp4", src)
    assert storage.path("videos/t.mp4").read_bytes() == b"video"
    url = storage.url("videos/t.mp4", expires_at=NOW + timedelta(hours=1), base_url="http://h:1/")
    parsed = urlparse(url)
    assert (parsed.scheme, parsed.netloc, parsed.path) == ("http", "h:1", "/files/videos/t.mp4")
    query = parse_qs(parsed.query)
    storage.signer.verify(parsed.path, query["Expires"][0], query["Signature"][0], now=NOW)
    storage.delete("videos/t.mp4")
    storage.delete("videos/t.mp4")  # idempotent
    assert not storage.path("videos/t.mp4").exists()
