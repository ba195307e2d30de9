"""Every endpoint's success and error shapes, through the real app, store, workers and
storage; only the engine is a fake (the `Runner` seam)."""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import av
import pytest
from fastapi.testclient import TestClient

from tests.conftest import T2V, FakeRunner, Harness
from wanserve.engine.options import BlockCount
from wanserve.errors import InvalidParameter

URL = "/api/v1/services/aigc/video-generation/video-synthesis"
TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def assert_error(res: Any, status: int, code: str, message: str | None = None) -> None:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"request_id", "code", "message"}, body
    assert body["code"] == code
    assert UUID.match(body["request_id"])
    assert res.headers["x-request-id"] == body["request_id"]
    if message is not None:
        assert re.search(message, body["message"]), body["message"]


@pytest.fixture
def idle(harness_factory: Callable[..., Harness]) -> Harness:
    """An app whose workers are not running: tasks stay PENDING."""
    return harness_factory(start_workers=False)


# -- create --


def test_create_answers_200_pending(idle: Harness) -> None:
    res = idle.create(T2V)
    assert res.status_code == 200
    body = res.json()
    assert set(body) == {"request_id", "output"}
    assert set(body["output"]) == {"task_id", "task_status"}
    assert body["output"]["task_status"] == "PENDING"
    assert (
        UUID.match(body["output"]["task_id"]) and res.headers["x-request-id"] == body["request_id"]
    )


@pytest.mark.parametrize("group", ["video-generation", "image2video", "custom-task"])
def test_any_task_group_is_accepted(idle: Harness, group: str) -> None:
    res = idle.client.post(
        f"/api/v1/services/aigc/{group}/video-synthesis", json=T2V, headers=idle.headers()
    )
    assert res.status_code == 200


def test_sdk_artefacts_and_null_prompt(idle: Harness) -> None:
    body = {
        "model": "wan2.1-t2v-turbo",
        "parameters": {},
        "input": {"prompt": "a cat", "extend_prompt": True, "function": "video-synthesis"},
    }
    assert idle.create(body).status_code == 200
    body["input"]["prompt"] = None
    assert_error(idle.create(body), 400, "InvalidParameter", "prompt is required")


def test_synchronous_calls_are_refused(idle: Harness) -> None:
    res = idle.client.post(URL, json=T2V, headers={"Authorization": f"Bearer {idle.key}"})
    assert_error(res, 403, "AccessDenied", "^current user api does not support synchronous calls$")


@pytest.mark.parametrize(
    ("auth", "message"),
    [
        (None, "No API-key provided"),
        ("Bearer", "No API-key provided"),
        ("Basic abc", "No API-key provided"),
        ("Bearer sk-nope", "Invalid API-key provided"),
    ],
)
def test_api_key_required(idle: Harness, auth: str | None, message: str) -> None:
    headers = {"X-DashScope-Async": "enable"} | ({"Authorization": auth} if auth else {})
    assert_error(idle.client.post(URL, json=T2V, headers=headers), 401, "InvalidApiKey", message)
    get_headers = {"Authorization": auth} if auth else {}
    assert_error(idle.client.get("/api/v1/tasks/x", headers=get_headers), 401, "InvalidApiKey")


def test_revoked_key_is_refused(idle: Harness) -> None:
    assert idle.components.services.keys.revoke(idle.key_id)
    assert_error(idle.create(T2V), 401, "InvalidApiKey", "Invalid")


@pytest.mark.parametrize(
    ("body", "status", "code", "message"),
    [
        ({"input": {"prompt": "x"}}, 400, "BadRequest.EmptyModel", "Model not specified"),
        ({"model": "wan2.1-t2v-turbo"}, 400, "BadRequest.EmptyInput", "input"),
        (
            {"model": "sora", "input": {"prompt": "x"}},
            400,
            "InvalidParameter",
            "Model not exist: 'sora'",
        ),
        (
            {**T2V, "parameters": {"size": "1920*1080"}},
            400,
            "InvalidParameter",
            r"size '1920\*1080'.*allowed sizes",
        ),
        (
            {**T2V, "parameters": {"duration": 10}},
            400,
            "InvalidParameter",
            "duration 10 .* fixed at 5",
        ),
        ({**T2V, "parameters": {"seed": -4}}, 400, "InvalidParameter", "seed -4"),
        (
            {**T2V, "parameters": {"watermark": "yes"}},
            400,
            "InvalidParameter",
            "watermark must be true or false",
        ),
        ({**T2V, "parameters": {"audio": True}}, 400, "InvalidParameter", "audio is not supported"),
        (
            {**T2V, "parameters": {"shot_type": "multi"}},
            400,
            "InvalidParameter",
            "shot_type 'multi'",
        ),
        (
            {**T2V, "parameters": {"resolution": "720P"}},
            400,
            "InvalidParameter",
            "resolution is not a parameter",
        ),
        (
            {"model": "wan2.2-i2v-plus", "input": {"img_url": "file:///x.png"}},
            400,
            "InvalidURL",
            "local path",
        ),
    ],
)
def test_create_errors(
    idle: Harness, body: dict[str, Any], status: int, code: str, message: str
) -> None:
    assert_error(idle.create(body), status, code, message)


