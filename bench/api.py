"""The poll hot path: `GET /api/v1/tasks/{id}` of a finished task (or, with `--status
running`, of a running one) against a bare FastAPI endpoint returning a body of the same size,
side by side, on SQLite and on PostgreSQL.

For each database it makes a scratch data directory, an API key and a SUCCEEDED task
(written through the task store, as a worker would; or a RUNNING one at 40%), starts a real
`wanserve serve --workers 0` process (an API replica: uvicorn, the whole middleware and
dependency stack, the default rate limiter with a limit too high to trip) and a bare FastAPI
app in another process, and drives each in turn with `wrk -t2 -c50 -d10s`, for two rounds
(after 3 untimed seconds each, in ABBA order so that a drifting load favours neither). It
prints requests per second and the ratio wanserve / bare. Every process listens on loopback
and is stopped at the end.

    python bench/api.py                      # SQLite and PostgreSQL, 2 rounds of 10 s
    python bench/api.py --databases sqlite --duration 5 --rounds 1
    python bench/api.py --in-process         # no sockets, no load generator
    python bench/api.py --status running     # a task still running: read from the store

`--in-process` takes the sockets and the load generator out: in one child process per
database it builds the same API app as `serve --workers 0` (same settings, logging as the
server configures it, request log written to a file) and the same bare app, and calls each
ASGI app directly, alternating, 6 rounds of 3000 polls; it prints microseconds per poll (the
best round of each) and their ratio. On a shared machine this is the steadier figure: the
load generator, which competes for the same cores, is not in it.

Without `wrk` on the PATH (`apt-get install wrk`) it falls back to a Python load generator
(httpx, 50 connections over 2 threads) and says so; its absolute numbers are lower (the
generator competes for the same cores), the ratio is what to read. PostgreSQL comes from
WANSERVE_BENCH_POSTGRES (default postgresql://postgres@127.0.0.1:5432/postgres), where a
private database is created and dropped.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from fastapi import FastAPI

SECRET = "bench-secret-key-0123456789abcdef"
_RPS = re.compile(r"Requests/sec:\s+([0-9.]+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
_ERRORS = re.compile(r"Socket errors:.*")


@dataclass(frozen=True)
class Target:
    name: str
    url: str
    headers: dict[str, str]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--databases", default="sqlite,postgresql")
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=3, help="untimed seconds per target")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--in-process", action="store_true", help="call the ASGI apps directly (no sockets)"
    )
    parser.add_argument("--polls", type=int, default=3000, help="polls per in-process round")
    parser.add_argument(
        "--status",
        choices=("succeeded", "running"),
        default="succeeded",
        help="the polled task's: a finished one is answered from memory, a running one is "
        "read from the store on every poll",
    )
    parser.add_argument("--serve-bare", nargs=2, metavar=("PORT", "BYTES"), help=argparse.SUPPRESS)
    parser.add_argument("--time-apps", nargs=2, metavar=("SECRET", "TASK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_bare:
        return _serve_bare(int(args.serve_bare[0]), int(args.serve_bare[1]))
    if args.time_apps:
        return _time_apps(*args.time_apps, polls=args.polls)
    if args.in_process:
        print(
            f"in process: the ASGI apps called directly, alternating, "
            f"6 rounds of {args.polls} polls"
        )
        for database in args.databases.split(","):
            with _database(database) as url, tempfile.TemporaryDirectory() as tmp:
                env = _server_env(Path(tmp), url)
                secret, task_id = _seed(env, args.status)
                command = [sys.executable, __file__, "--polls", str(args.polls)]
                command += ["--time-apps", secret, task_id]
                # The request log goes to a file, as the served process's stderr does.
                with (Path(tmp) / "server.log").open("w") as log:
                    out = subprocess.run(
                        command,
                        env=env,
                        check=True,
                        stdout=subprocess.PIPE,
                        stderr=log,
                        text=True,
                        timeout=600,
                    ).stdout
                print(f"[{database}] {out.strip().splitlines()[-1]}")
        return 0

    loader = "wrk" if shutil.which("wrk") else "python"
    if loader == "python":
        print("wrk not found: using the Python load generator (lower absolute numbers)")
    print(
        f"load: {loader} -t{args.threads} -c{args.connections} -d{args.duration}s, "
        f"{args.rounds} round(s), GET of a {args.status.upper()} task vs bare FastAPI, "
        "same body size"
    )
    for database in args.databases.split(","):
        with _database(database) as url, tempfile.TemporaryDirectory() as tmp:
            _bench(database, url, Path(tmp), args, loader)
    return 0


def _bench(
    database: str, url: str | None, data_dir: Path, args: argparse.Namespace, loader: str
) -> None:
    env = _server_env(data_dir, url)
    secret, task_id = _seed(env, args.status)
    port = _free_port()
    server = _start(
        [sys.executable, "-m", "wanserve", "serve", "--workers", "0", "--port", str(port)],
        env,
        data_dir / "server.log",
    )
    bare = None
    try:
        base = f"http://127.0.0.1:{port}"
        _wait(f"{base}/health", server, data_dir / "server.log")
        poll = f"{base}/api/v1/tasks/{task_id}"
        headers = {"Authorization": f"Bearer {secret}"}
        answer = httpx.get(poll, headers=headers, timeout=10)
        body = json.loads(answer.content)
        status = body["output"]["task_status"]
        assert answer.status_code == 200 and status == args.status.upper(), body
        size = len(answer.content)
        bare_port = _free_port()
        bare = _start(
            [sys.executable, __file__, "--serve-bare", str(bare_port), str(size)],
            env,
            data_dir / "bare.log",
        )
        bare_url = f"http://127.0.0.1:{bare_port}/bare"
        _wait(bare_url, bare, data_dir / "bare.log")
        assert len(httpx.get(bare_url, timeout=10).content) == size
        targets = (Target("wanserve", poll, headers), Target("bare", bare_url, {}))
        print(f"\n[{database}] body {size} bytes")
        # Untimed first: a fresh process's first seconds (connections, caches) are not its
        # steady state, and the first target measured would pay for them alone.
        warm = argparse.Namespace(**(vars(args) | {"duration": args.warmup}))
        for target in targets:
            _load(target, warm, loader)
        for n in range(1, args.rounds + 1):
            # ABBA order: on a shared machine load drifts, and a fixed order would favour one.
            order = targets if n % 2 else targets[::-1]
            rps = {t.name: _load(t, args, loader) for t in order}
            print(
                f"  round {n}: wanserve {rps['wanserve']:8.0f} req/s   bare FastAPI "
                f"{rps['bare']:8.0f} req/s   ratio {rps['wanserve'] / rps['bare']:.2f}"
            )
    finally:
        for proc in (bare, server):
            if proc is not None:
                _stop(proc)


def _server_env(data_dir: Path, url: str | None) -> dict[str, str]:
    env = {
        **os.environ,
        "WANSERVE_DATA_DIR": str(data_dir),
        "WANSERVE_WEIGHTS": "dummy",
        "WANSERVE_SECRET_KEY": SECRET,
        # The limiter runs on every request, as in production; the limit is set out of reach
        # so the load generator measures the 200 path, not 429s.
        "WANSERVE_RATE_LIMIT_PER_SECOND": "1000000",
        "WANSERVE_RATE_LIMIT_BURST": "1000000",
        # A RUNNING task polled with `--status running` has no worker beating for it: the
        # janitor must not hand it back to PENDING during the run.
        "WANSERVE_HEARTBEAT_TIMEOUT_SECONDS": "86400",
    }
    if url is not None:
        env["WANSERVE_DATABASE_URL"] = url
    return env


def _seed(env: dict[str, str], status: str) -> tuple[str, str]:
    """An API key and a task (SUCCEEDED, or RUNNING with progress), written through the
    stores in a child process with the server's settings (so the schema is migrated the way
    the server does it)."""
    script = """
