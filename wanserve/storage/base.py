"""The `Storage` seam: where output videos and uploaded inputs live, and its errors.

Implementations translate their own failures (an `OSError`, a boto error) into these, so the
layers above see one vocabulary whatever the backend:

    wanserve.errors.InternalError
    └── StorageError            InternalError.Storage  (HTTP 500)  anything else that failed
        ├── StorageFull         InternalError.Storage  (HTTP 507)  no space or quota left
        └── StorageUnavailable  InternalError.Storage  (HTTP 503)  cannot be reached or written

`message` is for the client and names no path, bucket or host; `detail` is for the operator's
log (the errno, the path, the endpoint).

An absent key is not a storage failure: `read` raises `FileNotFoundError` for it.
"""

from __future__ import annotations

import errno
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Protocol

from wanserve.errors import InternalError

# Keys become file names (local) and object names (S3). A segment is at most one file name
# (NAME_MAX); a key at most what S3 accepts, less room for a bucket prefix.
MAX_SEGMENT_BYTES = 255
MAX_KEY_BYTES = 768
# Control characters (never part of a sane name; NUL ends a C string) and the backslash (a
# path separator elsewhere).
_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f\\]")


def check_key(key: str) -> str:
    """Keys are relative POSIX paths of plain segments: nothing may climb out of the root,
    no segment starts with a dot (staging files do, so a key can never collide with one), and
    no name is longer than a file system or an object store accepts. `ValueError` says why."""
    try:
        size = len(key.encode())
    except UnicodeEncodeError:
        raise ValueError("it is not valid UTF-8") from None
    if size > MAX_KEY_BYTES:
        raise ValueError(f"it is longer than {MAX_KEY_BYTES} bytes")
    for part in key.split("/"):
        if not part:
            raise ValueError("it has an empty path segment")
        if part.startswith("."):
            raise ValueError("a name may not start with a dot")
        if _FORBIDDEN.search(part):
            raise ValueError("a name may not hold control characters or backslashes")
        if len(part.encode()) > MAX_SEGMENT_BYTES:
            raise ValueError(f"a name is longer than {MAX_SEGMENT_BYTES} bytes")
    return key


class StorageError(InternalError):
    """Storing or reading an object failed for a reason on the server's side."""

    code = "InternalError.Storage"
    default_message = "The server could not store or read a file. Please try again later."

    def __init__(self, message: str | None = None, *, detail: str) -> None:
        super().__init__(message or self.default_message)
        self.detail = detail


class StorageFull(StorageError):
    """No space (or quota) is left where objects are written."""

    default_message = (
        "The server's storage is full, so the file could not be stored. Please try again "
        "later; the operator has been told."
    )


class StorageUnavailable(StorageError):
    """The store cannot be reached or written: read-only, no permission, I/O error, no bucket."""

    default_message = (
        "The server's storage cannot be reached or written at the moment. Please try again "
        "later; the operator has been told."
    )


_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_UNAVAILABLE = frozenset(
    {errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO, errno.ENXIO, errno.ENODEV, errno.ESTALE}
)


def from_os_error(exc: OSError, *, action: str) -> StorageError:
    """The storage error an `OSError` means; `action` says what was being done (for the log)."""
    detail = f"{action}: {exc}"
    if exc.errno in _FULL:
        return StorageFull(detail=detail)
    if exc.errno in _UNAVAILABLE:
        return StorageUnavailable(detail=detail)
    return StorageError(detail=detail)


@contextmanager
def os_errors(action: str) -> Iterator[None]:
    """Turn `OSError`s raised inside into storage errors. `FileNotFoundError` passes through:
    an absent key (or source) is the caller's to handle, not a failing store."""
    try:
        yield
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise from_os_error(exc, action=action) from exc


@dataclass(frozen=True)
class FreeSpaceFloor:
    """Local directories that must keep `min_bytes` free before work that writes to them
    starts: the scratch directory videos are encoded in, uploads staged in, and (for local
    storage) the files directory. A full disk is noticed before a long generation, not after."""

    paths: tuple[Path, ...]
    min_bytes: int

    def check(self, *, needed: int = 0) -> None:
        """`StorageFull` unless each directory has `min_bytes` + `needed` bytes free."""
        if self.min_bytes <= 0 and needed <= 0:
            return
        for path in self.paths:
            with os_errors(f"checking free space in {path}"):
                free = shutil.disk_usage(path).free
            if free < self.min_bytes + needed:
                raise StorageFull(
                    "The server's storage is nearly full, so no new work is accepted. Please "
                    "try again later; the operator has been told.",
                    detail=f"{path} has {free} bytes free; the floor (min_free_bytes) is "
                    f"{self.min_bytes} plus {needed} needed",
                )


class Storage(Protocol):
    def put(self, key: str, source: Path) -> None:
        """Store the file at `source` under `key` (the source may be moved)."""

    def put_bytes(self, key: str, data: bytes) -> None:
        """Store `data` under `key`."""

    def read(self, key: str) -> bytes:
        """The stored bytes of `key`; `FileNotFoundError` if absent."""

    def delete(self, key: str) -> None:
        """Remove `key`; absent keys are fine."""

    def url(self, key: str, *, expires_at: datetime, base_url: str) -> str:
        """An absolute URL that fetches `key` until `expires_at` and not after."""

    def check(self) -> None:
        """Cheaply confirm the store can be reached and written (readiness probes call it
        every few seconds, so it transfers no object); a `StorageError` says why not."""
