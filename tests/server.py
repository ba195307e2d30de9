"""A real `wanserve serve` process for end-to-end tests (like vLLM's RemoteOpenAIServer)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.waiting import scaled, wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    def __init__(self, data_dir: Path, *, port: int | None = None, **env: str) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.env = {
            **os.environ,
            "WANSERVE_DATA_DIR": str(data_dir),
            "WANSERVE_WEIGHTS": "dummy",
            "WANSERVE_LOG_LEVEL": "info",
            **env,
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = data_dir / f"server-{self.port}.log"

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cli(self, *args: str) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "wanserve", *args],
            env=self.env,
            check=True,
            capture_output=True,
            text=True,
        )
        return out.stdout

    def create_key(self) -> str:
        return self.cli("keys", "create", "--name", "e2e").strip().splitlines()[-1]

    def start(self) -> ServerProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as log:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wanserve", "serve", "--port", str(self.port)],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        # Ready when /health answers; exiting early fails at once. Start-up imports torch and
        # diffusers, which a busy machine makes slow: the bound is a hang guard only.
        wait_until(self._health, lambda up: up, stall=600, what="start-up")
        return self

    def _health(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"server exited early:\n{self.log.read_text()[-3000:]}")
        try:
            return httpx.get(f"{self.base}/health", timeout=scaled(10)).status_code == 200
        except httpx.HTTPError:
            return False

    def kill(self) -> None:
        """SIGKILL: no shutdown hooks run, as in a crash or an OOM kill."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(scaled(60))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                # Graceful shutdown hands a running task back; a busy machine makes it slow.
                self.proc.wait(scaled(120))
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(scaled(60))

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()
