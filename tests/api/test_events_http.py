"""Live events (`GET /api/v1/tasks/{id}/events`) through real server processes and a real SSE
client (httpx + httpx-sse).

An embedded server with the real engine (tiny dummy checkpoints) runs tasks to their end: a
queued task's position falls as the tasks ahead finish, its stages arrive in order, and a
reconnect with Last-Event-ID resumes. An API-only server (no generation: tasks stay PENDING
until canceled) covers refusals, keep-alives and shutdown cheaply.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from httpx_sse import ServerSentEvent, connect_sse

from tests.api.test_engine_http import SMALL
from tests.server import ServerProcess
from tests.waiting import join, scaled, wait_event, wait_process, wait_until

T2V = {"model": "wan2.1-t2v-turbo", "input": {"prompt": "a cat"}, "parameters": {"size": "832*480"}}
CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"
SECRET = "events-test-secret-0123456789"


def headers(key: str, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable", **extra}


def create(server: ServerProcess, key: str) -> str:
    res = httpx.post(server.base + CREATE, headers=headers(key), json=T2V, timeout=scaled(30))
    assert res.status_code == 200, res.text
    return str(res.json()["output"]["task_id"])


def events_of(
    server: ServerProcess, task_id: str, key: str, *, last_id: str | None = None, stop: int = 0
) -> list[ServerSentEvent]:
    """Every event of the stream until it closes (or, with `stop`, the first `stop` events)."""
    extra = {"Last-Event-ID": last_id} if last_id is not None else {}
    seen: list[ServerSentEvent] = []
    with (
        httpx.Client(
            base_url=server.base, timeout=httpx.Timeout(scaled(30), read=scaled(120))
        ) as client,
        connect_sse(
            client, "GET", f"/api/v1/tasks/{task_id}/events", headers=headers(key, **extra)
        ) as source,
    ):
        assert source.response.status_code == 200, source.response.read()
        assert source.response.headers["content-type"].startswith("text/event-stream")
        for event in source.iter_sse():
            if not event.data:
                continue  # httpx-sse passes a keep-alive comment on as an empty message
            seen.append(event)
            if stop and len(seen) == stop:
                break
    return seen


def poll(server: ServerProcess, task_id: str, key: str) -> Any:
    url = f"{server.base}/api/v1/tasks/{task_id}"
    return httpx.get(url, headers=headers(key), timeout=scaled(30)).json()


def wait_status(server: ServerProcess, task_id: str, key: str, status: str) -> None:
    wait_until(
        lambda: poll(server, task_id, key)["output"]["task_status"],
        lambda seen: seen == status,
        progress=lambda seen: seen,
        interval=0.1,
        what=f"task {task_id} to become {status}",
    )


def cancel(server: ServerProcess, task_id: str, key: str) -> None:
    url = f"{server.base}/api/v1/tasks/{task_id}/cancel"
    httpx.post(url, headers=headers(key), timeout=scaled(30))


def ids_increase(events: list[ServerSentEvent]) -> bool:
    ids = [int(e.id) for e in events]
    return ids == sorted(ids) and len(set(ids)) == len(ids)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("events-embedded")
    with ServerProcess(
        data,
        WANSERVE_MODELS=json.dumps(SMALL),
        WANSERVE_STEPS="2",
        WANSERVE_X264_PRESET="ultrafast",
        WANSERVE_SECRET_KEY=SECRET,
        WANSERVE_EVENTS_POLL_SECONDS="0.05",
    ) as server:
        yield server


@pytest.fixture(scope="module")
def api_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("events-api")
    with ServerProcess(
        data,
        WANSERVE_WORKERS="0",
        WANSERVE_SECRET_KEY=SECRET,
        WANSERVE_EVENTS_POLL_SECONDS="0.05",
        WANSERVE_EVENTS_KEEPALIVE_SECONDS="0.3",
        WANSERVE_EVENTS_MAX_STREAMS_PER_KEY="2",
        WANSERVE_RATE_LIMIT_PER_SECOND="0",
    ) as server:
        yield server


@pytest.mark.timeout(scaled(900))
def test_a_queued_task_moves_up_then_runs_through_every_stage(embedded: ServerProcess) -> None:
    key = embedded.create_key()
    create(embedded, key)  # runs first
    second, third = create(embedded, key), create(embedded, key)
    watched: list[ServerSentEvent] = []
    watcher = threading.Thread(
        target=lambda: watched.extend(events_of(embedded, third, key)), daemon=True
    )
    watcher.start()

    # The second task's stream, cut after its opening events while it waits...
    opening = events_of(embedded, second, key, stop=2)
    assert [e.event for e in opening] == ["status", "progress"]
    assert opening[0].json()["task_status"] == "PENDING"
    assert opening[1].json()["stage"] == "queued"
    # ...and resumed once it runs: a fresh status first, then only newer events.
    wait_status(embedded, second, key, "RUNNING")
    resumed = events_of(embedded, second, key, last_id=opening[-1].id)
    assert resumed[0].event == "status" and resumed[0].json()["task_status"] == "RUNNING"
    assert int(resumed[0].id) > int(opening[-1].id) and ids_increase(opening + resumed)
    assert resumed[-1].event == "done"
    # Resuming after the done event: nothing follows (204 stops an EventSource retrying).
    after = httpx.get(
        f"{embedded.base}/api/v1/tasks/{second}/events",
        headers=headers(key, **{"Last-Event-ID": resumed[-1].id}),
        timeout=scaled(30),
    )
    assert after.status_code == 204

    join(watcher, stall=600, what="the third task's stream")
    assert ids_increase(watched)
    statuses = [e.json() for e in watched if e.event == "status"]
    positions = [s["queue_position"] for s in statuses if s["task_status"] == "PENDING"]
    assert positions == [1, 0]  # the first task finished, then the second was taken
    assert [s["task_status"] for s in statuses] == ["PENDING", "PENDING", "RUNNING", "SUCCEEDED"]
    stages = [e.json()["stage"] for e in watched if e.event == "progress"]
    order = ["queued", "loading", "denoising", "decoding", "encoding"]
    # In order, never backwards. A stage shorter than the stream's poll interval can pass
    # unseen (two dummy denoising steps, or the flush after frames were encoded while
    # decoding); the dummy VAE decode is long enough to be seen every time.
    seen = list(dict.fromkeys(stages))
    assert seen == [s for s in order if s in seen] and seen[0] == "queued", stages
    assert "decoding" in seen, stages
    first_running = next(i for i, s in enumerate(stages) if s not in ("queued", "loading"))
    running = [e.json() for e in watched if e.event == "progress"][first_running:]
    assert [p["progress"] for p in running] == sorted(p["progress"] for p in running)
    assert all(p["total_steps"] == 2 for p in running)
    assert watched[-1].event == "done"
    done = watched[-1].json()
    final = poll(embedded, third, key)
    assert done["output"] == final["output"] and done["usage"] == final["usage"]
    assert done["output"]["task_status"] == "SUCCEEDED" and "video_url" in done["output"]


def test_unknown_and_other_keys_tasks_end_with_one_unknown_done(api_only: ServerProcess) -> None:
    owner, stranger = api_only.create_key(), api_only.create_key()
    task = create(api_only, owner)
    for task_id, key in (("no-such-task", owner), (task, stranger)):
        events = events_of(api_only, task_id, key)
        assert [e.event for e in events] == ["done"]
        body = events[0].json()
        assert body["output"] == {"task_id": task_id, "task_status": "UNKNOWN"}
        assert body["request_id"]
    # The owner sees it, with its place in the queue in polls too.
    polled = poll(api_only, task, owner)
    assert polled["output"]["queue_position"] >= 0
    cancel(api_only, task, owner)


def test_refusals_are_dashscope_errors(api_only: ServerProcess) -> None:
    key = api_only.create_key()
    url = f"{api_only.base}/api/v1/tasks/x/events"
    no_key = httpx.get(url, timeout=scaled(30))
    assert no_key.status_code == 401 and no_key.json()["code"] == "InvalidApiKey"
    bad_id = httpx.get(url, headers=headers(key, **{"Last-Event-ID": "1e9"}), timeout=scaled(30))
    assert bad_id.status_code == 400 and bad_id.json()["code"] == "InvalidParameter"
    assert bad_id.json()["request_id"]


def test_streams_per_key_are_capped_and_freed(api_only: ServerProcess) -> None:
    key = api_only.create_key()
    task = create(api_only, key)
    url = f"/api/v1/tasks/{task}/events"
    with httpx.Client(base_url=api_only.base, timeout=scaled(30)) as client:
        with (
            client.stream("GET", url, headers=headers(key)) as one,
            client.stream("GET", url, headers=headers(key)) as two,
        ):
            assert one.status_code == two.status_code == 200
            third = client.get(url, headers=headers(key))
            assert third.status_code == 429 and third.json()["code"] == "Throttling"
            other = api_only.create_key()  # the cap is per key
            with client.stream("GET", url, headers=headers(other)) as foreign:
                assert foreign.status_code == 200

        # Closed streams give their places back (the server notices at its next write).
        def reopen() -> int:
            with client.stream("GET", url, headers=headers(key)) as again:
                return again.status_code

        wait_until(reopen, lambda code: code == 200, interval=0.2, what="closed streams freed")
    cancel(api_only, task, key)


def test_keep_alives_then_done_when_the_task_is_canceled(api_only: ServerProcess) -> None:
    key = api_only.create_key()
    task = create(api_only, key)
    lines: list[str] = []
    with (
        httpx.Client(base_url=api_only.base, timeout=scaled(30)) as client,
        client.stream("GET", f"/api/v1/tasks/{task}/events", headers=headers(key)) as res,
    ):
        for line in res.iter_lines():
            lines.append(line)
            if line == ": keep-alive" and lines.count(line) == 2:
                cancel = client.post(f"/api/v1/tasks/{task}/cancel", headers=headers(key))
                assert cancel.status_code == 200
    events = [json.loads(line[len("data: ") :]) for line in lines if line.startswith("data: ")]
    assert events[0]["task_status"] == "PENDING"
    assert events[-1]["output"]["task_status"] == "CANCELED"
    assert lines.count("event: done") == 1


def test_sigterm_ends_open_streams_and_the_server_exits(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, WANSERVE_WORKERS="0", WANSERVE_SECRET_KEY=SECRET).start()
    try:
        key = server.create_key()
        task = create(server, key)
        ended = threading.Event()
        opened = threading.Event()

        def watch() -> None:
            with (
                httpx.Client(base_url=server.base, timeout=None) as client,
                client.stream("GET", f"/api/v1/tasks/{task}/events", headers=headers(key)) as res,
            ):
                for line in res.iter_lines():
                    if line.startswith("event:"):
                        opened.set()
            ended.set()

        threading.Thread(target=watch, daemon=True).start()
        wait_event(opened, what="the stream's first event")
        assert server.proc is not None
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        wait_event(ended, what="the stream's end after SIGTERM")
        # A graceful exit: uvicorn re-raises the signal once it has shut down.
        assert wait_process(server.proc) in (0, -signal.SIGTERM)
        print(f"SIGTERM with a stream open: exited in {time.monotonic() - started:.2f} s")
        log = server.log.read_text()
        assert "Finished server process" in log
        # The server ended the stream itself: uvicorn did not have to wait out its 60 s
        # graceful timeout for the open response and cancel it (it logs this line if it did).
        assert "timeout graceful shutdown exceeded" not in log, log[-3000:]
    finally:
        server.stop()
