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
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from starlette.routing import Match

from tests.api.test_endpoints import UUID, assert_error
from tests.conftest import T2V, FakeRunner, make_settings
from wanserve.api.dashscope.routes import poll_routes, polls
from wanserve.api.fastpoll import PollFastPath, poll_target
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


# -- the fast path (`api/fastpoll.py`): kept answers served before routing ------------------


@given(
    start=st.sampled_from(["", "/api/v1", "/api/v1/tasks", "/api/v1/tasksx", "/api/v1/tasks/"]),
    segments=st.lists(st.sampled_from(["", "tasks", "t-1", "é", "a b", "cancel"]), max_size=4),
    root=st.sampled_from(["", "/p", "/p/q"]),
    under_root=st.booleans(),
)
def test_the_fast_path_matches_exactly_the_paths_the_router_sends_to_the_poll(
    start: str, segments: list[str], root: str, under_root: bool
) -> None:
    path = start + "/" + "/".join(segments)
    if under_root:
        path = root + path
    scope = {"type": "http", "method": "GET", "path": path, "root_path": root}
    routed = []
    for route in polls.routes:
        match, child = route.matches(scope)
        if match is Match.FULL:
            routed.append((child["path_params"]["task_id"], route.path.endswith("/")))
    assert len(routed) <= 1
    assert poll_target(path, root) == (routed[0] if routed else None)


@dataclass
class Spy:
    """The app behind the fast path: records what reached it and answers 599."""

    paths: list[str]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 599, "headers": []})
        await send({"type": "http.response.body", "body": b""})


def test_the_fast_path_answers_kept_polls_and_passes_everything_else_on(app_factory: Any) -> None:
    app = app_factory()
    _, other = app.parts.services.keys.create("other")
    kept = app.finish()
    assert app.poll(kept).status_code == 200  # through the route: the answer is now kept
    assert app.poll("unknown-task", other).status_code == 200  # the other key is now cached
    spy = Spy([])
    fast = TestClient(PollFastPath(spy, services=app.parts.services, routes=poll_routes()))
    auth = {"Authorization": f"Bearer {app.secret}"}

    for path in (f"/api/v1/tasks/{kept}", f"/api/v1/tasks/{kept}/"):
        res = fast.get(path, headers=auth)
        assert res.status_code == 200 and res.json()["output"]["task_status"] == "SUCCEEDED"
        assert res.headers["content-type"] == "application/json"
        assert int(res.headers["content-length"]) == len(res.content)
    assert spy.paths == []

    passed_on = [
        fast.get(f"/api/v1/tasks/{kept}?x=1", headers=auth),  # a query: the route checks it
        fast.head(f"/api/v1/tasks/{kept}", headers=auth),
        fast.post(f"/api/v1/tasks/{kept}/cancel", headers=auth),
        fast.get(f"/api/v1/tasks/{kept}/events", headers=auth),
        fast.get(f"/api/v1/tasks/{kept}//", headers=auth),
        fast.get("/api/v1/tasks/unknown-task", headers=auth),  # nothing kept
        fast.get(f"/api/v1/tasks/{kept}", headers={"Authorization": f"Bearer {other}"}),
        fast.get(f"/api/v1/tasks/{kept}", headers={"Authorization": f"Basic {app.secret}"}),
        fast.get(f"/api/v1/tasks/{kept}", headers={"Authorization": "Bearer"}),
        fast.get(f"/api/v1/tasks/{kept}"),  # no key
        fast.get(f"/api/v1/tasks/{kept}", headers={"Authorization": f"Bearer {app.secret}x"}),
        fast.get(f"/api/v1/tasks/{kept}", headers={**auth, "Host": "elsewhere.example"}),
        fast.get("/api/v1/tasks/%00", headers=auth),  # never kept; the route refuses it
    ]
    assert [res.status_code for res in passed_on] == [599] * len(passed_on)
    assert len(spy.paths) == len(passed_on)

    # A key trusted from memory no longer is once its cache entry is old: the route reads it.
    app.clock.advance(app.parts.settings.api_key_cache_seconds)
    assert fast.get(f"/api/v1/tasks/{kept}", headers=auth).status_code == 599


def test_with_throttles_in_redis_the_fast_path_spends_the_shared_budget(
    app_factory: Any, redis_url: str
) -> None:
    import redis

    app = app_factory(redis_url=redis_url, rate_limit_per_second=0.001, rate_limit_burst=3)
    kept = app.finish()  # one of three
    assert app.poll(kept).status_code == 200  # the route: two of three, and kept
    spy = Spy([])
    fast = TestClient(PollFastPath(spy, services=app.parts.services, routes=poll_routes()))
    auth = {"Authorization": f"Bearer {app.secret}"}
    assert fast.get(f"/api/v1/tasks/{kept}", headers=auth).status_code == 200  # three of three
    assert spy.paths == []
    # The bucket is Redis's: another replica sharing it is refused too.
    assert_error(app.poll(kept), 429, "Throttling.RateQuota")
    client = redis.Redis.from_url(redis_url)
    assert client.delete(f"wanserve:throttle:key:{app.key_id}") == 1
    client.close()


