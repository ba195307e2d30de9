"""Dispatch latency (embedded queue vs Celery + Redis) and poll throughput (SQLite vs PostgreSQL).

1. **submit -> first denoising step**: a client creates tasks one at a time through HTTP and
   waits for each to start; the worker's engine is instant (it stamps the time of its first
   denoising step, reports it, and stops the task there, so no video is encoded), so what is
   measured is only the way from the API to a running job: the embedded server's in-process
   queue, or an API-only server sending the id through a private redis-server to a
   `wanserve worker` (PostgreSQL store). Warm: a few tasks run first and are not counted.
   Both clocks are CLOCK_MONOTONIC of this host, so stamps from the worker process compare
   with the client's.
2. **GET /api/v1/tasks/{id} throughput**: an API-only server on SQLite, then on PostgreSQL;
   a fixed number of requests from a few concurrent keep-alive clients; requests per second.

Everything runs on loopback and stops by itself.

    python bench/dispatch.py [--tasks 40] [--requests 3000] [--clients 4]

Needs redis-server on PATH and PostgreSQL (`--postgres`, an admin URL that may create a
database).
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from wanserve.engine.errors import BadInput
from wanserve.engine.request import (
    CancelFn,
    Clip,
    EngineProgress,
    GenerationRequest,
    ProgressFn,
    Stage,
)

ROOT = Path(__file__).resolve().parent.parent
MODEL = "wan2.1-t2v-turbo"
STAMPS = "BENCH_STAMPS"  # file the instant engine appends "<prompt> <monotonic>" lines to


# -- the processes under test -----------------------------------------------------------------


class StampRunner:
    """The instant engine: stamps its first denoising step, reports it, and stops the task
    (an engine error), so each task costs the dispatch path and nothing else."""

    def __init__(self, stamps: Path) -> None:
        self._stamps = stamps

    def run(
        self, request: GenerationRequest, *, on_progress: ProgressFn, should_cancel: CancelFn
    ) -> Clip:
        now = time.monotonic()
        with self._stamps.open("a") as f:
            f.write(f"{request.prompt} {now!r}\n")
        on_progress(EngineProgress(Stage.DENOISE, 1, request.steps))
        raise BadInput("bench: stopped after the first step")


def serve_embedded() -> int:
    """`wanserve serve` (embedded: API + one generation thread) with the instant engine."""
    import uvicorn

    from wanserve.compose.api import uvicorn_config
    from wanserve.compose.embedded import build_components, create_app
    from wanserve.config import Settings

    settings = Settings()
    runner = StampRunner(Path(os.environ[STAMPS]))
    components = build_components(settings, runner=runner)
    uvicorn.Server(uvicorn_config(settings, create_app(settings, components=components))).run()
    return 0


def run_worker() -> int:
    """`wanserve worker` with the instant engine."""
    from wanserve.compose.worker import run_worker as worker_main
    from wanserve.config import Settings

    return worker_main(Settings(), runner=StampRunner(Path(os.environ[STAMPS])))


# -- harness ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, args: list[str], *, env: dict[str, str], log: Path) -> None:
        with log.open("ab") as out:
            self.popen = subprocess.Popen(args, env=env, stdout=out, stderr=subprocess.STDOUT)
        self.log = log

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(60)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)


def base_env(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
        "WANSERVE_DATA_DIR": str(data_dir),
        "WANSERVE_WEIGHTS": "dummy",
        "WANSERVE_SECRET_KEY": "bench-secret-0123456789",
        "WANSERVE_RATE_LIMIT_PER_SECOND": "0",  # the bench measures the server, not its limits
        "WANSERVE_LOG_LEVEL": "warning",
        **extra,
    }


def create_key(env: dict[str, str]) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "wanserve", "keys", "create", "--name", "bench"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()[-1]


@contextmanager
def api_server(args: list[str], env: dict[str, str], log: Path) -> Iterator[str]:
    port = free_port()
    proc = Proc(args, env={**env, "WANSERVE_PORT": str(port)}, log=log)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    try:
        while True:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"server exited:\n{log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{base}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        yield base
    finally:
        proc.stop()


@contextmanager
def redis_server(workdir: Path) -> Iterator[str]:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not on PATH")
    port = free_port()
    proc = Proc(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
        env=dict(os.environ),
        log=workdir / "redis.log",
    )
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 30
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.stop()


@contextmanager
def postgres_database(admin: str) -> Iterator[str]:
    import psycopg

    name = f"wanserve_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    try:
        yield f"{base}/{name}"
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- measurements -----------------------------------------------------------------------------


def first_step_latencies(
    base: str, key: str, stamps: Path, *, tasks: int, warmup: int
) -> tuple[list[float], list[float]]:
    """Seconds from each create call being sent, and from it returning, to the task's first
    denoising step, one task at a time (the worker idle and warm: queueing is not measured).
    The second can be negative: the embedded queue may start the task before the response
    has reached the client."""
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    from_sent: list[float] = []
    from_returned: list[float] = []
    seen = 0
    with httpx.Client(base_url=base, headers=headers, timeout=30) as client:
        for i in range(warmup + tasks):
            prompt = f"bench-{i}-{uuid.uuid4().hex[:8]}"
            sent = time.monotonic()
            res = client.post(
                "/api/v1/services/aigc/video-generation/video-synthesis",
                json={"model": MODEL, "input": {"prompt": prompt}},
            )
            returned = time.monotonic()
            res.raise_for_status()
            deadline = returned + 60
            while True:
                lines = stamps.read_text().splitlines() if stamps.exists() else []
                if len(lines) > seen:
                    break
                if time.monotonic() > deadline:
                    raise RuntimeError(f"task {i} did not start within 60 s")
                time.sleep(0.001)
            seen = len(lines)
            stamped_prompt, stamp = lines[-1].split()
            assert stamped_prompt == prompt, (stamped_prompt, prompt)
            if i >= warmup:
                from_sent.append(float(stamp) - sent)
                from_returned.append(float(stamp) - returned)
            # Let the task end (FAILED by the instant engine) before the next one.
            task_id = res.json()["output"]["task_id"]
            while client.get(f"/api/v1/tasks/{task_id}").json()["output"]["task_status"] in (
                "PENDING",
                "RUNNING",
            ):
                time.sleep(0.01)
    return from_sent, from_returned


def poll_throughput(base: str, key: str, *, requests: int, clients: int) -> float:
    """Requests per second of GET /api/v1/tasks/{id} over `requests` requests from `clients`
    keep-alive connections."""
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
        res = c.post(
            "/api/v1/services/aigc/video-generation/video-synthesis",
            json={"model": MODEL, "input": {"prompt": "polled"}},
        )
        res.raise_for_status()
        path = f"/api/v1/tasks/{res.json()['output']['task_id']}"
        for _ in range(50):  # warm the connection pools
            c.get(path).raise_for_status()
    errors: list[int] = []

    def client_loop(count: int) -> None:
        with httpx.Client(base_url=base, headers=headers, timeout=30) as c:
            for _ in range(count):
                status = c.get(path).status_code
                if status != 200:
                    errors.append(status)

    share = [requests // clients + (1 if i < requests % clients else 0) for i in range(clients)]
    threads = [threading.Thread(target=client_loop, args=(n,)) for n in share]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    if errors:
        raise RuntimeError(f"{len(errors)} polls failed: {sorted(set(errors))}")
    return requests / elapsed


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))]
    return f"median {statistics.median(ms):7.1f} ms   p95 {p95:7.1f} ms   (n={len(ms)})"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--role", choices=["bench", "embedded", "worker"], default="bench")
    parser.add_argument("--tasks", type=int, default=40, help="timed tasks per dispatcher")
    parser.add_argument("--warmup", type=int, default=5, help="untimed tasks first")
    parser.add_argument("--requests", type=int, default=3000, help="polls per database")
    parser.add_argument("--clients", type=int, default=4, help="concurrent polling clients")
    parser.add_argument(
        "--postgres",
        default=os.environ.get(
            "WANSERVE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1/postgres"
        ),
        help="admin URL of a PostgreSQL server that may create a scratch database",
    )
    args = parser.parse_args()
    if args.role == "embedded":
        return serve_embedded()
    if args.role == "worker":
        return run_worker()

    me = [sys.executable, str(Path(__file__).resolve())]
    api_only = [sys.executable, "-m", "wanserve", "serve", "--workers", "0"]
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        latency: dict[str, tuple[list[float], list[float]]] = {}

        # 1a. Embedded: one process, the in-process queue.
        stamps = tmp / "embedded.stamps"
        env = base_env(tmp / "embedded", **{STAMPS: str(stamps)})
        key = create_key(env)
        with api_server([*me, "--role", "embedded"], env, tmp / "embedded.log") as base:
            latency["embedded (in-process queue, SQLite)"] = first_step_latencies(
                base, key, stamps, tasks=args.tasks, warmup=args.warmup
            )

        # 1b. Fleet: API-only server -> Redis -> `wanserve worker`, PostgreSQL store.
        stamps = tmp / "celery.stamps"
        (tmp / "redis").mkdir()
        with redis_server(tmp / "redis") as broker, postgres_database(args.postgres) as db:
            env = base_env(
                tmp / "api",
                WANSERVE_DATABASE_URL=db,
                WANSERVE_BROKER_URL=broker,
                WANSERVE_WORKER_MODELS=f'["{MODEL}"]',
                **{STAMPS: str(stamps)},
            )
            key = create_key(env)
            worker_env = {**env, "WANSERVE_DATA_DIR": str(tmp / "worker")}
            worker = Proc([*me, "--role", "worker"], env=worker_env, log=tmp / "worker.log")
            try:
                with api_server(api_only, env, tmp / "api.log") as base:
                    latency["fleet (Celery + Redis, PostgreSQL)"] = first_step_latencies(
                        base, key, stamps, tasks=args.tasks, warmup=args.warmup
                    )
            finally:
                worker.stop()

            # 2. Poll throughput, API-only, no broker, no worker: the task stays PENDING.
            throughput: dict[str, float] = {}
            for name, url in (("SQLite", None), ("PostgreSQL", db)):
                extra = {"WANSERVE_DATABASE_URL": url} if url else {}
                env = base_env(tmp / f"poll-{name}", **extra)
                key = create_key(env)
                with api_server(api_only, env, tmp / f"poll-{name}.log") as base:
                    throughput[name] = poll_throughput(
                        base, key, requests=args.requests, clients=args.clients
                    )

    print("create call -> first denoising step (instant engine, warm idle worker)")
    for name, (from_sent, from_returned) in latency.items():
        print(f"  {name}")
        print(f"    from the create call returning   {summary(from_returned)}")
        print(f"    from the create call being sent  {summary(from_sent)}")
    print(
        f"GET /api/v1/tasks/{{id}}: {args.requests} requests, {args.clients} concurrent clients, "
        "API-only server"
    )
    for name, rate in throughput.items():
        print(f"  {name:40s} {rate:7.0f} requests/s")
    ratio = throughput["PostgreSQL"] / throughput["SQLite"]
    print(f"  {'PostgreSQL / SQLite':40s} {ratio:7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
