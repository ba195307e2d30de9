"""Resident checkpoints: `ModelManager` keeps loaded pipelines between runs.

A checkpoint is loaded once however many catalogue entries and pipeline kinds use it
(Wan2.2-TI2V-5B serves text- and image-to-video from one copy), and least recently used
checkpoints are unloaded when a memory budget would be exceeded. Loading itself is behind the
`CheckpointLoader` seam (`wan.WanLoader`), so this module imports neither torch nor diffusers
and is tested with a fake loader.

Engine imports form a tree (checked by tests/engine/test_boundary.py):
`runner -> manager, request, adapters, lora`; `runner ..> wan` (inside `build_runner` only,
so importing the runner's module does not load torch); `wan -> manager, request, errors,
families, weights, dummy, random_weights, lora`; `lora -> adapters, errors, manager` (torch-free:
it only calls the pipeline's methods); `random_weights -> dummy, families`;
`weights -> request`; `dubbing -> wan, weights, dummy, request, errors`.
`request`, `errors`, `families` and `adapters` are torch-free leaves.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from wanserve.engine.families import Family, Kind

log = logging.getLogger(__name__)


CheckpointKey = tuple[str, Family]


@dataclass
class Resident:
    """One loaded checkpoint: its pipeline views by kind, and per-checkpoint caches."""

    base: Any
    nbytes: int
    views: dict[Kind, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)  # e.g. prompt embeddings
    lock: threading.Lock = field(default_factory=threading.Lock)  # one run at a time
    leases: int = 0
    last_used: float = field(default_factory=time.monotonic)


@dataclass(frozen=True)
class Leased:
    pipeline: Any
    cache: dict[str, Any]


@dataclass(frozen=True)
class Prepared:
    """A checkpoint on local disk, ready to load, and what it will occupy on the device."""

    location: Any
    nbytes: int
    source: str = ""  # the checkpoint as configured (a hub id or a directory)


class CheckpointLoader(Protocol):
    def prepare(self, source: str, family: Family) -> Prepared:
        """Put the checkpoint on local disk (download it if allowed) and size it."""

    def load(self, prepared: Prepared, family: Family) -> Any:
        """Load a prepared checkpoint's base pipeline onto its device."""

    def view(self, base: Any, family: Family, kind: Kind) -> Any:
        """The pipeline serving `kind`, sharing `base`'s modules (may be `base` itself)."""

    def nbytes(self, base: Any) -> int:
        """Device memory the loaded checkpoint's weights occupy."""

    def release(self) -> None:
        """Return freed memory to the device (after an unload or a failed run)."""


class ManagerObserver(Protocol):
    """Told about loads and unloads (the process's metrics implement it: the engine imports
    nothing outside itself). Called outside the manager's lock, except `evicted`, which is
    called with it held and so must only count."""

    def model_loaded(self, checkpoint: str, *, nbytes: int, seconds: float) -> None: ...

    def model_evicted(self, checkpoint: str) -> None: ...


class ModelManager:
    def __init__(
        self,
        loader: CheckpointLoader,
        *,
        budget_bytes: int | None = None,
        observer: ManagerObserver | None = None,
    ) -> None:
        self._loader = loader
        self._budget = budget_bytes
        self._observer = observer
        self._resident: dict[CheckpointKey, Resident] = {}
        self._loading: dict[CheckpointKey, threading.Lock] = {}
        self._reserved: dict[CheckpointKey, int] = {}  # loads in flight
        self._guard = threading.Lock()
        self.loads = 0  # checkpoints actually loaded (a warm lease does not count)
        self.evictions = 0

    @contextmanager
    def lease(self, source: str, family: Family, kind: Kind) -> Iterator[Leased]:
        """Hold the checkpoint's pipeline for `kind` for one run."""
        key = (source, family)
        resident = self._ensure(key)
        with resident.lock:
            try:
                view = resident.views.get(kind)
                if view is None:
                    view = resident.views[kind] = self._loader.view(resident.base, family, kind)
                yield Leased(pipeline=view, cache=resident.cache)
            finally:
                with self._guard:
                    resident.leases -= 1
                    resident.last_used = time.monotonic()

    def resident(self) -> list[CheckpointKey]:
        with self._guard:
            return list(self._resident)

    def resident_bytes(self) -> int:
        with self._guard:
            return sum(r.nbytes for r in self._resident.values())

    def _ensure(self, key: CheckpointKey) -> Resident:
        with self._guard:
            resident = self._resident.get(key)
            if resident is not None:
                resident.leases += 1
                return resident
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:  # one loader per checkpoint; others wait for it
            with self._guard:
                resident = self._resident.get(key)
                if resident is not None:
                    resident.leases += 1
                    return resident
            # Downloading and sizing happen outside the guard: other checkpoints stay usable.
            started = time.monotonic()
            prepared = self._loader.prepare(*key)
            with self._guard:
                # Make room before loading, counting loads already in flight.
                self._evict_for(prepared.nbytes, keep=key)
                self._reserved[key] = prepared.nbytes
            try:
                base = self._loader.load(prepared, key[1])
            finally:
                with self._guard:
                    self._reserved.pop(key, None)
            size = self._loader.nbytes(base)
            with self._guard:
                self.loads += 1
                resident = Resident(base=base, nbytes=size, leases=1)
                self._resident[key] = resident
                self._evict_for(0, keep=key)
            log.info(
                "resident: %s (%.1f MB); total %.1f MB",
                key[0],
                size / 1e6,
                self.resident_bytes() / 1e6,
            )
            if self._observer is not None:
                seconds = time.monotonic() - started
                self._observer.model_loaded(key[0], nbytes=size, seconds=seconds)
            return resident

    def _held(self) -> int:
        return sum(r.nbytes for r in self._resident.values())

    def _evict_for(self, incoming: int, *, keep: CheckpointKey) -> None:
        """Unload idle checkpoints, least recently used first, until `incoming` more bytes fit.
        Caller holds `_guard`. Checkpoints in use are never unloaded."""
        if self._budget is None:
            return
        idle = sorted(
            (k for k, r in self._resident.items() if r.leases == 0 and k != keep),
            key=lambda k: self._resident[k].last_used,
        )
        freed = False
        in_flight = sum(self._reserved.values())
        while idle and self._held() + in_flight + incoming > self._budget:
            victim = idle.pop(0)
            log.info("unloading %s to stay within the model memory budget", victim[0])
            del self._resident[victim]
            self.evictions += 1
            if self._observer is not None:
                self._observer.model_evicted(victim[0])
            freed = True
        if freed:
            self._loader.release()