def test_a_kept_answer_is_byte_for_byte_the_routes_answer(app_factory: Any) -> None:
    app = app_factory()
    task_id = app.finish()
    for path in (f"/api/v1/tasks/{task_id}", f"/api/v1/tasks/{task_id}/"):
        app.parts.services.finished.forget(task_id)
        routed, fast = (
            app.client.get(path, headers={"Authorization": f"Bearer {app.secret}"})
            for _ in range(2)
        )
        assert routed.status_code == fast.status_code == 200
        strip = (routed.json()["request_id"], fast.json()["request_id"])
        assert routed.content.replace(strip[0].encode(), b"") == fast.content.replace(
            strip[1].encode(), b""
        )
        assert fast.headers["x-request-id"] == strip[1]
        for name in ("content-type", "content-length"):
            assert routed.headers[name] == fast.headers[name]


def test_kept_answers_spend_the_rate_budget_once_per_request(app_factory: Any) -> None:
    app = app_factory(rate_limit_per_second=0.001, rate_limit_burst=3)
    _, other = app.parts.services.keys.create("other")
    task_id = app.finish()  # spends one of three
    assert app.poll(task_id).status_code == 200  # the route: two of three, and kept
    # Another key asks for the kept task: the fast path looks, passes on, and spends nothing;
    # the route spends one of the other key's three.
    for _ in range(3):
        assert app.poll(task_id, other).json()["output"]["task_status"] == "UNKNOWN"
    assert app.poll(task_id).json()["output"]["task_status"] == "SUCCEEDED"  # three of three
    refused = app.poll(task_id)
    assert_error(refused, 429, "Throttling.RateQuota", "rate limit")
    assert 990 <= int(refused.headers["retry-after"]) <= 1000
    assert_error(app.poll(task_id, other), 429, "Throttling.RateQuota")


def test_a_locked_out_address_gets_no_kept_answer(app_factory: Any) -> None:
    app = app_factory(auth_failure_limit=2)
    task_id = app.finish()
    assert app.poll(task_id).status_code == 200
    assert app.poll(task_id).status_code == 200  # kept
    for guess in ("sk-guess-1", "sk-guess-2"):
        assert_error(app.poll(task_id, guess), 401, "InvalidApiKey")
    locked = app.poll(task_id)
    assert_error(locked, 429, "Throttling.AuthFailures", "invalid API keys")
    assert 290 <= int(locked.headers["retry-after"]) <= 300


def test_a_key_revoked_elsewhere_gets_no_kept_answer_past_the_bound(app_factory: Any) -> None:
    app = app_factory(api_key_cache_seconds=5)
    task_id = app.finish()
    assert app.poll(task_id).status_code == 200
    assert app.poll(task_id).status_code == 200  # kept, and the key trusted from memory
    assert app.elsewhere().revoke(app.key_id)
    app.clock.advance(4.9)
    assert app.poll(task_id).status_code == 200  # within the documented bound
    app.clock.advance(0.1)
    assert_error(app.poll(task_id), 401, "InvalidApiKey")


def test_a_key_revoked_in_this_process_gets_no_kept_answer(app_factory: Any) -> None:
    app = app_factory(api_key_cache_seconds=300)
    task_id = app.finish()
    assert app.poll(task_id).status_code == app.poll(task_id).status_code == 200
    assert app.parts.services.keys.revoke(app.key_id)
    assert_error(app.poll(task_id), 401, "InvalidApiKey")


def test_a_deleted_task_is_not_answered_from_memory(app_factory: Any) -> None:
    app = app_factory()
    task_id = app.finish()
    assert app.poll(task_id).status_code == app.poll(task_id).status_code == 200
    auth = {"Authorization": f"Bearer {app.secret}"}
    assert app.client.delete(f"/v1/videos/{task_id}", headers=auth).status_code == 200
    assert app.poll(task_id).json()["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}


def test_kept_answers_are_counted_under_the_poll_route(app_factory: Any) -> None:
    app = app_factory()
    task_id = app.finish()
    auth = {"Authorization": f"Bearer {app.secret}"}
    for path in (f"/api/v1/tasks/{task_id}", f"/api/v1/tasks/{task_id}/"):
        for _ in range(3):
            assert app.client.get(path, headers=auth).status_code == 200
    served = {
        sample.labels["route"]: sample.value
        for family in text_string_to_metric_families(app.client.get("/metrics").text)
        for sample in family.samples
        if sample.name == "wanserve_http_requests_total" and sample.labels["status"] == "200"
    }
    assert served["/api/v1/tasks/{task_id}"] == 3
    assert served["/api/v1/tasks/{task_id}/"] == 3
