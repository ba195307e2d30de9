"""A server killed with SIGKILL while a task is RUNNING loses nothing: after a restart the task
is handed back to the queue and finishes.

The task is held RUNNING deterministically, inside prompt extension (a local chat server that
does not answer until told), so the kill always lands mid-task, however fast or busy the machine
is, and the engine does a small amount of work (a small pixel budget, one step): what is tested
is recovery, not generation speed.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.api.test_engine_http import SMALL
from tests.llm_server import Script, llm_server
from tests.server import ServerProcess
from tests.waiting import scaled, wait_until

pytestmark = pytest.mark.slow


def test_sigkill_mid_task_then_restart(tmp_path: Path) -> None:
    script = Script(reply="a red fox runs through the snow", hold=threading.Event())
    with llm_server(script) as llm:
        server = ServerProcess(
            tmp_path,
            WANSERVE_STEPS="1",
            WANSERVE_MODELS=json.dumps(SMALL),
            WANSERVE_X264_PRESET="ultrafast",
            WANSERVE_PROMPT_EXTENDER="openai",
            WANSERVE_PROMPT_EXTENDER_URL=llm,
            # The held request must not time out and fall back before the kill.
            WANSERVE_PROMPT_EXTENDER_TIMEOUT=str(scaled(3600)),
            WANSERVE_HEARTBEAT_SECONDS="0.5",
            # Stretched on slow machines, so that a live server starved of CPU is not taken
            # for dead (the restarted one reaps the killed one's task after it).
            WANSERVE_HEARTBEAT_TIMEOUT_SECONDS=str(scaled(5)),
            WANSERVE_JANITOR_INTERVAL_SECONDS="1",
        )
        key = server.create_key()
        headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}

        def output() -> dict[str, Any]:
            res = httpx.get(
                f"{server.base}/api/v1/tasks/{task_id}", headers=headers, timeout=scaled(60)
            )
            body: dict[str, Any] = res.json()["output"]
            return body

        server.start()
        try:
            res = httpx.post(
                f"{server.base}/api/v1/services/aigc/video-generation/video-synthesis",
                json={
                    "model": "wan2.1-t2v-turbo",
                    "input": {"prompt": "a fox"},
                    "parameters": {"size": "832*480", "prompt_extend": True},
                },
                headers=headers,
                timeout=scaled(60),
            )
            task_id = res.json()["output"]["task_id"]
            wait_until(lambda: len(script.requests), lambda n: n == 1, what="prompt extension")
            assert output()["task_status"] == "RUNNING"
            server.kill()
            script.hold.set()  # type: ignore[union-attr]
            server.start()
            out = wait_until(
                output,
                lambda o: o["task_status"] not in ("PENDING", "RUNNING"),
                progress=lambda o: (o["task_status"], o.get("step")),
                what=f"task {task_id} after the restart",
            )
            assert out["task_status"] == "SUCCEEDED", out
            # The second attempt ran the task again from the start, prompt extension included.
            assert len(script.requests) == 2
            assert out["actual_prompt"] == script.reply
            assert httpx.get(out["video_url"], timeout=scaled(60)).status_code == 200
        finally:
            server.stop()
