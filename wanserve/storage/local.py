"""`LocalStorage`: files under a directory, served by this app at `/files/<key>` with
signed, expiring query strings (the route is `wanserve.storage.local_routes`)."""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from urllib.parse import quote

from wanserve.clock import Clock, utcnow
from wanserve.errors import NotFound
from wanserve.storage.base import StorageUnavailable, check_key, os_errors
from wanserve.storage.signing import UrlSigner

log = logging.getLogger(__name__)

FILES_PREFIX = "/files/"
_STAGING_SUFFIX = ".part"
# A staging file is written in one go and renamed at once, so one untouched this long belongs
# to a process that died mid-write. The margin keeps a sweep from taking a live writer's file
# (several processes may share the directory).
STALE_STAGING = timedelta(minutes=15)


class LocalStorage:
    def __init__(self, root: Path, *, signer: UrlSigner, clock: Clock = utcnow) -> None:
        self.root = root
        self.signer = signer
        self._now = clock
        with os_errors(f"creating {root}"):
            root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        return self.root / check_key(key)

    def put(self, key: str, source: Path) -> None:
        target = self.path(key)
        with os_errors(f"storing {target}"), _staged(target) as staging:
            # A rename when the source is on the same file system; a copy otherwise.
            shutil.move(source, staging)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        with os_errors(f"storing {target}"), _staged(target) as staging:
            staging.write_bytes(data)

    def read(self, key: str) -> bytes:
        path = self.path(key)
        with os_errors(f"reading {path}"):
            return path.read_bytes()

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        path = self.path(key)
        with os_errors(f"deleting {path}"):
            path.unlink(missing_ok=True)

    def check(self) -> None:
        # A directory that vanished, or that this process may not write, fails every put.
        if not self.root.is_dir():
            raise StorageUnavailable(detail=f"{self.root} is not a directory")
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise StorageUnavailable(detail=f"{self.root} is not writable by this process")

    def sweep_staging(self, *, older_than: timedelta = STALE_STAGING) -> int:
        """Remove staging files left by a process that died mid-write (at start-up); their
        number. Failures are logged, never raised: a sweep must not stop the server starting."""
        cutoff = time.time() - older_than.total_seconds()
        removed = 0
        for path in self.root.rglob(f".*{_STAGING_SUFFIX}"):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except OSError as exc:
                log.warning("could not remove stale staging file %s: %s", path, exc)
        if removed:
            log.warning("removed %d partial file(s) left in %s", removed, self.root)
        return removed

    def signed_path(self, key: str, expires: str | None, signature: str | None) -> Path:
        """The file a signed URL names, if the signature holds, it has not expired, and the
        file is still there; `AccessDenied` or `NotFound` otherwise."""
        self.signer.verify(FILES_PREFIX + key, expires, signature, now=self._now())
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


@contextmanager
def _staged(target: Path) -> Iterator[Path]:
    """A staging path next to `target`, renamed over it when the block succeeds, so readers
    never see a half-written file; removed when it fails (a full disk must not stay full)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    # Short and fixed-length whatever the key: `.<name>.part` would pass NAME_MAX for long
    # names. Keys never start with a dot, so a staging name never names an object.
    staging = target.with_name(f".{secrets.token_hex(8)}{_STAGING_SUFFIX}")
    try:
        yield staging
        os.replace(staging, target)
    except BaseException:
        staging.unlink(missing_ok=True)
        raise
