"""`LocalStorage`: files under a directory, served by this app at `/files/<key>` with
signed, expiring query strings."""

from __future__ import annotations

import os
import shutil
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from wanserve.errors import NotFound
from wanserve.storage.base import check_key
from wanserve.storage.signing import UrlSigner

FILES_PREFIX = "/files/"


class LocalStorage:
    def __init__(self, root: Path, *, signer: UrlSigner) -> None:
        self.root = root
        self.signer = signer
        root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, source: Path) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{os.getpid()}.part")
        shutil.move(str(source), staging)
        os.replace(staging, target)  # readers never see a half-written file

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = target.with_name(f".{target.name}.{os.getpid()}.part")
        staging.write_bytes(data)
        os.replace(staging, target)

    def read(self, key: str) -> bytes:
        return self.path(key).read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def signed_path(
        self, key: str, expires: str | None, signature: str | None, *, now: datetime
    ) -> Path:
        """The file a signed URL names, if the signature holds, it has not expired, and the
        file is still there; `AccessDenied` or `NotFound` otherwise."""
        self.signer.verify(FILES_PREFIX + key, expires, signature, now=now)
        try:
            path = self.path(key)
        except ValueError:
            raise NotFound("No such file.") from None
        if not path.is_file():
            raise NotFound("The file no longer exists (it may have expired).")
        return path

    def url(self, key: str, *, expires_at: datetime, base_url: str) -> str:
        expires = int(expires_at.timestamp())
        signature = self.signer.signature(FILES_PREFIX + check_key(key), expires)
        path = FILES_PREFIX + quote(key)
        return f"{base_url.rstrip('/')}{path}?Expires={expires}&Signature={signature}"
