"""The poll hot path keeps auth and isolation: the API-key cache honours a revocation made
elsewhere within `api_key_cache_seconds`, kept answers of finished tasks go only to their own
key, end with the task, and unfinished tasks are always read fresh. Real app, real SQLite
store; the clock is injected so the bounds are checked exactly, without sleeping."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.test_endpoints import UUID, assert_error
from tests.conftest import T2V, FakeRunner, make_settings
from wanserve.compose.embedded import Components, build_components, create_app
from wanserve.db.engine import make_engine
from wanserve.keys import KeyStore
from wanserve.tasks.models import Progress, TaskResult, TaskStage


class FakeClock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@dataclass
class App:
    client: TestClient
    parts: Components
    clock: FakeClock
    secret: str
    key_id: str
    data_dir: Path

    def poll(self, task_id: str, secret: str | None = None, **headers: str) -> Any:
        auth = {"Authorization": f"Bearer {secret or self.secret}"}
        return self.client.get(f"/api/v1/tasks/{task_id}", headers=auth | headers)

    def elsewhere(self) -> KeyStore:
        """The key store of another process on the same database (the CLI, a replica)."""
        url = self.parts.settings.effective_database_url
        return KeyStore(make_engine(url), clock=self.clock)

    def finish(self, secret: str | None = None) -> str:
        """A task of `secret`'s key, submitted over HTTP and finished by a worker's store
        calls (no worker thread runs: the clock is the test's)."""
        headers = {
            "Authorization": f"Bearer {secret or self.secret}",
            "X-DashScope-Async": "enable",
        }
        res = self.client.post(
            "/api/v1/services/aigc/video-generation/video-synthesis", json=T2V, headers=headers
        )
        task_id: str = res.json()["output"]["task_id"]
        store = self.parts.store
        claim = store.claim(task_id, worker_id="w")
        assert claim is not None
        result = TaskResult(
            video_key=f"videos/{task_id}.mp4",
            width=832,
            height=480,
            has_audio=False,
            actual_prompt=None,
        )
        assert store.succeed(claim, result)
        return task_id


@pytest.fixture
def app_factory(tmp_path: Path) -> Iterator[Any]:
    clients: list[TestClient] = []

    def factory(**overrides: Any) -> App:
        clock = FakeClock()
        # The janitor would purge tasks as the test moves the clock; these tests are about
        # what the API answers, so it sweeps rarely.
        settings = make_settings(tmp_path / "data", janitor_interval_seconds=3600, **overrides)
        parts = build_components(settings, runner=FakeRunner(), clock=clock)
        client = TestClient(create_app(settings, components=parts, start_workers=False))
        client.__enter__()
        clients.append(client)
        key, secret = parts.services.keys.create("test")
        return App(client, parts, clock, secret, key.id, tmp_path / "data")

    yield factory
    for client in clients:
        client.__exit__(None, None, None)


def test_a_key_revoked_elsewhere_stops_working_within_the_cache_bound(app_factory: Any) -> None:
    app = app_factory(api_key_cache_seconds=5)
    assert app.poll("nope").status_code == 200  # the key is now trusted from memory
    assert app.elsewhere().revoke(app.key_id)
    app.clock.advance(4.9)
    # Within the documented bound this process has not seen the revocation yet...
    assert app.poll("nope").status_code == 200
    app.clock.advance(0.1)
    # ...and at the bound it has, without any request having to fail first.
    assert_error(app.poll("nope"), 401, "InvalidApiKey", "Invalid API-key")
    app.clock.advance(60)
    assert_error(app.poll("nope"), 401, "InvalidApiKey")


def test_a_key_revoked_in_this_process_stops_at_once(app_factory: Any) -> None:
    app = app_factory(api_key_cache_seconds=300)
    assert app.poll("nope").status_code == 200
    assert app.parts.services.keys.revoke(app.key_id)
    assert_error(app.poll("nope"), 401, "InvalidApiKey")


def test_a_clock_stepped_back_does_not_stretch_the_bound(app_factory: Any) -> None:
    app = app_factory(api_key_cache_seconds=5)
    assert app.poll("nope").status_code == 200
    assert app.elsewhere().revoke(app.key_id)
    app.clock.advance(-3600)  # an NTP step backwards
    assert_error(app.poll("nope"), 401, "InvalidApiKey")


def test_without_a_cache_every_request_reads_the_key(app_factory: Any) -> None:
    app = app_factory(api_key_cache_seconds=0)
    assert app.poll("nope").status_code == 200
    assert app.elsewhere().revoke(app.key_id)
    assert_error(app.poll("nope"), 401, "InvalidApiKey")


def test_a_new_key_works_at_once_after_failed_guesses(app_factory: Any) -> None:
    app = app_factory(api_key_cache_seconds=300)
    _, secret = app.elsewhere().create("made by the CLI")
    assert_error(app.poll("nope", secret[:-1] + "x"), 401, "InvalidApiKey")
    assert app.poll("nope", secret).status_code == 200


def test_a_finished_task_is_answered_only_to_its_key(app_factory: Any) -> None:
    app = app_factory()
    _, other = app.parts.services.keys.create("other")
    task_id = app.finish()
    first, again = app.poll(task_id), app.poll(task_id)  # the second is the kept answer
    for res in (first, again):
        assert res.status_code == 200 and res.headers["content-type"] == "application/json"
        assert UUID.match(res.json()["request_id"])
        assert res.headers["x-request-id"] == res.json()["request_id"]
    assert first.json()["request_id"] != again.json()["request_id"]
    assert {**first.json(), "request_id": ""} == {**again.json(), "request_id": ""}
    assert again.json()["output"]["task_status"] == "SUCCEEDED"
    # Another key, polling the very task whose answer is kept, learns nothing about it.
    stranger = app.poll(task_id, other).json()
    assert stranger["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}
    assert "usage" not in stranger
    assert app.poll(task_id).json()["output"]["task_status"] == "SUCCEEDED"


def test_a_kept_answer_ends_with_its_task(app_factory: Any) -> None:
    app = app_factory(task_ttl_seconds=600)
    task_id = app.finish()
    assert app.poll(task_id).json()["output"]["task_status"] == "SUCCEEDED"
    app.clock.advance(599)
    assert app.poll(task_id).json()["output"]["task_status"] == "SUCCEEDED"
    app.clock.advance(2)
    assert app.poll(task_id).json()["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}


def test_video_urls_follow_the_host_the_client_used(app_factory: Any) -> None:
    app = app_factory()
    task_id = app.finish()
    one = app.poll(task_id, host="one.example").json()["output"]["video_url"]
    two = app.poll(task_id, host="two.example").json()["output"]["video_url"]
    assert one.startswith("http://one.example/files/videos/")
    assert two.startswith("http://two.example/files/videos/")
    assert app.poll(task_id, host="one.example").json()["output"]["video_url"] == one


def test_unfinished_tasks_are_read_fresh_on_every_poll(app_factory: Any) -> None:
    app = app_factory()
    headers = {"Authorization": f"Bearer {app.secret}", "X-DashScope-Async": "enable"}
    res = app.client.post(
        "/api/v1/services/aigc/video-generation/video-synthesis", json=T2V, headers=headers
    )
    task_id = res.json()["output"]["task_id"]
    assert app.poll(task_id).json()["output"]["task_status"] == "PENDING"
    store = app.parts.store
    claim = store.claim(task_id, worker_id="w")
    assert claim is not None
    assert app.poll(task_id).json()["output"]["task_status"] == "RUNNING"
    store.report_progress(
        claim, Progress(stage=TaskStage.DENOISING, step=2, total_steps=4, percent=40)
    )
    assert app.poll(task_id).json()["output"]["progress"] == 40
    result = TaskResult(
        video_key=f"videos/{task_id}.mp4",
        width=832,
        height=480,
        has_audio=False,
        actual_prompt=None,
    )
    assert store.succeed(claim, result)
    out = app.poll(task_id).json()["output"]
    assert out["task_status"] == "SUCCEEDED" and "progress" not in out
