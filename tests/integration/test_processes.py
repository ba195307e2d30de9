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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.server import ServerProcess
from tests.waiting import scaled, wait_process, wait_until
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
    url = f"{base}/api/v1/tasks/{task_id}"
    body: dict[str, Any] = httpx.get(url, headers=headers, timeout=scaled(30)).json()
    return body


def create(base: str, headers: dict[str, str]) -> str:
    res = httpx.post(
        f"{base}/api/v1/services/aigc/video-generation/video-synthesis",
        json=T2V,
        headers=headers,
        timeout=scaled(30),
    )
    return str(res.json()["output"]["task_id"])


def wait_status(server: ServerProcess, task_id: str, headers: dict[str, str], status: str) -> Any:
    """The task's output once its status is `status` (bounded while it stops changing)."""
    return wait_until(
        lambda: poll(server.base, task_id, headers)["output"],
        lambda out: out["task_status"] == status,
        progress=lambda out: (out["task_status"], out.get("step")),
        interval=0.1,
        what=f"task {task_id} {status}",
    )


def wait_logged(proc: WorkerProcess, line: str) -> None:
    wait_until(proc.text, lambda text: line in text, interval=0.1, what=f"{line!r} in the log")


@pytest.fixture
def api_server(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(
        tmp_path / "data",
        WANSERVE_WORKERS="0",
        WANSERVE_SECRET_KEY=SECRET,
        WANSERVE_HEARTBEAT_SECONDS="0.3",
        # No test here needs the reaper: long enough that a worker starved of CPU on a busy
        # machine is never taken for dead (its task requeued under it).
        WANSERVE_HEARTBEAT_TIMEOUT_SECONDS=str(scaled(60)),
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
            "WANSERVE_HEARTBEAT_TIMEOUT_SECONDS": str(scaled(60)),
            "WANSERVE_X264_PRESET": "ultrafast",
            # On SIGTERM the run stops at its next step: a hang guard, not a race with it.
            "WANSERVE_SHUTDOWN_GRACE_SECONDS": str(scaled(300)),
            **env,
        },
    )


def test_api_only_server_and_a_worker_process(api_server: ServerProcess, tmp_path: Path) -> None:
    key = api_server.create_key()
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    assert "this process runs no generation" in api_server.log.read_text()
    task_id = create(api_server.base, headers)
    assert poll(api_server.base, task_id, headers)["output"]["task_status"] == "PENDING"

    proc = worker(tmp_path, api_server, "w", TEST_STEP_SECONDS="0.01").start()
    try:
        out = wait_status(api_server, task_id, headers, "SUCCEEDED")
        assert httpx.get(out["video_url"], timeout=scaled(30)).status_code == 200
        # Nothing in the API process ran it: the worker process did, on the task's only claim
        # (a run in the API process would have claimed it first, and counted an attempt).
        wait_logged(proc, f"task {task_id} succeeded")
    finally:
        proc.stop()
    assert column_of(api_server.data_dir, task_id, "attempts") == 1


def start_running_task(server: ServerProcess) -> tuple[str, dict[str, str]]:
    key = server.create_key()
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    return create(server.base, headers), headers


def test_sigterm_hands_the_running_task_back_then_exits(
    api_server: ServerProcess, tmp_path: Path
) -> None:
    # Many steps: the run cannot end on its own before the signal, however slow the machine.
    proc = worker(tmp_path, api_server, "w", TEST_STEP_SECONDS="0.3", WANSERVE_STEPS="1000")
    proc.start()
    try:
        task_id, headers = start_running_task(api_server)
        wait_status(api_server, task_id, headers, "RUNNING")
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.wait()
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
    # A run stuck in steps that never check for a stop: the first SIGTERM cannot stop it (and
    # there are so many that the run cannot end on its own first, however slow the machine).
    proc = worker(
        tmp_path,
        api_server,
        "w",
        TEST_STEP_SECONDS="0.3",
        TEST_IGNORE_STOP="1",
        WANSERVE_STEPS="1000",
    ).start()
    try:
        task_id, headers = start_running_task(api_server)
        wait_status(api_server, task_id, headers, "RUNNING")
        proc.signal(signal.SIGTERM)
        # The first signal was handled (so the second is not merged into it), and the process
        # is still waiting for the run's next step.
        wait_logged(proc, "SIGTERM: stopping")
        assert proc.proc is not None and proc.proc.poll() is None
        started = time.monotonic()
        proc.signal(signal.SIGTERM)
        code = proc.wait()
        took = time.monotonic() - started
        status = poll(api_server.base, task_id, headers)["output"]["task_status"]
        print(f"second SIGTERM -> exited {code} in {took:.2f} s, task {status}")
        # It was the second signal that ended it, not the first one's grace running out.
        assert code == 128 + signal.SIGTERM
        assert "SIGTERM again: exiting now" in proc.text()
        assert status == "PENDING", proc.text()[-3000:]
    finally:
        proc.stop()


def column_of(data_dir: Path, task_id: str, column: str) -> int:
    with sqlite3.connect(data_dir / "wanserve.db") as db:
        row = db.execute(f"SELECT {column} FROM tasks WHERE id = ?", (task_id,)).fetchone()
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
        # The run stops at its next step: a hang guard, not a race with it.
        WANSERVE_SHUTDOWN_GRACE_SECONDS=str(scaled(300)),
    )
    key = server.create_key()
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    server.start()
    try:
        task_id = create(server.base, headers)
        # Denoising, past the (uninterruptible) model load: the next step is the stop point.
        wait_until(
            lambda: column_of(tmp_path, task_id, "step"),
            lambda step: step >= 1,
            interval=0.1,
            what="denoising",
        )
        assert server.proc is not None
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        wait_process(server.proc)
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
