"""End-to-end latency of one dummy-mode video through HTTP: submit -> SUCCEEDED -> download.

Starts a real `wanserve serve --weights dummy` process on a scratch data directory, submits
a wan2.1-t2v-turbo request (832*480, 5 s, 30 fps output: 81 native frames, 150 encoded), polls
it like a client would, and prints the wall time of each phase the task reported.

    python bench/dummy_latency.py                # dummy default: 4 denoising steps
    python bench/dummy_latency.py --steps 50     # the family's official step count
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--steps", type=int, default=None, help="denoising steps (default: dummy mode's 4)"
    )
    parser.add_argument("--size", default="832*480")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "WANSERVE_DATA_DIR": data_dir, "WANSERVE_WEIGHTS": "dummy"}
        if args.steps:
            env["WANSERVE_STEPS"] = str(args.steps)
        key = subprocess.run(
            [sys.executable, "-m", "wanserve", "keys", "create"],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()[-1]
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        log = Path(data_dir) / "server.log"
        with log.open("wb") as out:
            server = subprocess.Popen(
                [sys.executable, "-m", "wanserve", "serve", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=out,
            )
        try:
            _wait_healthy(base)
            headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
            body = {
                "model": "wan2.1-t2v-turbo",
                "input": {"prompt": "a cat"},
                "parameters": {"size": args.size},
            }
            t0 = time.monotonic()
            task_id = httpx.post(
                f"{base}/api/v1/services/aigc/video-generation/video-synthesis",
                json=body,
                headers=headers,
            ).json()["output"]["task_id"]
            marks: dict[str, float] = {}
            while True:
                out = httpx.get(f"{base}/api/v1/tasks/{task_id}", headers=headers).json()["output"]
                now = time.monotonic() - t0
                status, progress = out["task_status"], out.get("progress", 0)
                if status == "RUNNING":
                    marks.setdefault("running", now)
                    if progress >= 85:
                        marks.setdefault("denoised (decode starts)", now)
                    if progress >= 95:
                        marks.setdefault("decoded (encode starts)", now)
                if status not in ("PENDING", "RUNNING"):
                    marks["finished"] = now
                    break
                time.sleep(0.25)
            if status != "SUCCEEDED":
                print(f"task ended {status}: {out}")
                return 1
            video = httpx.get(out["video_url"], timeout=60)
            marks["downloaded"] = time.monotonic() - t0
            steps = args.steps or "4 (dummy default)"
            megabytes = len(video.content) / 1e6
            print(f"wan2.1-t2v-turbo {args.size}, 5 s, steps={steps}: {megabytes:.1f} MB MP4")
            for name, at in marks.items():
                print(f"  {name:<26} {at:7.1f} s")
            print(f"end-to-end: {marks['downloaded']:.1f} s")
        finally:
            server.terminate()
            server.wait(60)
    return 0


def _wait_healthy(base: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{base}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError("server did not start")


if __name__ == "__main__":
    raise SystemExit(main())
