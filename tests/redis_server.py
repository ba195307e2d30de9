"""A private redis-server on a free loopback port, for broker tests (no shared state with
anything else on the machine)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import redis

from tests.server import free_port
from tests.waiting import wait_process, wait_until


class RedisServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        wait_until(lambda: self._answers(client), lambda up: up, what="redis-server start-up")
        return self

    def _answers(self, client: redis.Redis) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError("redis-server exited at start-up")
        try:
            return bool(client.ping())
        except redis.ConnectionError:
            return False

    def flush(self) -> None:
        redis.Redis.from_url(self.url).flushall()

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            wait_process(self.proc)
