"""ModelManager's memory accounting, with a fake at the CheckpointLoader seam (the real
loader is exercised by the other engine tests)."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from tests.waiting import join, pause
from wanserve.engine.families import Family, Kind
from wanserve.engine.manager import ModelManager, Prepared

GB = 10**9


@dataclass
class FakeLoader:
    sizes: dict[str, int]
    load_seconds: float = 0.0
    events: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def prepare(self, source: str, family: Family) -> Prepared:
        return Prepared(location=source, nbytes=self.sizes[source])

    def load(self, prepared: Prepared, family: Family) -> Any:
        with self.lock:
            self.events.append(f"load {prepared.location}")
        pause(self.load_seconds)  # a slow load, so that concurrent ones overlap
        return prepared.location

    def view(self, base: Any, family: Family, kind: Kind) -> Any:
        return base

    def nbytes(self, base: Any) -> int:
        return self.sizes[base]

    def release(self) -> None:
        with self.lock:
            self.events.append("release")


def use(manager: ModelManager, source: str) -> None:
    with manager.lease(source, Family.WAN22_T2V_A14B, Kind.TEXT_TO_VIDEO):
        pass


def test_room_is_made_before_a_load_not_after() -> None:
    loader = FakeLoader({"t2v": 60 * GB, "i2v": 60 * GB})
    manager = ModelManager(loader, budget_bytes=100 * GB)
    use(manager, "t2v")
    use(manager, "i2v")  # does not fit beside t2v: t2v goes first
    assert loader.events == ["load t2v", "release", "load i2v"]
    assert manager.resident() == [("i2v", Family.WAN22_T2V_A14B)]


def test_checkpoints_in_use_are_never_unloaded() -> None:
    loader = FakeLoader({"a": 60 * GB, "b": 60 * GB})
    manager = ModelManager(loader, budget_bytes=100 * GB)
    with manager.lease("a", Family.WAN22_T2V_A14B, Kind.TEXT_TO_VIDEO):
        use(manager, "b")  # over budget, but "a" is busy: both stay, nothing is torn down
        assert {k for k, _ in manager.resident()} == {"a", "b"}
    use(manager, "a")
    assert manager.evictions == 0


def test_concurrent_loads_reserve_room_for_each_other() -> None:
    loader = FakeLoader({"a": 40 * GB, "b": 40 * GB, "c": 40 * GB}, load_seconds=0.2)
    manager = ModelManager(loader, budget_bytes=100 * GB)
    use(manager, "a")
    threads = [threading.Thread(target=use, args=(manager, s)) for s in ("b", "c")]
    for t in threads:
        t.start()
    for t in threads:
        join(t, what="a load")
    # b and c loaded together; the second to start counted the first's reservation and
    # unloaded "a" before loading, so at no point were 120 GB resident.
    assert loader.events.index("release") < loader.events.index("load c") or (
        loader.events.index("release") < loader.events.index("load b")
    )
    assert manager.resident_bytes() <= 100 * GB


def test_no_budget_keeps_everything() -> None:
    loader = FakeLoader({"a": 60 * GB, "b": 60 * GB})
    manager = ModelManager(loader, budget_bytes=None)
    use(manager, "a")
    use(manager, "b")
    assert manager.resident_bytes() == 120 * GB and "release" not in loader.events


@dataclass
class Observed:
    events: list[tuple[str, str]] = field(default_factory=list)

    def model_loaded(self, checkpoint: str, *, nbytes: int, seconds: float) -> None:
        assert seconds >= 0
        self.events.append(("loaded", f"{checkpoint}:{nbytes // GB}"))

    def model_evicted(self, checkpoint: str) -> None:
        self.events.append(("evicted", checkpoint))


def test_loads_and_evictions_are_told_to_the_observer() -> None:
    observed = Observed()
    manager = ModelManager(
        FakeLoader({"t2v": 60 * GB, "i2v": 60 * GB}), budget_bytes=100 * GB, observer=observed
    )
    use(manager, "t2v")
    use(manager, "t2v")  # warm: not a load
    use(manager, "i2v")
    assert observed.events == [("loaded", "t2v:60"), ("evicted", "t2v"), ("loaded", "i2v:60")]
