"""The `Storage` seam: where output videos (and later uploaded inputs) live."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol


def check_key(key: str) -> str:
    """Keys are relative POSIX paths of plain segments; nothing may climb out of the root."""
    parts = key.split("/")
    if any(p in ("", ".", "..") or "\\" in p or "\x00" in p for p in parts):
        raise ValueError(f"invalid storage key: {key!r}")
    return key


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
