"""Nothing a client submitted is lost on restart, nothing stays RUNNING, and tasks expire."""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlparse

from tests.conftest import T2V, FakeRunner, Harness, ShiftedClock
from tests.waiting import wait_until


def statuses(h: Harness, ids: list[str], key: str) -> list[str]:
    return [
        h.client.get(f"/api/v1/tasks/{t}", headers=h.headers(key)).json()["output"]["task_status"]
        for t in ids
    ]


def wait_all(h: Harness, ids: list[str], key: str, want: str = "SUCCEEDED") -> None:
    wait_until(
        lambda: statuses(h, ids, key),
        lambda seen: seen == [want] * len(ids),
        progress=tuple,
        what=f"all tasks {want}",
    )


def lose_heartbeat(h: Harness, clock: ShiftedClock) -> None:
    """Move `h`'s clock past its heartbeat timeout: every worker silent since is dead to it."""
    clock.offset += 2 * timedelta(seconds=h.settings.heartbeat_timeout_seconds)


def test_pending_tasks_run_after_restart(
    harness_factory: Callable[..., Harness], tmp_path: Path
) -> None:
    first = harness_factory(start_workers=False, data_dir=tmp_path / "d")
    ids = [first.create(T2V).json()["output"]["task_id"] for _ in range(2)]
    first.client.__exit__(None, None, None)  # the server stops with the tasks still queued

    second = harness_factory(data_dir=tmp_path / "d")
    # The first server's key works on the second, and its tasks run there.
    wait_all(second, ids, first.key)


def test_orphaned_running_task_is_requeued_and_finishes(
    harness_factory: Callable[..., Harness], tmp_path: Path
) -> None:
    first = harness_factory(start_workers=False, data_dir=tmp_path / "d")
    task_id = first.create(T2V).json()["output"]["task_id"]
    # A worker claims it and dies: the row is RUNNING and nobody will ever report on it.
    assert first.components.store.claim(task_id, worker_id="dead-worker") is not None
    assert first.get(task_id)["output"]["task_status"] == "RUNNING"
    first.client.__exit__(None, None, None)

    # Later, by more than the heartbeat timeout: the dead worker's claim is stale.
    clock = ShiftedClock()
    second = harness_factory(data_dir=tmp_path / "d", clock=clock)
    lose_heartbeat(second, clock)
    wait_all(second, [task_id], first.key)
    task = second.components.store.get(task_id)
    assert task is not None and task.attempts == 2


def test_repeatedly_lost_task_fails_with_a_clear_code(
    harness_factory: Callable[..., Harness],
) -> None:
    clock = ShiftedClock()
    h = harness_factory(start_workers=False, max_attempts=1, clock=clock)
    task_id = h.create(T2V).json()["output"]["task_id"]
    assert h.components.store.claim(task_id, worker_id="dead-worker") is not None
    lose_heartbeat(h, clock)
    out = h.wait(task_id)["output"]
    assert out["task_status"] == "FAILED" and out["code"] == "InternalError"
    assert "stopped responding" in out["message"]


def test_graceful_shutdown_hands_running_task_back(
    harness_factory: Callable[..., Harness], tmp_path: Path
) -> None:
    gate = threading.Event()
    first = harness_factory(runner=FakeRunner(gate=gate), data_dir=tmp_path / "d")
    task_id = first.create(T2V).json()["output"]["task_id"]
    first.wait(task_id, until=lambda b: b["output"]["task_status"] == "RUNNING")
    first.client.__exit__(None, None, None)  # lifespan shutdown stops the worker mid-task
    task = first.components.store.get(task_id)
    assert task is not None and task.status.value == "PENDING"

    second = harness_factory(data_dir=tmp_path / "d")
    wait_all(second, [task_id], first.key)


def test_tasks_and_videos_expire(harness_factory: Callable[..., Harness]) -> None:
    clock = ShiftedClock()
    h = harness_factory(clock=clock)  # the default TTL: 24 h
    task_id = h.create(T2V).json()["output"]["task_id"]
    body = h.wait(task_id)
    assert body["output"]["task_status"] == "SUCCEEDED"
    video = h.components.services.storage.path(f"videos/{task_id}.mp4")  # type: ignore[attr-defined]
    assert video.exists()
    url = urlparse(body["output"]["video_url"])
    clock.offset = timedelta(hours=23)  # the video is kept for the TTL after it was made
    assert h.get(task_id)["output"]["task_status"] == "SUCCEEDED"
    assert h.client.get(f"{url.path}?{url.query}").status_code == 200
    clock.offset = timedelta(hours=25)
    assert h.get(task_id)["output"]["task_status"] == "UNKNOWN"
    res = h.client.get(f"{url.path}?{url.query}")
    assert res.status_code == 403 and res.json()["message"] == "The URL has expired."
    wait_until(
        lambda: video.exists() or h.components.store.get(task_id) is not None,
        lambda present: not present,
        what="the janitor purging the expired task",
    )
    listed = h.client.get("/api/v1/tasks", headers=h.headers()).json()
    assert listed["total"] == 0


def test_signed_urls_survive_restart(
    harness_factory: Callable[..., Harness], tmp_path: Path
) -> None:
    first = harness_factory(data_dir=tmp_path / "d", secret_key=None)
    task_id = first.create(T2V).json()["output"]["task_id"]
    url = urlparse(first.wait(task_id)["output"]["video_url"])
    first.client.__exit__(None, None, None)
    second = harness_factory(data_dir=tmp_path / "d", secret_key=None)
    assert second.client.get(f"{url.path}?{url.query}").status_code == 200
    secret = tmp_path / "d" / "secret.key"
    assert secret.stat().st_mode & 0o777 == 0o600
