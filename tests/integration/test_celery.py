"""Celery dispatch against a real broker (a private redis-server) and real worker processes
(`tests.worker_process`: `run_worker` with a slow fake at the engine seam), with the API
in-process on a real PostgreSQL database."""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import ShiftedClock, make_settings
from tests.redis_server import RedisServer
from tests.waiting import scaled, wait_until
from tests.worker_process import WorkerProcess
from wanserve.clock import Clock, utcnow
from wanserve.compose.api import create_api_only
from wanserve.compose.shared import Shared, build_shared
from wanserve.config import Settings
from wanserve.tasks.celery import CeleryDispatcher, queue_for

pytestmark = pytest.mark.postgres

A, B = "wan2.1-t2v-turbo", "wan2.2-t2v-plus"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    if shutil.which("redis-server") is None and not os.environ.get("CI"):
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


class Fleet:
    """An API-only app (TestClient) on PostgreSQL + Redis, and worker processes beside it."""

    def __init__(self, settings: Settings, shared: Shared, tmp: Path) -> None:
        self.settings = settings
        self.shared = shared
        self.tmp = tmp
        self.client = TestClient(create_api_only(shared))
        self.client.__enter__()
        _, self.key = shared.keys.create("fleet")
        self.workers: list[WorkerProcess] = []

    def worker(self, *models: str, step_seconds: float = 0.02) -> WorkerProcess:
        s = self.settings
        env = {
            "WANSERVE_DATA_DIR": str(s.data_dir),
            "WANSERVE_DATABASE_URL": s.effective_database_url,
            "WANSERVE_BROKER_URL": s.broker or "",
            "WANSERVE_SECRET_KEY": "test-secret-key-0123456789",
            "WANSERVE_WEIGHTS": "dummy",
            "WANSERVE_STEPS": "8",
            "WANSERVE_WORKER_MODELS": '["' + '","'.join(models) + '"]',
            "WANSERVE_HEARTBEAT_SECONDS": str(s.heartbeat_seconds),
            "WANSERVE_HEARTBEAT_TIMEOUT_SECONDS": str(s.heartbeat_timeout_seconds),
            "WANSERVE_TASK_TIMEOUT_SECONDS": str(s.task_timeout_seconds),
            "WANSERVE_X264_PRESET": "ultrafast",
            "TEST_STEP_SECONDS": str(step_seconds),
        }
        proc = WorkerProcess(self.tmp / f"worker-{len(self.workers)}.log", env=env).start()
        self.workers.append(proc)
        return proc

    def create(self, model: str) -> str:
        res = self.client.post(
            "/api/v1/services/aigc/video-generation/video-synthesis",
            json={"model": model, "input": {"prompt": "a fox"}},
            headers={"Authorization": f"Bearer {self.key}", "X-DashScope-Async": "enable"},
        )
        assert res.status_code == 200, res.text
        task_id: str = res.json()["output"]["task_id"]
        return task_id

    def row(self, task_id: str) -> Any:
        with self.shared.db.connect() as conn:
            return conn.execute(
                text("SELECT status, attempts, worker_id, dispatched_at FROM tasks WHERE id = :id"),
                {"id": task_id},
            ).one()

    def wait(self, task_id: str, status: str) -> Any:
        """The task's row once its status is `status` (bounded while the row stops changing)."""
        try:
            return wait_until(
                lambda: self.row(task_id),
                lambda row: row.status == status,
                progress=lambda row: (row.status, row.attempts),
                what=f"task {task_id} {status}",
            )
        except AssertionError as exc:
            raise AssertionError([str(exc), *(w.text()[-2000:] for w in self.workers)]) from None

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.client.__exit__(None, None, None)
        self.shared.db.dispose()


@pytest.fixture
def fleet_factory(
    tmp_path: Path, postgres_url: str, broker: RedisServer
) -> Iterator[Callable[..., Fleet]]:
    broker.flush()
    fleets: list[Fleet] = []

    def factory(*, clock: Clock = utcnow, **overrides: Any) -> Fleet:
        settings = make_settings(
            tmp_path / "data",
            **{
                "role": "api",
                "database_url": postgres_url,
                "broker_url": broker.url,
                "heartbeat_seconds": 0.2,
                # The heartbeat timeout stays make_settings' long one: a short one was mistaken
                # for a death on a loaded machine (a healthy task requeued and run twice). The
                # SIGKILL test moves the API's clock past it instead.
                "janitor_interval_seconds": 0.2,
                "task_timeout_seconds": scaled(600),
            }
            | overrides,
        )
        fleet = Fleet(settings, build_shared(settings, clock=clock), tmp_path)
        fleets.append(fleet)
        return fleet

    yield factory
    for fleet in fleets:
        fleet.close()


