"""Operations against real processes: webhooks survive a SIGKILL mid-outbox, `/metrics` of a
server that ran tasks parses and moves, `/ready` follows the database, and a
`wanserve worker` serves its own metrics port."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server import ServerProcess, free_port
from tests.waiting import scaled, wait_until
from tests.webhook_receiver import webhook_receiver
from tests.worker_process import WorkerProcess
from wanserve.catalog import Catalog

SECRET = "operations-test-secret-0123456789"
# Tiny denoising sizes and one step: the real engine on dummy weights, in seconds.
TINY = json.dumps({name: {"max_area": 80 * 48} for name in Catalog.build().names()})
CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"
T2V = {"model": "wan2.1-t2v-turbo", "input": {"prompt": "a fox"}, "parameters": {"size": "832*480"}}


def wait_for(check: Callable[[], Any], *, what: str) -> Any:
    """Poll `check` until it returns something truthy (tests/waiting.py's bound)."""
    return wait_until(check, lambda result: bool(result), interval=0.2, what=what)


def post(server: ServerProcess, body: dict[str, Any], headers: dict[str, str]) -> str:
    res = httpx.post(f"{server.base}{CREATE}", json=body, headers=headers, timeout=scaled(30))
    return str(res.json()["output"]["task_id"])


def get(url: str) -> httpx.Response:
    return httpx.get(url, timeout=scaled(30))


def samples(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Every sample of a Prometheus exposition, by sample name (parsed by the reference
    parser, so a malformed exposition fails here)."""
    found: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found.setdefault(s.name, []).append((dict(s.labels), float(s.value)))
    return found


def total(found: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(
        v for lbl, v in found.get(name, []) if all(lbl.get(k) == x for k, x in labels.items())
    )


def status_of(server: ServerProcess, task_id: str, headers: dict[str, str]) -> str:
    res = httpx.get(f"{server.base}/api/v1/tasks/{task_id}", headers=headers, timeout=scaled(30))
    return str(res.json()["output"]["task_status"])


@pytest.mark.slow  # the real engine (dummy weights) loads in each server start
def test_a_webhook_owed_before_a_crash_is_delivered_after_restart(tmp_path: Path) -> None:
    with webhook_receiver(script=[503]) as rx:
        server = ServerProcess(
            tmp_path,
            WANSERVE_MODELS=TINY,
            WANSERVE_STEPS="1",
            WANSERVE_SECRET_KEY=SECRET,
            WANSERVE_FETCH_ALLOW_PRIVATE="true",  # the receiver is on loopback
            # A wait after the first failure longer than any crash and restart: the kill always
            # lands while the message waits; the test then makes it due (see below).
            WANSERVE_WEBHOOK_BACKOFF_SECONDS="[3600]",
        )
        key = server.create_key()
        key_id = server.cli("keys", "list").splitlines()[1].split()[0]
        rx.secret = server.cli("keys", "webhook-secret", key_id).strip()
        headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
        server.start()
        try:
            body = {**T2V, "parameters": {**T2V["parameters"], "callback_url": rx.url}}
            task_id = post(server, body, headers)
            [first] = rx.wait_for(lambda got: len(got) >= 1, timeout=scaled(300))
            # Killed while the message waits for its retry (its failure recorded).
            wait_for(lambda: _outbox(tmp_path) == [("pending", 1)], what="a retry owed")
            server.kill()  # SIGKILL: nothing is flushed, no shutdown hook runs
            # The server stays down past the retry's due time: its backoff is over.
            with sqlite3.connect(tmp_path / "wanserve.db") as db:
                db.execute("UPDATE webhook_outbox SET next_attempt_at = created_at")
            rx.script = [503, 200]
            server.start()
            got = rx.wait_for(lambda got: any(r.answered == 200 for r in got), timeout=scaled(300))
            assert status_of(server, task_id, headers) == "SUCCEEDED"
        finally:
            server.stop()
    delivered = got[-1]
    assert first.verified and delivered.verified
    assert delivered.headers["webhook-id"] == first.headers["webhook-id"]  # the same message
    assert delivered.json["output"]["task_id"] == task_id
    assert delivered.json["output"]["task_status"] == "SUCCEEDED"
    assert _outbox(tmp_path) == [("delivered", 2)]


def _outbox(data_dir: Path) -> list[tuple[str, int]]:
    with sqlite3.connect(data_dir / "wanserve.db") as db:
        return [
            (str(state), int(attempts))
            for state, attempts in db.execute(
                "SELECT state, attempts FROM webhook_outbox WHERE last_error IS NOT NULL"
                " OR state = 'delivered'"
            )
        ]


@pytest.mark.slow
def test_metrics_of_a_server_that_ran_tasks(tmp_path: Path) -> None:
    server = ServerProcess(tmp_path, WANSERVE_MODELS=TINY, WANSERVE_STEPS="2")
    key = server.create_key()
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    with server:
        assert get(f"{server.base}/health").status_code == 200
        before = samples(get(f"{server.base}/metrics").text)
        ids = [post(server, T2V, headers) for _ in range(2)]
        for task_id in ids:
            wait_until(
                lambda t=task_id: status_of(server, t, headers),
                lambda status: status == "SUCCEEDED",
                progress=lambda status: status,
                interval=0.2,
                what=f"task {task_id} SUCCEEDED",
            )
        ready = get(f"{server.base}/ready")
        after = wait_for(
            lambda: (
                (s := samples(get(f"{server.base}/metrics").text))
                and total(s, "wanserve_tasks", model="wan2.1-t2v-turbo", status="SUCCEEDED") == 2
                and s
            ),
            what="the task gauges to show both tasks",
        )
    assert ready.status_code == 200 and ready.json() == {"status": "ready"}
    # HTTP requests by route template: one series for every task's polls, none per id.
    route = "/api/v1/tasks/{task_id}"
    assert total(after, "wanserve_http_requests_total", route=route, status="200") >= 2
    assert not any(t in str(lbl) for t in ids for lbl, _ in after["wanserve_http_requests_total"])
    assert (
        total(
            after,
            "wanserve_http_requests_total",
            route=CREATE.replace("video-generation", "{task_group}"),
            status="200",
        )
        == 2
    )
    assert total(after, "wanserve_http_request_duration_seconds_count") > total(
        before, "wanserve_http_request_duration_seconds_count"
    )
    # Store gauges, queue, durations, engine.
    assert total(after, "wanserve_store_up") == 1
    assert total(after, "wanserve_queue_depth", model="wan2.1-t2v-turbo") == 0
    assert total(after, "wanserve_queue_oldest_pending_seconds", model="wan2.1-t2v-turbo") == 0
    assert total(before, "wanserve_tasks") == 0
    assert (
        total(
            after,
            "wanserve_task_duration_seconds_count",
            status="SUCCEEDED",
            model="wan2.1-t2v-turbo",
        )
        == 2
    )
    assert total(after, "wanserve_step_duration_seconds_count", model="wan2.1-t2v-turbo") == 2
    assert total(after, "wanserve_model_loads_total") == 1  # loaded once, then resident
    assert total(after, "wanserve_engine_resident_bytes") > 0
    assert total(before, "wanserve_engine_resident_bytes") == 0
    assert total(after, "wanserve_model_evictions_total") == 0  # no memory budget set
    assert total(after, "wanserve_webhook_deliveries_total", outcome="delivered") == 0
    assert total(after, "wanserve_webhook_outbox_pending") == 0


def test_ready_follows_the_database(tmp_path: Path, postgres_url: str) -> None:
    server = ServerProcess(
        tmp_path,
        WANSERVE_ROLE="api",
        WANSERVE_SECRET_KEY=SECRET,
        WANSERVE_DATABASE_URL=postgres_url,
    )
    with server:
        assert get(f"{server.base}/ready").status_code == 200
        up = samples(get(f"{server.base}/metrics").text)
        assert total(up, "wanserve_store_up") == 1
        name = postgres_url.rsplit("/", 1)[1]
        admin = postgres_url.rsplit("/", 1)[0].replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        res = wait_for(
            lambda: (r := get(f"{server.base}/ready")).status_code == 503 and r,
            what="/ready to notice the database was gone",
        )
        assert get(f"{server.base}/health").status_code == 200  # alive, not ready
        down = wait_for(
            lambda: (
                (s := samples(get(f"{server.base}/metrics").text))
                and total(s, "wanserve_store_up") == 0
                and s
            ),
            what="the metrics to report the store down",
        )
    body = res.json()
    assert body["code"] == "ServiceUnavailable" and body["request_id"]
    assert body["message"].startswith("Not ready: database:")
    assert "storage" not in body["message"]  # only what is not ready is listed
    assert "wanserve_tasks" not in down


def test_a_worker_serves_its_own_metrics(tmp_path: Path) -> None:
    # The API decides a task's step count when it builds the spec.
    api = ServerProcess(
        tmp_path / "data", WANSERVE_WORKERS="0", WANSERVE_SECRET_KEY=SECRET, WANSERVE_STEPS="3"
    )
    port = free_port()
    with api:
        key = api.create_key()
        headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
        proc = WorkerProcess(
            tmp_path / "worker.log",
            env={
                "WANSERVE_DATA_DIR": str(api.data_dir),
                "WANSERVE_SECRET_KEY": SECRET,
                "WANSERVE_STEPS": "3",
                "WANSERVE_X264_PRESET": "ultrafast",
                "WANSERVE_METRICS_PORT": str(port),
                "TEST_STEP_SECONDS": "0.05",
            },
        ).start()
        base = f"http://127.0.0.1:{port}"
        try:
            wait_for(lambda: _get(f"{base}/ready") == 200, what="the worker to be ready")
            assert _get(f"{base}/health") == 200
            assert _get(f"{base}/nowhere") == 404
            task_id = post(api, T2V, headers)
            wait_for(
                lambda: status_of(api, task_id, headers) == "SUCCEEDED",
                what="the worker to run the task",
            )
            found = wait_for(
                lambda: (
                    (s := samples(get(f"{base}/metrics").text))
                    and total(s, "wanserve_task_duration_seconds_count", status="SUCCEEDED") == 1
                    and s
                ),
                what="the worker's metrics to count the task",
            )
        finally:
            proc.stop()
    assert total(found, "wanserve_step_duration_seconds_count") == 2  # 3 steps, 2 gaps
    assert "wanserve_tasks" not in found  # fleet gauges come from the API processes


def _get(url: str) -> int:
    try:
        return get(url).status_code
    except httpx.HTTPError:
        return 0
