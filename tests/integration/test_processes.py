"""The process model with real processes: an API that runs no generation and loads no torch,
`wanserve worker` processes beside it, and graceful shutdown (SIGTERM hands the running task
back to PENDING; a second signal exits at once)."""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import ServerProcess
from tests.worker_process import WorkerProcess

SECRET = "process-test-secret-0123456789"
T2V = {"model": "wan2.1-t2v-turbo", "input": {"prompt": "a fox"}, "parameters": {"size": "832*480"}}
HEAVY = ("torch", "diffusers", "transformers", "accelerate", "sentencepiece", "ftfy")

API_SNIPPET = """
import sys
from fastapi.testclient import TestClient
from wanserve.compose.api import create_api_only
from wanserve.compose.shared import build_shared
from wanserve.config import Settings

settings = Settings(data_dir=sys.argv[1], role="api", secret_key="s" * 32)
shared = build_shared(settings)
_, secret = shared.keys.create("t")
headers = {"Authorization": f"Bearer {secret}", "X-DashScope-Async": "enable"}
body = {"model": "wan2.1-t2v-turbo", "input": {"prompt": "a fox"}}
with TestClient(create_api_only(shared)) as client:
    res = client.post(
        "/api/v1/services/aigc/video-generation/video-synthesis", json=body, headers=headers
    )
    task_id = res.json()["output"]["task_id"]
    polled = client.get(f"/api/v1/tasks/{task_id}", headers=headers).json()
    print("STATUS", polled["output"]["task_status"])
print("LOADED", ",".join(sorted(m for m in sys.argv[2].split(",") if m in sys.modules)))
"""


def test_api_process_never_imports_the_engine(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-c", API_SNIPPET, str(tmp_path), ",".join(HEAVY)],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "STATUS PENDING" in out, out
    assert "LOADED \n" in out, out  # a real create and poll, and none of the heavy modules


def poll(base: str, task_id: str, headers: dict[str, str]) -> dict[str, Any]:
    body: dict[str, Any] = httpx.get(f"{base}/api/v1/tasks/{task_id}", headers=headers).json()
    return body


def wait_for(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)
    return result


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path / "data",
        WANSERVE_WORKERS="0",
        WANSERVE_SECRET_KEY=SECRET,
        WANSERVE_HEARTBEAT_SECONDS="0.3",
        WANSERVE_HEARTBEAT_TIMEOUT_SECONDS="2",
        WANSERVE_JANITOR_INTERVAL_SECONDS="0.5",
    )
    with server:
        yield server


def worker(tmp_path: Path, server: ServerProcess, name: str, **env: str) -> WorkerProcess:
    return WorkerProcess(
        tmp_path / f"{name}.log",
        env={
            "WANSERVE_DATA_DIR": str(server.data_dir),
            "WANSERVE_SECRET_KEY": SECRET,
            "WANSERVE_WEIGHTS": "dummy",
            "WANSERVE_STEPS": "20",
            "WANSERVE_HEARTBEAT_SECONDS": "0.3",
            "WANSERVE_HEARTBEAT_TIMEOUT_SECONDS": "2",
            "WANSERVE_X264_PRESET": "ultrafast",
            **env,
        },
    )


def test_api_only_server_and_a_worker_process(api_server: ServerProcess, tmp_path: Path) -> None:
    key = api_server.create_key()
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    assert "this process runs no generation" in api_server.log.read_text()
    res = httpx.post(
        f"{api_server.base}/api/v1/services/aigc/video-generation/video-synthesis",
        json=T2V,
        headers=headers,
    )
    task_id = res.json()["output"]["task_id"]
    time.sleep(1)  # nothing in the API process runs it
    assert poll(api_server.base, task_id, headers)["output"]["task_status"] == "PENDING"

    proc = worker(tmp_path, api_server, "w", TEST_STEP_SECONDS="0.01").start()
    try:
        out = wait_for(
            lambda: (
                (o := poll(api_server.base, task_id, headers)["output"])["task_status"]
                == "SUCCEEDED"
                and o
            ),
            timeout=60,
            what="the worker process did not run the task",
        )
        assert httpx.get(out["video_url"]).status_code == 200
    finally:
        proc.stop()


