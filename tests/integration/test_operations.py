"""Operations against real processes: webhooks survive a SIGKILL mid-outbox, `/metrics` of a
server that ran tasks parses and moves, `/ready` follows the database, and a
`wanserve worker` serves its own metrics port."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.server import ServerProcess, free_port
from tests.webhook_receiver import webhook_receiver
from tests.worker_process import WorkerProcess
from wanserve.catalog import Catalog

SECRET = "operations-test-secret-0123456789"
# Tiny denoising sizes and one step: the real engine on dummy weights, in seconds.
TINY = json.dumps({name: {"max_area": 80 * 48} for name in Catalog.build().names()})
CREATE = "/api/v1/services/aigc/video-generation/video-synthesis"
T2V = {"model": "wan2.1-t2v-turbo", "input": {"prompt": "a fox"}, "parameters": {"size": "832*480"}}


def wait_for(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.2)
    return result


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
    res = httpx.get(f"{server.base}/api/v1/tasks/{task_id}", headers=headers, timeout=10)
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
            # A long wait after the first failure: the kill lands while the message waits.
            WANSERVE_WEBHOOK_BACKOFF_SECONDS="[3]",
        )
        key = server.create_key()
        key_id = server.cli("keys", "list").splitlines()[1].split()[0]
        rx.secret = server.cli("keys", "webhook-secret", key_id).strip()
        headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
        server.start()
        try:
            body = {**T2V, "parameters": {**T2V["parameters"], "callback_url": rx.url}}
            task_id = httpx.post(f"{server.base}{CREATE}", json=body, headers=headers).json()[
                "output"
            ]["task_id"]
            [first] = rx.wait_for(lambda got: len(got) >= 1, timeout=300)
            # Killed while the message waits for its retry (its failure recorded).
            wait_for(
                lambda: _outbox(tmp_path) == [("pending", 1)], timeout=30, what="no retry owed"
            )
            server.kill()  # SIGKILL: nothing is flushed, no shutdown hook runs
            rx.script = [503, 200]
            server.start()
            got = rx.wait_for(lambda got: any(r.answered == 200 for r in got), timeout=120)
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
        assert httpx.get(f"{server.base}/health").status_code == 200
        before = samples(httpx.get(f"{server.base}/metrics").text)
        ids = [
            httpx.post(f"{server.base}{CREATE}", json=T2V, headers=headers).json()["output"][
                "task_id"
            ]
            for _ in range(2)
        ]
        for task_id in ids:
            wait_for(
                lambda t=task_id: status_of(server, t, headers) == "SUCCEEDED",
                timeout=300,
                what="task never succeeded",
            )
        ready = httpx.get(f"{server.base}/ready")
        after = wait_for(
            lambda: (
                (s := samples(httpx.get(f"{server.base}/metrics").text))
                and total(s, "wanserve_tasks", model="wan2.1-t2v-turbo", status="SUCCEEDED") == 2
                and s
            ),
            timeout=30,
            what="the task gauges never showed both tasks",
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
        assert httpx.get(f"{server.base}/ready").status_code == 200
        up = samples(httpx.get(f"{server.base}/metrics").text)
        assert total(up, "wanserve_store_up") == 1
        name = postgres_url.rsplit("/", 1)[1]
        admin = postgres_url.rsplit("/", 1)[0].replace("postgresql+psycopg", "postgresql")
        with psycopg.connect(f"{admin}/postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        res = wait_for(
            lambda: (r := httpx.get(f"{server.base}/ready", timeout=30)).status_code == 503 and r,
            timeout=60,
            what="/ready never noticed the database was gone",
        )
        assert httpx.get(f"{server.base}/health").status_code == 200  # alive, not ready
        down = wait_for(
            lambda: (
                (s := samples(httpx.get(f"{server.base}/metrics", timeout=30).text))
                and total(s, "wanserve_store_up") == 0
                and s
            ),
            timeout=30,
            what="the metrics never reported the store down",
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
            wait_for(lambda: _get(f"{base}/ready") == 200, timeout=60, what="worker never ready")
            assert _get(f"{base}/health") == 200
            assert _get(f"{base}/nowhere") == 404
            task_id = httpx.post(f"{api.base}{CREATE}", json=T2V, headers=headers).json()["output"][
                "task_id"
            ]
            wait_for(
                lambda: status_of(api, task_id, headers) == "SUCCEEDED",
                timeout=120,
                what="the worker never ran the task",
            )
            found = wait_for(
                lambda: (
                    (s := samples(httpx.get(f"{base}/metrics").text))
                    and total(s, "wanserve_task_duration_seconds_count", status="SUCCEEDED") == 1
                    and s
                ),
                timeout=30,
                what="the worker's metrics never counted the task",
            )
        finally:
            proc.stop()
    assert total(found, "wanserve_step_duration_seconds_count") == 2  # 3 steps, 2 gaps
    assert "wanserve_tasks" not in found  # fleet gauges come from the API processes


def _get(url: str) -> int:
    try:
        return httpx.get(url, timeout=5).status_code
    except httpx.HTTPError:
        return 0