import sys
import json
from wanserve.catalog import Catalog
from wanserve.compose.shared import build_shared
from wanserve.config import Settings
from wanserve.spec import SynthesisRequest, build_spec
from wanserve.tasks.models import Progress, TaskResult, TaskStage

shared = build_shared(Settings())
key, secret = shared.keys.create("bench")
card = Catalog.build(steps=4).get("wan2.1-t2v-turbo")
spec = build_spec(SynthesisRequest(model=card.name, prompt="a cat in the snow", seed=7), card)
task = shared.store.create(task_id="bench-task-0001", api_key_id=key.id, request_id="r", spec=spec)
claim = shared.store.claim(task.id, worker_id="bench")
if sys.argv[1] == "running":
    shared.store.report_progress(
        claim, Progress(stage=TaskStage.DENOISING, step=2, total_steps=4, percent=40))
    print(json.dumps([secret, task.id]))
    sys.exit(0)
result = TaskResult(video_key=f"videos/{task.id}.mp4", width=spec.width, height=spec.height,
                    has_audio=False, actual_prompt=None)
assert shared.store.succeed(claim, result)
print(json.dumps([secret, task.id]))
"""
    out = subprocess.run(
        [sys.executable, "-c", script, status],
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=120,
    )
    secret, task_id = json.loads(out.stdout.strip().splitlines()[-1])
    return str(secret), str(task_id)


def _load(target: Target, args: argparse.Namespace, loader: str) -> float:
    if loader == "python":
        return _python_load(target, args)
    command = ["wrk", f"-t{args.threads}", f"-c{args.connections}", f"-d{args.duration}s"]
    command += ["--timeout", "5s"]
    for name, value in target.headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run(
        [*command, target.url],
        check=True,
        capture_output=True,
        text=True,
        timeout=args.duration + 60,
    ).stdout
    bad = _NON_2XX.search(out)
    errors = _ERRORS.search(out)
    if bad or errors:
        raise RuntimeError(f"{target.name} answered errors under load:\n{out}")
    found = _RPS.search(out)
    if found is None:
        raise RuntimeError(f"no Requests/sec in wrk's output:\n{out}")
    return float(found.group(1))


def _python_load(target: Target, args: argparse.Namespace) -> float:
    """Requests per second from `connections` keep-alive clients over `threads` threads."""
    deadline = time.monotonic() + args.duration
    counts: list[int] = []
    lock = threading.Lock()
    per_thread = max(1, args.connections // args.threads)

    def drive() -> None:
        done = 0
        limits = httpx.Limits(max_connections=per_thread, max_keepalive_connections=per_thread)
        with httpx.Client(headers=target.headers, limits=limits, timeout=10) as client:
            while time.monotonic() < deadline:
                res = client.get(target.url)
                if res.status_code != 200:
                    raise RuntimeError(f"{target.name} answered {res.status_code}: {res.text}")
                done += 1
        with lock:
            counts.append(done)

    started = time.monotonic()
    threads = [threading.Thread(target=drive) for _ in range(args.threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.duration + 60)
    return sum(counts) / (time.monotonic() - started)


def _serve_bare(port: int, size: int) -> int:
    """The baseline served by uvicorn with the same defaults as wanserve (uvloop/httptools
    when installed, no access log)."""
    import uvicorn

    uvicorn.run(_bare_app(size), host="127.0.0.1", port=port, log_level="warning", access_log=False)
    return 0


def _bare_app(size: int) -> FastAPI:
    """The baseline: an idiomatic FastAPI endpoint whose JSON body has `size` bytes."""
    from fastapi import FastAPI

    app = FastAPI()
    overhead = len(json.dumps({"request_id": "", "output": {"padding": ""}}, separators=(",", ":")))
    body = {
        "request_id": str(uuid.uuid4()),
        "output": {"padding": "x" * max(0, size - overhead - 36)},
    }

    @app.get("/bare")
    async def bare() -> dict[str, object]:
        return body

    return app


def _time_apps(secret: str, task_id: str, *, polls: int) -> int:
    """In a child with the server's environment: microseconds per poll of the wanserve API
    app (built as `serve --workers 0` builds it) and of the bare app, called directly."""
    import asyncio

    from wanserve.cli import configure_logging
    from wanserve.compose.api import create_api_only
    from wanserve.compose.shared import build_shared
    from wanserve.config import Settings

    settings = Settings()
    configure_logging(settings)  # as `wanserve serve` does: the request log is part of a poll
    app = create_api_only(build_shared(settings))
    poll = _Caller(
        app, f"/api/v1/tasks/{task_id}", [(b"authorization", f"Bearer {secret}".encode())]
    )
    size = len(asyncio.run(poll.once()))
    bare = _Caller(_bare_app(size), "/bare", [])
    if len(asyncio.run(bare.once())) != size:
        raise RuntimeError("the bare body is not the poll's size")
    rounds: dict[str, list[float]] = {"wanserve": [], "bare": []}
    for _ in range(6):
        for name, caller in (("wanserve", poll), ("bare", bare)):
            rounds[name].append(asyncio.run(caller.time(polls)))
    ours, theirs = min(rounds["wanserve"]), min(rounds["bare"])
    print(
        f"wanserve {ours:6.1f} us/poll   bare FastAPI {theirs:6.1f} us   ratio {theirs / ours:.2f}"
    )
    return 0


class _Caller:
    """GETs one path of an ASGI app the way uvicorn calls it, with no socket."""

    def __init__(self, app: Any, path: str, headers: list[tuple[bytes, bytes]]) -> None:
        self.app, self.path = app, path
        self.headers = [(b"host", b"127.0.0.1:8000"), *headers, (b"user-agent", b"bench")]

    def _scope(self) -> dict[str, Any]:
        return {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.4"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": self.path,
            "raw_path": self.path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": self.headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }

    async def once(self) -> bytes:
        sent: list[dict[str, Any]] = []

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await self.app(self._scope(), receive, send)
        if sent[0]["status"] != 200:
            raise RuntimeError(f"{self.path} answered {sent[0]['status']}: {sent[1:]}")
        return b"".join(m.get("body", b"") for m in sent[1:])

    async def time(self, n: int) -> float:
        """Microseconds per request over `n` requests (the first untimed)."""
        await self.once()
        started = time.perf_counter()
        for _ in range(n):
            await self.once()
        return (time.perf_counter() - started) / n * 1e6


@contextlib.contextmanager
def _database(name: str) -> Iterator[str | None]:
    if name == "sqlite":
        yield None
        return
    if name != "postgresql":
        raise SystemExit(f"unknown database {name!r}: sqlite or postgresql")
    import psycopg

    admin = os.environ.get(
        "WANSERVE_BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
    )
    db = f"wanserve_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'CREATE DATABASE "{db}"')
    try:
        base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
        yield f"{base}/{db}"
    finally:
        with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def _start(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)


def _wait(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url}: process exited:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).status_code == 200:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up in {timeout:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


if __name__ == "__main__":
    sys.exit(main())
