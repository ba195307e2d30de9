"""`wanserve generate` as a shell user runs it: a real subprocess whose stdout and stderr are
pipes (not a terminal), embedded with the real engine on tiny dummy checkpoints, and with
`--server` against real server processes (the upload flow for a local image, and Ctrl-C
canceling the task on the server)."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import av
import httpx
import numpy as np
import pytest
from PIL import Image

from tests.api.test_engine_http import SMALL
from tests.server import ServerProcess
from tests.video_files import video as make_video
from tests.waiting import scaled, wait_process

SECRET = "generate-test-secret-0123456789"
ENV = {
    **os.environ,
    "WANSERVE_MODELS": json.dumps(SMALL),
    "WANSERVE_WEIGHTS": "dummy",
    "WANSERVE_STEPS": "2",
    "WANSERVE_X264_PRESET": "ultrafast",
}
for name in ("WANSERVE_API_KEY", "DASHSCOPE_API_KEY", "WANSERVE_DATA_DIR"):
    ENV.pop(name, None)
# `python -m wanserve` with Ctrl-C's default meaning. A process started in the background by a
# shell without job control (a CI script, `make test &`) inherits SIGINT ignored, and Python then
# installs no KeyboardInterrupt handler: the SIGINT this file sends for a terminal's Ctrl-C would
# be dropped, and the client would wait on its event stream for ever.
AS_AT_A_TERMINAL = (
    "import runpy, signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
    "runpy.run_module('wanserve', run_name='__main__', alter_sys=True)"
)


def generate(*args: str, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "wanserve", "generate", *args],
        cwd=cwd,
        env={**ENV, **env},
        capture_output=True,
        text=True,
        timeout=scaled(600),
    )


def video(path: Path) -> tuple[int, int, float]:
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.duration is not None
        return stream.width, stream.height, round(float(stream.duration * stream.time_base), 2)


def png(path: Path) -> Path:
    pixels = np.random.default_rng(7).integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


@pytest.mark.timeout(scaled(900))
def test_embedded_run_writes_the_mp4_with_plain_progress_lines(tmp_path: Path) -> None:
    out = generate(
        "a cat in the snow", "-o", "cat.mp4", "--size", "832x480", "--seed", "5", cwd=tmp_path
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "cat.mp4\n"  # the path alone, for scripts
    assert video(tmp_path / "cat.mp4") == (832, 480, 5.0)
    # Not a terminal: no escape sequences, no carriage-return redraws, one line per change.
    assert "\x1b" not in out.stderr and "\r" not in out.stderr
    lines = [line for line in out.stderr.splitlines() if line.startswith("wanserve: ")]
    stages = [line.split(" (")[0].removeprefix("wanserve: ") for line in lines]
    expected = [
        "queued",
        "loading model",
        "denoising step 1 of 2",
        "denoising step 2 of 2",
        "decoding",
        "encoding",
    ]
    # Each change the command saw, in order; a stage shorter than its poll interval can pass
    # unseen (the queue when the worker is idle, two dummy steps, the flush after encoding
    # while decoding), the long dummy VAE decode cannot.
    seen = [s for s in dict.fromkeys(stages) if s in expected]
    assert seen == [s for s in expected if s in seen], out.stderr
    assert "decoding" in seen, out.stderr
    assert lines[-1].startswith("wanserve: task ") and lines[-1].endswith(" succeeded")
    assert not list(tmp_path.glob("wanserve-*")), "the temporary data directory was kept"


def test_invalid_options_are_one_line_and_exit_2(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    bad_duration = generate(
        "a cat", "-o", "x.mp4", "--duration", "7", "--data-dir", data, cwd=tmp_path
    )
    assert bad_duration.returncode == 2
    assert bad_duration.stderr.strip().splitlines()[-1].startswith("wanserve: InvalidParameter:")
    assert "duration" in bad_duration.stderr
    missing = generate("a cat", "-o", "x.mp4", "--image", "nope.png", cwd=tmp_path)
    assert missing.returncode == 2
    assert missing.stderr.strip() == "wanserve: img_url: no such file: nope.png"
    no_key = generate("a cat", "-o", "x.mp4", "--server", "http://127.0.0.1:9", cwd=tmp_path)
    assert no_key.returncode == 2 and "API key" in no_key.stderr
    assert not (tmp_path / "x.mp4").exists()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    data = tmp_path_factory.mktemp("generate-server")
    with ServerProcess(
        data,
        WANSERVE_MODELS=json.dumps(SMALL),
        WANSERVE_STEPS="2",
        WANSERVE_X264_PRESET="ultrafast",
        WANSERVE_SECRET_KEY=SECRET,
        WANSERVE_EVENTS_POLL_SECONDS="0.1",
    ) as server:
        yield server


@pytest.mark.timeout(scaled(900))
def test_server_run_uploads_a_local_image_and_downloads_the_video(
    server: ServerProcess, tmp_path: Path
) -> None:
    key = server.create_key()
    image = png(tmp_path / "first.png")
    out = generate(
        "the picture comes alive",
        "-o",
        "moving.mp4",
        "--server",
        server.base,
        "--image",
        str(image),
        "--resolution",
        "480P",
        "--duration",
        "3",
        cwd=tmp_path,
        DASHSCOPE_API_KEY=key,  # the SDK's variable works too
    )
    assert out.returncode == 0, out.stderr
    width, height, seconds = video(tmp_path / "moving.mp4")
    assert seconds == 3.0 and width / height == pytest.approx(160 / 120, rel=0.05)
    assert "\x1b" not in out.stderr
    assert "decoding (" in out.stderr and out.stderr.rstrip().endswith("succeeded")
    log = server.log.read_text()
    assert "GET /api/v1/uploads -> 200" in log and "POST /api/v1/uploads -> 200" in log
    assert "/events -> 200" in log


@pytest.mark.timeout(scaled(900))
def test_server_run_of_a_vace_function_uploads_the_source_video(
    server: ServerProcess, tmp_path: Path
) -> None:
    key = server.create_key()
    source = tmp_path / "source.mp4"
    make_video(seconds=1.0, fps=12, width=64, height=48, path=source)
    out = generate(
        "a fox in the snow",
        "-o",
        "wider.mp4",
        "--server",
        server.base,
        "--function",
        "video_outpainting",  # the model defaults to wan2.1-vace-plus
        "--video",
        str(source),
        "--scale",
        "1,1,1.5,1.5",
        cwd=tmp_path,
        WANSERVE_API_KEY=key,
    )
    assert out.returncode == 0, out.stderr
    assert video(tmp_path / "wider.mp4") == (1280, 720, 5.0)  # the model's default size
    assert "POST /api/v1/uploads -> 200" in server.log.read_text()


def test_server_refusals_exit_2_with_the_servers_code(
    server: ServerProcess, tmp_path: Path
) -> None:
    wrong_key = generate(
        "a cat", "-o", "x.mp4", "--server", server.base, "--api-key", "sk-wrong", cwd=tmp_path
    )
    assert wrong_key.returncode == 2
    assert wrong_key.stderr.strip() == "wanserve: InvalidApiKey: Invalid API-key provided."
    key = server.create_key()
    bad_size = generate(
        "a cat",
        "-o",
        "x.mp4",
        "--server",
        server.base,
        "--size",
        "1*1",
        cwd=tmp_path,
        WANSERVE_API_KEY=key,
    )
    assert bad_size.returncode == 2
    assert bad_size.stderr.strip().startswith("wanserve: InvalidParameter:")


def test_ctrl_c_cancels_the_task_on_the_server(tmp_path: Path) -> None:
    # An API-only server: the task stays queued until the client gives up on it.
    with ServerProcess(tmp_path / "api", WANSERVE_WORKERS="0", WANSERVE_SECRET_KEY=SECRET) as api:
        key = api.create_key()
        argv = ["generate", "a cat", "-o", "x.mp4", "--server", api.base, "--api-key", key]
        proc = subprocess.Popen(
            [sys.executable, "-c", AS_AT_A_TERMINAL, *argv],
            cwd=tmp_path,
            env=ENV,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            assert proc.stderr is not None
            first = proc.stderr.readline()  # the first progress line: the task is queued
            assert first.startswith("wanserve: queued"), first + proc.stderr.read()
            started = time.monotonic()
            proc.send_signal(signal.SIGINT)
            code = wait_process(proc)
            took = time.monotonic() - started
            rest = proc.stderr.read()
        finally:
            if proc.poll() is None:
                proc.kill()
                wait_process(proc)
            for pipe in (proc.stdout, proc.stderr):
                assert pipe is not None
                pipe.close()
        print(f"Ctrl-C: exited {code} in {took:.2f} s")
        assert code == 130, rest
        assert "interrupted; canceling the task" in rest
        listed = httpx.get(
            f"{api.base}/api/v1/tasks",
            headers={"Authorization": f"Bearer {key}"},
            timeout=scaled(30),
        ).json()
        assert [t["task_status"] for t in listed["tasks"]] == ["CANCELED"]
        assert not (tmp_path / "x.mp4").exists()
