"""The `RateLimiter` seam and its in-process implementation.

Two primitives cover both limits the API enforces:

- `acquire`: a token bucket (capacity `burst`, refilled at `rate` tokens a second). One request
  takes one token; an empty bucket answers how long until the next token. A bucket allows
  bursts (a client polling several tasks at once) while bounding the sustained rate.
- `count` / `add`: a fixed-window counter that starts at the first event and vanishes when the
  window ends. Failed authentications use it: after N failures the address is locked out until
  the window that the first failure opened has passed, whatever it presents meanwhile.

State is keyed by an opaque name; callers choose names that never contain secrets.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

Seconds = Callable[[], float]


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    retry_after: float = 0.0  # seconds until a retry can succeed; 0 when allowed


@dataclass(frozen=True)
class WindowCount:
    count: int
    resets_in: float  # seconds until the window ends and the count is forgotten


class RateLimiter(Protocol):
    def acquire(self, name: str, *, rate: float, burst: int) -> Verdict: ...
    def add(self, name: str, *, window: float) -> WindowCount: ...
    def count(self, name: str) -> WindowCount: ...


@dataclass
class _Bucket:
    tokens: float
    updated: float


class MemoryRateLimiter:
    """`RateLimiter` in this process's memory: right for the embedded server, where one process
    sees every request. `clock` is monotonic seconds, injectable so tests can move time."""

    # Buckets idle long enough to be full again carry no information; dropping them keeps
    # memory bounded by the number of recently active keys and addresses.
    _SWEEP_EVERY = 4096

    def __init__(self, *, clock: Seconds = time.monotonic) -> None:
        self._now = clock
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[_Bucket, float]] = {}  # name -> (bucket, full after)
        self._windows: dict[str, tuple[int, float]] = {}  # name -> (count, ends at)
        self._ops = 0

    def acquire(self, name: str, *, rate: float, burst: int) -> Verdict:
        now = self._now()
        with self._lock:
            self._sweep(now)
            entry = self._buckets.get(name)
            bucket = entry[0] if entry else _Bucket(tokens=float(burst), updated=now)
            elapsed = max(0.0, now - bucket.updated)
            bucket.tokens = min(float(burst), bucket.tokens + elapsed * rate)
            bucket.updated = now
            if bucket.tokens >= 1.0:
                bucket.tokens -= 1.0
                verdict = Verdict(allowed=True)
            else:
                verdict = Verdict(allowed=False, retry_after=(1.0 - bucket.tokens) / rate)
            full_after = now + (burst - bucket.tokens) / rate
            self._buckets[name] = (bucket, full_after)
            return verdict

    def add(self, name: str, *, window: float) -> WindowCount:
        now = self._now()
        with self._lock:
            self._sweep(now)
            count, ends = self._windows.get(name, (0, now + window))
            if ends <= now:
                count, ends = 0, now + window
            self._windows[name] = (count + 1, ends)
            return WindowCount(count=count + 1, resets_in=ends - now)

    def count(self, name: str) -> WindowCount:
        now = self._now()
        with self._lock:
            count, ends = self._windows.get(name, (0, now))
            if ends <= now:
                return WindowCount(count=0, resets_in=0.0)
            return WindowCount(count=count, resets_in=ends - now)

    def _sweep(self, now: float) -> None:
        self._ops += 1
        if self._ops % self._SWEEP_EVERY:
            return
        self._buckets = {k: v for k, v in self._buckets.items() if v[1] > now}
        self._windows = {k: v for k, v in self._windows.items() if v[1] > now}