def test_malformed_json(idle: Harness) -> None:
    res = idle.client.post(
        URL, content=b"{not json", headers=idle.headers(**{"Content-Type": "application/json"})
    )
    assert_error(res, 400, "InvalidParameter", "not valid JSON")


def test_body_size_limit(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(start_workers=False, max_body_bytes=2048)
    body = {**T2V, "input": {"prompt": "x" * 5000}}
    assert_error(h.create(body), 413, "BadRequest.TooLarge")


def test_throttling_per_key(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(start_workers=False, max_unfinished_per_key=2)
    assert h.create(T2V).status_code == 200
    assert h.create(T2V).status_code == 200
    assert_error(h.create(T2V), 429, "Throttling.RateQuota", "2 unfinished tasks")
    _other, secret = h.components.services.keys.create("other")
    assert h.create(T2V, key=secret).status_code == 200  # the limit is per key


# -- query --


def test_unknown_and_foreign_tasks_are_unknown(idle: Harness) -> None:
    task_id = idle.create(T2V).json()["output"]["task_id"]
    _, other = idle.components.services.keys.create("other")
    for tid, key in (("no-such-task", idle.key), (task_id, other)):
        res = idle.client.get(f"/api/v1/tasks/{tid}", headers=idle.headers(key))
        assert res.status_code == 200
        assert res.json()["output"] == {"task_id": tid, "task_status": "UNKNOWN"}


def test_pending_shape_and_url_variants(idle: Harness) -> None:
    task_id = idle.create(T2V).json()["output"]["task_id"]
    for path in (
        f"/api/v1/tasks/{task_id}",
        f"/api/v1/tasks/{task_id}/",
        f"/api/v1/tasks/{task_id}/?size=1280*720&duration=5",
    ):
        res = idle.client.get(path, headers=idle.headers())
        assert res.status_code == 200
        out = res.json()["output"]
        assert out["task_status"] == "PENDING" and TIME.match(out["submit_time"])
        assert out["queue_position"] == 0  # extension: nothing of its model is ahead
        assert (
            out["orig_prompt"] == "a cat" and "video_url" not in out and "usage" not in res.json()
        )


def test_full_lifecycle_and_download(harness_factory: Callable[..., Harness]) -> None:
    gate = threading.Event()
    h = harness_factory(runner=FakeRunner(gate=gate))
    task_id = h.create(
        {**T2V, "parameters": {"size": "832*480", "watermark": True, "seed": 42}}
    ).json()["output"]["task_id"]
    # RUNNING is visible as soon as the task is claimed; wait for its first progress report.
    running = h.wait(task_id, until=lambda b: b["output"].get("step") == 1)
    out = running["output"]
    assert TIME.match(out["scheduled_time"]) and out["step"] == 1 and out["total_steps"] == 4
    assert 0 <= out["progress"] <= 100
    gate.set()
    body = h.wait(task_id)
    out = body["output"]
    assert out["task_status"] == "SUCCEEDED", body
    assert all(TIME.match(out[k]) for k in ("submit_time", "scheduled_time", "end_time"))
    assert out["orig_prompt"] == out["actual_prompt"] == "a cat"
    assert body["usage"] == {"video_duration": 5, "video_ratio": "832*480", "video_count": 1}
    assert h.runner.calls[0].seed == 42
    task = h.components.store.get(task_id)
    assert task is not None and task.spec.watermark  # watermarking is the media layer's
    url = urlparse(out["video_url"])
    assert url.scheme == "http" and url.netloc == "testserver"
    video = h.client.get(f"{url.path}?{url.query}")
    assert video.status_code == 200 and video.headers["content-type"] == "video/mp4"
    path = h.settings.data_dir / "check.mp4"
    path.write_bytes(video.content)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert (s.width, s.height, s.average_rate, s.frames) == (832, 480, 30, 150)
    # A tampered or unsigned URL is refused.
    tampered = url.query.replace("Signature=", "Signature=x")
    assert_error(h.client.get(f"{url.path}?{tampered}"), 403, "AccessDenied")
    assert_error(h.client.get(url.path), 403, "AccessDenied")
    assert_error(h.client.get("/files/videos/other.mp4?" + url.query), 403, "AccessDenied")


def test_public_url_setting(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(public_url="https://videos.example.com/")
    task_id = h.create(T2V).json()["output"]["task_id"]
    assert h.wait(task_id)["output"]["video_url"].startswith(
        "https://videos.example.com/files/videos/"
    )


def test_engine_errors_end_failed_and_worker_survives(
    harness_factory: Callable[..., Harness],
) -> None:
    runner = FakeRunner(error=InvalidParameter("the first frame could not be decoded"))
    h = harness_factory(runner=runner)
    first = h.create(T2V).json()["output"]["task_id"]
    out = h.wait(first)["output"]
    assert (out["task_status"], out["code"], out["message"]) == (
        "FAILED",
        "InvalidParameter",
        "the first frame could not be decoded",
    )
    runner.error = RuntimeError("segfault-ish")
    second = h.create(T2V).json()["output"]["task_id"]
    out = h.wait(second)["output"]
    assert out["task_status"] == "FAILED" and out["code"] == "InternalError"
    assert second in out["message"] and "segfault" not in out["message"]  # no internals leak
    runner.error = None
    third = h.create(T2V).json()["output"]["task_id"]
    assert h.wait(third)["output"]["task_status"] == "SUCCEEDED"


# -- cancel --


def test_cancel_pending(idle: Harness) -> None:
    task_id = idle.create(T2V).json()["output"]["task_id"]
    res = idle.client.post(f"/api/v1/tasks/{task_id}/cancel", headers=idle.headers())
    assert res.status_code == 200 and set(res.json()) == {"request_id"}
    out = idle.get(task_id)["output"]
    assert out["task_status"] == "CANCELED" and TIME.match(out["end_time"])
    again = idle.client.post(
        f"/api/v1/tasks/{task_id}/cancel/",
        json={"model": "", "parameters": {}, "input": ""},
        headers=idle.headers(),
    )
    assert_error(again, 400, "UnsupportedOperation", "already ended \\(CANCELED\\)")
    assert_error(
        idle.client.post("/api/v1/tasks/nope/cancel", headers=idle.headers()),
        400,
        "UnsupportedOperation",
        "does not exist",
    )


def test_cancel_running_is_refused_in_strict_mode(harness_factory: Callable[..., Harness]) -> None:
    gate = threading.Event()
    h = harness_factory(runner=FakeRunner(gate=gate), cancel_running=False)
    task_id = h.create(T2V).json()["output"]["task_id"]
    h.wait(task_id, until=lambda b: b["output"]["task_status"] == "RUNNING")
    res = h.client.post(f"/api/v1/tasks/{task_id}/cancel", headers=h.headers())
    assert_error(res, 400, "UnsupportedOperation", "is RUNNING; only PENDING tasks")
    gate.set()
    assert h.wait(task_id)["output"]["task_status"] == "SUCCEEDED"


# -- list --


def test_list_only_callers_tasks_with_filters(idle: Harness) -> None:
    ids = [idle.create(T2V).json()["output"]["task_id"] for _ in range(3)]
    idle.create({"model": "wan2.6-t2v", "input": {"prompt": "x"}})
    _, other = idle.components.services.keys.create("other")
    idle.create(T2V, key=other)
    idle.client.post(f"/api/v1/tasks/{ids[0]}/cancel", headers=idle.headers())
    res = idle.client.get("/api/v1/tasks?page_no=1&page_size=10", headers=idle.headers())
    body = res.json()
    assert res.status_code == 200 and set(body) == {
        "request_id",
        "page_no",
        "page_size",
        "total",
        "tasks",
    }
    assert (body["page_no"], body["page_size"], body["total"]) == (1, 10, 4)
    item = body["tasks"][-1]
    assert (
        item["task_id"] == ids[0]
        and item["task_status"] == "CANCELED"
        and item["model_name"] == "wan2.1-t2v-turbo"
    )
    q = idle.client.get(
        "/api/v1/tasks",
        params={"model_name": "wan2.1-t2v-turbo", "status": "PENDING", "page_size": 1},
        headers=idle.headers(),
    ).json()
    assert q["total"] == 2 and len(q["tasks"]) == 1
    window = idle.client.get(
        "/api/v1/tasks",
        params={"start_time": "20000101000000", "end_time": "20000102000000"},
        headers=idle.headers(),
    ).json()
    assert window["total"] == 0
    assert_error(
        idle.client.get("/api/v1/tasks?start_time=yesterday", headers=idle.headers()),
        400,
        "InvalidParameter",
        "start_time",
    )
    assert_error(
        idle.client.get("/api/v1/tasks?status=DONE", headers=idle.headers()),
        400,
        "InvalidParameter",
        "status",
    )
    assert_error(
        idle.client.get("/api/v1/tasks?page_size=1000", headers=idle.headers()),
        400,
        "InvalidParameter",
        "page_size",
    )


# -- framework errors keep DashScope's shape --


def test_unknown_route_and_method(idle: Harness) -> None:
    assert_error(idle.client.get("/api/v1/nothing", headers=idle.headers()), 404, "NotFound")
    assert_error(
        idle.client.delete("/api/v1/tasks/x", headers=idle.headers()), 405, "UnsupportedOperation"
    )


def test_health(idle: Harness) -> None:
    assert idle.client.get("/health").json() == {"status": "ok"}


@pytest.mark.parametrize(
    "raw",
    [b"[" * 100_000 + b"]" * 100_000, b'{"model": ' + b"9" * 5000 + b"}", b"\xff\xfe\x00"],
)
def test_hostile_bodies_are_client_errors(idle: Harness, raw: bytes) -> None:
    res = idle.client.post(
        URL, content=raw, headers=idle.headers(**{"Content-Type": "application/json"})
    )
    assert_error(res, 400, "InvalidParameter", "not valid JSON")


@pytest.mark.parametrize("expires", ["²", "9" * 5000, "-1"])
def test_hostile_signatures_are_refused_not_crashing(idle: Harness, expires: str) -> None:
    res = idle.client.get("/files/videos/x.mp4", params={"Expires": expires, "Signature": "abc"})
    assert_error(res, 403, "AccessDenied")


def test_unexpected_errors_keep_the_shape_and_the_request_id(
    idle: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("database exploded with secret detail")

    monkeypatch.setattr(idle.components.services.tasks, "list", boom)
    client = TestClient(idle.client.app, raise_server_exceptions=False)
    res = client.get("/api/v1/tasks", headers=idle.headers())
    assert_error(res, 500, "InternalError", "An internal error has occurred")
    assert "secret detail" not in res.text


def test_timeouts_end_a_stuck_task_failed(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(runner=FakeRunner(gate=threading.Event()), task_timeout_seconds=0.5)
    task_id = h.create(T2V).json()["output"]["task_id"]
    out = h.wait(task_id)["output"]
    assert (out["task_status"], out["code"]) == ("FAILED", "RequestTimeOut")
    assert "took longer than the server's limit" in out["message"]


def test_a_task_may_choose_its_block_cache_and_the_engine_gets_it(harness: Harness) -> None:
    body = {**T2V, "parameters": {**T2V["parameters"], "cache": "fast"}}
    task_id = harness.create(body).json()["output"]["task_id"]
    assert harness.wait(task_id)["output"]["task_status"] == "SUCCEEDED"
    assert [r.cache.value for r in harness.runner.calls] == ["fast"]
    bad = {**T2V, "parameters": {**T2V["parameters"], "cache": "fastest"}}
    res = harness.create(bad)
    assert res.status_code == 400 and res.json()["code"] == "InvalidParameter"
    assert "cache" in res.json()["message"]


class CountingRunner(FakeRunner):
    """A fake engine that reports block evaluations, as the real one does."""

    def run(self, request: Any, *, on_progress: Any, should_cancel: Any) -> Any:
        clip = super().run(request, on_progress=on_progress, should_cancel=should_cancel)
        return dataclasses.replace(clip, blocks=BlockCount(computed=60, skipped=20))


def test_a_succeeded_task_shows_its_transformer_block_evaluations(
    harness_factory: Callable[..., Harness],
) -> None:
    counted = harness_factory(runner=CountingRunner())
    task_id = counted.create(T2V).json()["output"]["task_id"]
    out = counted.wait(task_id)["output"]
    assert out["task_status"] == "SUCCEEDED"
    assert out["transformer_blocks"] == {"computed": 60, "skipped": 20}
    # Kept with the task: a restart or another replica reads the same.
    stored = counted.components.store.get(task_id)
    assert stored is not None and stored.result is not None
    assert (stored.result.blocks_computed, stored.result.blocks_skipped) == (60, 20)
    # An engine that does not count shows nothing rather than zeros.
    plain = harness_factory()
    other = plain.create(T2V).json()["output"]["task_id"]
    assert "transformer_blocks" not in plain.wait(other)["output"]
