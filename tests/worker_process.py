"""A real `wanserve worker` process with a slow fake at the engine seam.

`python -m tests.worker_process` runs exactly what `wanserve worker` runs (`run_worker`:
settings from WANSERVE_* variables, start-up checks, store, consumer, signals), except that
the runner sleeps `TEST_STEP_SECONDS` per denoising step instead of loading a model, so a test
can catch a task mid-run and kill or stop the process. `TEST_IGNORE_STOP=1` makes it never
notice a stop request (a run stuck in one long step).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np

from tests.waiting import pause, wait_process
from wanserve.config import Settings
from wanserve.engine.errors import Canceled
from wanserve.engine.request import (
    CancelFn,
    Clip,
    EngineProgress,
    GenerationRequest,
    ProgressFn,
    Stage,
)


class SlowRunner:
    def __init__(self, *, step_seconds: float, ignore_stop: bool) -> None:
        self._step = step_seconds
        self._ignore_stop = ignore_stop

    def run(
        self, request: GenerationRequest, *, on_progress: ProgressFn, should_cancel: CancelFn
    ) -> Clip:
        for step in range(1, request.steps + 1):
            pause(self._step)
            if should_cancel() and not self._ignore_stop:
                raise Canceled()
            on_progress(EngineProgress(Stage.DENOISE, step, request.steps))
        rng = np.random.default_rng(request.seed)
        frames = rng.integers(0, 256, size=(request.num_frames, 48, 64, 3), dtype=np.uint8)
        return Clip(frames=frames, fps=request.fps)


class WorkerProcess:
    """Start and signal one worker subprocess; its log goes to `log`."""

    def __init__(self, log: Path, *, env: dict[str, str]) -> None:
        self.log = log
        self.env = {**os.environ, **env}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> WorkerProcess:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.worker_process"],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self) -> int:
        """The exit status, once it exits (bounded by tests/waiting.py)."""
        assert self.proc is not None
        return wait_process(self.proc)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            wait_process(self.proc)

    def text(self) -> str:
        return self.log.read_text(errors="replace")


def main() -> int:
    from wanserve.compose.worker import run_worker

    settings = Settings()
    logging.basicConfig(level="INFO", format="%(asctime)s %(name)s: %(message)s")
    runner = SlowRunner(
        step_seconds=float(os.environ.get("TEST_STEP_SECONDS", "0.1")),
        ignore_stop=os.environ.get("TEST_IGNORE_STOP") == "1",
    )
    return run_worker(settings, runner=runner)


if __name__ == "__main__":
    raise SystemExit(main())
