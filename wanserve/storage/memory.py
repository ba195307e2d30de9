"""`MemoryStorage`: the `Storage` fake for tests. Objects live in a dict; `failure`, when set,
is raised by every write, to play a full or unreachable store at the seam."""

from __future__ import annotations

import threading
from datetime import datetime
from pathlib import Path
from urllib.parse import quote

from wanserve.storage.base import StorageError, check_key


class MemoryStorage:
    def __init__(self) -> None:
        self.objects: dict[str, bytes] = {}
        self.failure: StorageError | None = None
        self._lock = threading.Lock()  # workers and the API write from several threads

    def put(self, key: str, source: Path) -> None:
        self.put_bytes(key, source.read_bytes())

    def put_bytes(self, key: str, data: bytes) -> None:
        check_key(key)
        if self.failure is not None:
            raise self.failure
        with self._lock:
            self.objects[key] = bytes(data)

    def read(self, key: str) -> bytes:
        with self._lock:
            try:
                return self.objects[check_key(key)]
            except KeyError:
                raise FileNotFoundError(key) from None

    def delete(self, key: str) -> None:
        with self._lock:
            self.objects.pop(check_key(key), None)

    def check(self) -> None:
        if self.failure is not None:
            raise self.failure

    def url(self, key: str, *, expires_at: datetime, base_url: str) -> str:
        expires = int(expires_at.timestamp())
        return f"{base_url.rstrip('/')}/memory/{quote(check_key(key))}?Expires={expires}"