def start_running_task(server: ServerProcess) -> tuple[str, dict[str, str]]:
    key = server.create_key()
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    res = httpx.post(
        f"{server.base}/api/v1/services/aigc/video-generation/video-synthesis",
        json=T2V,
        headers=headers,
    )
    return res.json()["output"]["task_id"], headers


def test_sigterm_hands_the_running_task_back_then_exits(
    api_server: ServerProcess, tmp_path: Path
) -> None:
    proc = worker(tmp_path, api_server, "w", TEST_STEP_SECONDS="0.3").start()
    try:
        task_id, headers = start_running_task(api_server)
        wait_for(
            lambda: poll(api_server.base, task_id, headers)["output"]["task_status"] == "RUNNING",
            timeout=60,
            what="never RUNNING",
        )
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.wait(60)
        took = time.monotonic() - started
        status = poll(api_server.base, task_id, headers)["output"]["task_status"]
        print(f"worker SIGTERM -> task {status}, process exited {code} in {took:.2f} s")
        assert (status, code) == ("PENDING", 0), proc.text()[-3000:]
        assert "handed back to the queue" in proc.text()
    finally:
        proc.stop()


def test_second_signal_exits_at_once_and_hands_back(
    api_server: ServerProcess, tmp_path: Path
) -> None:
    # A run stuck in a step that never checks for a stop: the first SIGTERM cannot stop it.
    proc = worker(tmp_path, api_server, "w", TEST_STEP_SECONDS="0.3", TEST_IGNORE_STOP="1").start()
    try:
        task_id, headers = start_running_task(api_server)
        wait_for(
            lambda: poll(api_server.base, task_id, headers)["output"]["task_status"] == "RUNNING",
            timeout=60,
            what="never RUNNING",
        )
        proc.signal(signal.SIGTERM)
        time.sleep(0.5)
        assert proc.proc is not None and proc.proc.poll() is None  # still waiting for a step
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.wait(30)
        took = time.monotonic() - started
        status = poll(api_server.base, task_id, headers)["output"]["task_status"]
        print(f"second SIGTERM -> exited {code} in {took:.2f} s, task {status}")
        assert code == 128 + signal.SIGTERM
        assert status == "PENDING", proc.text()[-3000:]
    finally:
        proc.stop()


def step_of(data_dir: Path, task_id: str) -> int:
    with sqlite3.connect(data_dir / "wanserve.db") as db:
        row = db.execute("SELECT step FROM tasks WHERE id = ?", (task_id,)).fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
def test_embedded_server_sigterm_hands_back_with_dummy_weights(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path,
        # Many short steps (a small pixel budget): caught mid-run at once, stopped at the next.
        WANSERVE_STEPS="1000",
        WANSERVE_MODELS=json.dumps({"wan2.1-t2v-turbo": {"max_area": 80 * 48}}),
        WANSERVE_HEARTBEAT_SECONDS="0.5",
        # The reaper must not be what hands the task back: it would wait a minute.
        WANSERVE_HEARTBEAT_TIMEOUT_SECONDS="60",
    )
    key = server.create_key()
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    server.start()
    try:
        res = httpx.post(
            f"{server.base}/api/v1/services/aigc/video-generation/video-synthesis",
            json=T2V,
            headers=headers,
        )
        task_id = res.json()["output"]["task_id"]
        # Denoising, past the (uninterruptible) model load: the next step is the stop point.
        wait_for(lambda: step_of(tmp_path, task_id) >= 1, timeout=180, what="never denoising")
        assert server.proc is not None
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(120)
        took = time.monotonic() - started
    finally:
        server.stop()
    with sqlite3.connect(tmp_path / "wanserve.db") as db:
        status, attempts = db.execute(
            "SELECT status, attempts FROM tasks WHERE id = ?", (task_id,)
        ).fetchone()
    print(f"embedded SIGTERM -> task {status} after {attempts} attempt(s); exited in {took:.2f} s")
    assert status == "PENDING", server.log.read_text()[-3000:]
    assert "handed back to the queue" in server.log.read_text()