def test_routing_duplicates_and_cancels(
    fleet_factory: Callable[..., Fleet], broker: RedisServer
) -> None:
    fleet = fleet_factory()
    wa, wb = fleet.worker(A), fleet.worker(B)

    # Each model's task reaches only the worker that serves it.
    ta, tb = fleet.create(A), fleet.create(B)
    row_a, row_b = fleet.wait(ta, "SUCCEEDED"), fleet.wait(tb, "SUCCEEDED")
    assert f":{wa.pid}:" in row_a.worker_id and f":{wb.pid}:" in row_b.worker_id

    dispatcher = CeleryDispatcher(fleet.settings)
    # A duplicate delivery of a finished task claims nothing and runs nothing.
    dispatcher.submit(ta, model=A)
    # A task canceled before its message is delivered never runs.
    tc = fleet.create(B)  # queued behind nothing, but we cancel it at once...
    canceled = fleet.shared.store.cancel_pending(tc)
    # ...and whether or not worker B got there first, a second message changes nothing.
    dispatcher.submit(tc, model=B)
    # FIFO per queue and one message at a time per worker: once a later task on each queue
    # has finished, the duplicate and the canceled task's messages have been consumed.
    after_a, after_b = fleet.create(A), fleet.create(B)
    fleet.wait(after_a, "SUCCEEDED")
    fleet.wait(after_b, "SUCCEEDED")
    assert fleet.row(ta).attempts == 1
    if canceled:
        assert tuple(fleet.row(tc)[:2]) == ("CANCELED", 0)
    else:  # worker B claimed it in the instant before the cancel: it ran once
        assert fleet.row(tc).attempts == 1
    r = redis.Redis.from_url(broker.url)
    assert r.llen(queue_for(A)) == 0 and r.llen(queue_for(B)) == 0
    dispatcher.close()


def test_sigkill_of_a_worker_mid_task_reruns_elsewhere(fleet_factory: Callable[..., Fleet]) -> None:
    clock = ShiftedClock()
    fleet = fleet_factory(clock=clock)
    # Steps so long that the task is still running when it is killed, however slow the machine.
    first = fleet.worker(A, step_seconds=scaled(60))
    task_id = fleet.create(A)
    row = fleet.wait(task_id, "RUNNING")
    assert f":{first.pid}:" in row.worker_id
    first.signal(signal.SIGKILL)
    first.wait()
    # Later, by more than the heartbeat timeout: the API's reaper sees the heartbeat stopped,
    # requeues the row and sends the id again. No worker is running anything meanwhile, so
    # nothing else looks dead; then the clock comes back and another worker takes the task.
    clock.offset += 2 * timedelta(seconds=fleet.settings.heartbeat_timeout_seconds)
    row = fleet.wait(task_id, "PENDING")
    clock.offset = timedelta()
    second = fleet.worker(A, step_seconds=0.02)
    row = fleet.wait(task_id, "SUCCEEDED")
    assert f":{second.pid}:" in row.worker_id and row.attempts == 2


def test_a_task_the_broker_refused_at_submit_is_sent_by_the_janitor(
    fleet_factory: Callable[..., Fleet], tmp_path: Path
) -> None:
    """The broker is down when the task is created: the client still gets its task id (the row
    is committed), and once the broker is back the janitor sends the id nobody sent."""
    down = RedisServer(tmp_path / "late-redis")  # its port is chosen, nothing listens yet
    fleet = fleet_factory(broker_url=down.url, dispatch_grace_seconds=0.5)
    task_id = fleet.create(A)
    row = fleet.row(task_id)
    assert (row.status, row.dispatched_at) == ("PENDING", None)
    try:
        down.start()
        fleet.worker(A)
        row = fleet.wait(task_id, "SUCCEEDED")
        assert row.attempts == 1
    finally:
        for w in fleet.workers:
            w.stop()
        down.stop()


def test_messages_the_broker_lost_are_sent_again(
    fleet_factory: Callable[..., Fleet], broker: RedisServer
) -> None:
    """Redis loses its data (a restart without persistence, a failover) while tasks wait: the
    janitor sends ids that were sent longer than `redispatch_after_seconds` ago again."""
    fleet = fleet_factory(redispatch_after_seconds=1.0)
    tasks = [fleet.create(A) for _ in range(2)]
    r = redis.Redis.from_url(broker.url)
    assert r.llen(queue_for(A)) == 2
    assert all(fleet.row(t).dispatched_at is not None for t in tasks)
    broker.flush()
    fleet.worker(A)
    for task_id in tasks:
        assert fleet.wait(task_id, "SUCCEEDED").attempts == 1
