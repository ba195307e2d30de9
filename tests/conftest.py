"""Shared fixtures. Fakes live only at seams (the engine `Runner`); the database, storage,
workers and HTTP stack are the real ones."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.waiting import POLL, scaled, wait_until
from wanserve.clock import Clock, utcnow
from wanserve.compose.embedded import Components, build_components, create_app
from wanserve.config import Settings
from wanserve.engine.errors import Canceled
from wanserve.engine.request import (
    CancelFn,
    Clip,
    EngineConfig,
    EngineProgress,
    GenerationRequest,
    ProgressFn,
    Runner,
    Stage,
)
from wanserve.engine.runner import PipelineRunner, build_runner


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stretch pytest-timeout's per-test hang guard (pyproject `timeout`) on slow machines,
    like every other bound (tests/waiting.py)."""
    if scaled(1) == 1:
        return
    limit = scaled(float(config.getini("timeout")))
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(limit))


@dataclass
class FakeRunner:
    """A `Runner` that draws frames from the seed instantly (tiny frames; the media layer
    scales them to the requested size). `gate` lets a test hold a run at its first step."""

    calls: list[GenerationRequest] = field(default_factory=list)
    outputs: list[np.ndarray] = field(default_factory=list)
    gate: threading.Event | None = None
    started: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None

    def run(
        self, request: GenerationRequest, *, on_progress: ProgressFn, should_cancel: CancelFn
    ) -> Clip:
        self.calls.append(request)
        on_progress(EngineProgress(Stage.DENOISE, 1, request.steps))
        self.started.set()
        if self.gate is not None:
            while not self.gate.wait(POLL):
                if should_cancel():
                    raise Canceled()
        if self.error is not None:
            raise self.error
        if should_cancel():
            raise Canceled()
        for step in range(2, request.steps + 1):
            on_progress(EngineProgress(Stage.DENOISE, step, request.steps))
        rng = np.random.default_rng([request.seed, len(self.calls)])
        frames = rng.integers(0, 256, size=(request.num_frames, 48, 64, 3), dtype=np.uint8)
        self.outputs.append(frames)
        return Clip(frames=frames, fps=request.fps)


@dataclass
class ShiftedClock:
    """Real time plus an offset a test moves forward: expiry and dead-worker detection are
    tested by moving the clock, not by waiting for it, so they do not race the machine."""

    offset: timedelta = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset


def make_settings(data_dir: Path, **overrides: Any) -> Settings:
    base: dict[str, Any] = {
        "data_dir": data_dir,
        "weights": "dummy",
        "heartbeat_seconds": 0.2,
        # Long enough that a worker starved of CPU on a busy machine is not taken for dead
        # (a false reap re-runs the task and can exhaust max_attempts); tests of the reaper
        # set a short one themselves.
        "heartbeat_timeout_seconds": scaled(60),
        "janitor_interval_seconds": 0.2,
        "x264_preset": "ultrafast",
        "secret_key": "test-secret-key-0123456789",
        # Tests poll in tight loops; the request-rate limit has its own tests, which set it.
        "rate_limit_per_second": 0,
    }
    return Settings(**(base | overrides))


@dataclass
class Harness:
    """An app on a temp data dir with a fake runner, a TestClient and an API key."""

    settings: Settings
    components: Components
    runner: Any  # a FakeRunner unless the test passed the real engine
    client: TestClient
    key: str
    key_id: str

    def headers(self, key: str | None = None, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {key or self.key}", "X-DashScope-Async": "enable"} | extra

    def create(self, body: dict[str, Any], key: str | None = None) -> Any:
        return self.client.post(
            "/api/v1/services/aigc/video-generation/video-synthesis",
            json=body,
            headers=self.headers(key),
        )

    def get(self, task_id: str, key: str | None = None) -> dict[str, Any]:
        res = self.client.get(f"/api/v1/tasks/{task_id}", headers=self.headers(key))
        assert res.status_code == 200, res.text
        body: dict[str, Any] = res.json()
        return body

    def wait(
        self, task_id: str, *, until: Callable[[dict[str, Any]], bool] | None = None
    ) -> dict[str, Any]:
        """The task's body once `until` holds (default: a terminal status). Fails only if the
        task makes no progress (status or step) for a long while, never for being slow."""
        return wait_until(
            lambda: self.get(task_id),
            until or (lambda b: b["output"]["task_status"] not in ("PENDING", "RUNNING")),
            progress=lambda b: (b["output"]["task_status"], b["output"].get("step")),
            what=f"task {task_id}",
        )


@pytest.fixture
def harness_factory(tmp_path: Path) -> Iterator[Callable[..., Harness]]:
    clients: list[TestClient] = []

    def factory(
        *,
        start_workers: bool = True,
        runner: Runner | None = None,
        data_dir: Path | None = None,
        audio_driven: Any = None,
        clock: Clock = utcnow,
        **overrides: Any,
    ) -> Harness:
        settings = make_settings(data_dir or tmp_path / "data", **overrides)
        fake = runner or FakeRunner()
        components = build_components(settings, runner=fake, audio_driven=audio_driven, clock=clock)
        app = create_app(settings, components=components, start_workers=start_workers)
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        key, secret = components.services.keys.create("test")
        return Harness(settings, components, fake, client, secret, key.id)

    yield factory
    for client in reversed(clients):
        client.__exit__(None, None, None)


@pytest.fixture(scope="session")
def dummy_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tiny dummy checkpoints are built, once per test session."""
    return tmp_path_factory.mktemp("dummy-weights")


@pytest.fixture(scope="session")
def runner(dummy_root: Path) -> PipelineRunner:
    """The real engine on tiny dummy checkpoints, shared (its models stay resident)."""
    return build_runner(EngineConfig(weights="dummy", device="cpu", dummy_root=dummy_root))


@pytest.fixture
def harness(harness_factory: Callable[..., Harness]) -> Harness:
    return harness_factory()


T2V = {"model": "wan2.1-t2v-turbo", "input": {"prompt": "a cat"}, "parameters": {"size": "832*480"}}


@contextmanager
def private_database() -> Iterator[str]:
    """A fresh database on the local PostgreSQL server (its SQLAlchemy URL), dropped after."""
    import os
    import uuid

    import psycopg

    admin = os.environ.get(
        "WANSERVE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    name = f"wanserve_test_{uuid.uuid4().hex[:10]}"
    try:
        conn = psycopg.connect(admin, autocommit=True, connect_timeout=int(scaled(10)))
    except psycopg.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"PostgreSQL not reachable at {admin}: {exc}")
    with conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A fresh database on the local PostgreSQL server, dropped afterwards."""
    with private_database() as url:
        yield url


@pytest.fixture
def redis_url() -> str:
    """The local Redis server (database 11). Tests sharing it keep to keys of their own (random
    key ids), so nothing is flushed."""
    import os

    import redis

    url = "redis://127.0.0.1:6379/11"
    try:
        redis.Redis.from_url(url, socket_connect_timeout=scaled(5)).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"Redis not reachable at {url}: {exc}")
    return url
