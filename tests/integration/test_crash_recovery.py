"""A server killed with SIGKILL mid-generation loses nothing: after a restart the task is
handed back to the queue and finishes."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from tests.server import ServerProcess

pytestmark = pytest.mark.slow


def test_sigkill_mid_task_then_restart(tmp_path: Path) -> None:
    server = ServerProcess(
        tmp_path,
        WANSERVE_STEPS="1",
        WANSERVE_HEARTBEAT_SECONDS="0.5",
        WANSERVE_HEARTBEAT_TIMEOUT_SECONDS="3",
        WANSERVE_JANITOR_INTERVAL_SECONDS="1",
    )
    key = server.create_key()
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    server.start()
    try:
        res = httpx.post(
            f"{server.base}/api/v1/services/aigc/video-generation/video-synthesis",
            json={
                "model": "wan2.1-t2v-turbo",
                "input": {"prompt": "a fox"},
                "parameters": {"size": "832*480"},
            },
            headers=headers,
        )
        task_id = res.json()["output"]["task_id"]
        deadline = time.monotonic() + 60
        while (
            httpx.get(f"{server.base}/api/v1/tasks/{task_id}", headers=headers).json()["output"][
                "task_status"
            ]
            != "RUNNING"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.2)
        server.kill()
        server.start()
        deadline = time.monotonic() + 180
        while True:
            out = httpx.get(f"{server.base}/api/v1/tasks/{task_id}", headers=headers).json()[
                "output"
            ]
            if out["task_status"] == "SUCCEEDED":
                break
            assert out["task_status"] in ("RUNNING", "PENDING"), out
            assert time.monotonic() < deadline, out
            time.sleep(0.5)
        assert httpx.get(out["video_url"]).status_code == 200
    finally:
        server.stop()
