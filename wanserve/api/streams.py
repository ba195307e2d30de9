"""`EventStreams`: the live event streams one API process holds open, counted per API key
(a bound on what one client can make the server poll) and ended together at shutdown.

uvicorn waits for open responses before it shuts down, and an event stream ends only with its
task, so the server's signal handler calls `close()` (`compose.api.ApiServer`): every stream
ends at its next poll and clients resume elsewhere with `Last-Event-ID`.
"""

from __future__ import annotations

import threading
from collections import Counter

from wanserve.errors import Throttled


class StreamLease:
    """One open stream's place in its key's count; `release` may be called more than once."""

    def __init__(self, streams: EventStreams, key_id: str) -> None:
        self._streams = streams
        self._key_id = key_id
        self._released = False

    def release(self) -> None:
        with self._streams.lock:
            if not self._released:
                self._released = True
                self._streams.counts[self._key_id] -= 1


class EventStreams:
    def __init__(self, *, max_per_key: int) -> None:
        self.max_per_key = max_per_key
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self._closing = threading.Event()

    def open(self, key_id: str) -> StreamLease:
        """A place for one more stream of `key_id`; `Throttled` when it holds the most."""
        with self.lock:
            if self.counts[key_id] >= self.max_per_key:
                raise Throttled(
                    f"This API key already has {self.max_per_key} event streams open; close "
                    "one (or poll GET /api/v1/tasks/{task_id}) before opening another."
                )
            self.counts[key_id] += 1
        return StreamLease(self, key_id)

    def open_count(self, key_id: str) -> int:
        with self.lock:
            return self.counts[key_id]

    def close(self) -> None:
        """End every stream at its next poll, and refuse none: new ones end at once too."""
        self._closing.set()

    @property
    def closing(self) -> bool:
        return self._closing.is_set()
