"""Fleet mode on one machine, every part a real process on loopback: PostgreSQL (a private
database), a private redis-server (Celery broker in db 0, rate limits in db 1), moto's S3
server, two API replicas (`wanserve serve --workers 0`) and two `wanserve worker`s on tiny
dummy weights, each process with its own data_dir, so nothing can lean on a shared disk.
The unmodified `dashscope` SDK drives it, with only its base URL pointed at a replica.

One fleet serves the whole module; the tests run in file order and the last two kill
processes (a worker is restarted; the killed API replica is not). Every wait is on a
condition, with bounds generous enough for a loaded 2-core machine.

What serves what (strict, so the `worker_id` column can be checked against it):

    worker "t2v": T2V, LONG        worker "i2v": I2V, LONG        nobody: IDLE
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from typing import Any

import av
import dashscope
import httpx
import numpy as np
import pytest
from dashscope import VideoSynthesis
from PIL import Image
from sqlalchemy import Engine, create_engine, text

from tests.conftest import private_database
from tests.redis_server import RedisServer
from tests.s3_server import FAKE_AWS_ENV, client, new_bucket, s3_server
from tests.server import ServerProcess
from tests.waiting import scaled, wait_process, wait_until

# About 10 CPU-minutes of processes in all; on a 2-core machine shared with other jobs the
# first test (fleet start-up and 20 videos) can take most of the default 600 s per test.
pytestmark = [pytest.mark.postgres, pytest.mark.timeout(scaled(1200))]

T2V = "wan2.1-t2v-turbo"
I2V = "wanx2.1-i2v-turbo"
# Same checkpoint as T2V (one resident copy), but 30 denoising steps: a task that runs long
# enough to be caught RUNNING, canceled or killed. Served by both workers.
LONG = "wanx2.1-t2v-turbo"
IDLE = "wan2.2-t2v-plus"  # no worker serves it: its tasks stay PENDING
TINY = 32 * 32  # denoising pixels; the media layer still scales to the exact size asked for
MODELS = {T2V: {"max_area": TINY}, I2V: {"max_area": TINY}, LONG: {"max_area": TINY, "steps": 30}}
SERVES = {"t2v": (T2V, LONG), "i2v": (I2V, LONG)}
QUOTA = 24  # unfinished tasks per key: above the 20 submitted at once below
SECRET = "fleet-test-secret-0123456789abcdef"
# Short enough that a dead worker is noticed in seconds, long enough that a heartbeat delayed
# by a loaded machine is not mistaken for a death (stretched with every other bound).
HEARTBEAT_TIMEOUT = scaled(5)


def wait_for(what: str, check: Callable[[], Any]) -> Any:
    """Poll `check` until it returns something truthy (tests/waiting.py's bound)."""
    return wait_until(check, lambda result: bool(result), what=what)


class Worker:
    """One `wanserve worker --models ...` process, exactly as an operator starts it."""

    def __init__(self, name: str, *, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.models = SERVES[name]
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "wanserve", "worker", "--models", ",".join(self.models)],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def made(self, worker_id: str | None) -> bool:
        """Whether this process wrote `worker_id` (`host:pid:nonce`)."""
        return worker_id is not None and worker_id.split(":")[1] == str(self.proc.pid)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            wait_process(self.proc)


@dataclass
class Fleet:
    tmp: Path
    db: Engine
    bucket: str
    s3: str
    env: dict[str, str]
    apis: list[ServerProcess]
    workers: dict[str, Worker]
    key: str

    def process_env(self, data_dir: Path) -> dict[str, str]:
        return {**self.env, "WANSERVE_DATA_DIR": str(data_dir)}

    def start_worker(self, name: str) -> Worker:
        data_dir = self.tmp / f"worker-{name}-{len(os.listdir(self.tmp))}"
        data_dir.mkdir()
        worker = Worker(name, env=self.process_env(data_dir), log=data_dir / "log")
        self.workers[name] = worker
        return worker

    def who_made(self, worker_id: str | None) -> Worker:
        found = [w for w in self.workers.values() if w.made(worker_id)]
        assert len(found) == 1, (worker_id, self.logs())
        return found[0]

    def row(self, task_id: str) -> Any:
        with self.db.connect() as conn:
            return conn.execute(
                text("SELECT status, attempts, worker_id, step, model FROM tasks WHERE id = :id"),
                {"id": task_id},
            ).one()

    def logs(self) -> str:
        return "\n".join(
            f"--- {w.name}\n{w.log.read_text()[-3000:]}" for w in self.workers.values()
        )


def finished(task_id: str, *, key: str) -> Any:
    """`VideoSynthesis.fetch` until the task ends (the SDK's own `wait` has no bound)."""

    def fetch() -> Any:
        rsp = VideoSynthesis.fetch(task_id, api_key=key)
        assert rsp.status_code == HTTPStatus.OK, rsp
        return rsp

    # Twice a second: well inside the per-key request rate, like the SDK's own polling.
    return wait_until(
        fetch,
        lambda rsp: rsp.output.task_status not in ("PENDING", "RUNNING"),
        progress=lambda rsp: rsp.output.task_status,
        interval=0.5,
        what=f"task {task_id} to end",
    )


def use(api: ServerProcess) -> None:
    """Point the SDK at one replica: the only change a DashScope user makes."""
    dashscope.base_http_api_url = f"{api.base}/api/v1"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if shutil.which("redis-server") is None and not os.environ.get("CI"):
        pytest.skip("redis-server is not installed (apt-get install redis-server)")
    tmp = tmp_path_factory.mktemp("fleet")
    previous_url = dashscope.base_http_api_url
    redis_server = RedisServer(tmp / "redis-dir").start()
    with private_database() as db_url, s3_server() as s3, pytest.MonkeyPatch.context() as mp:
        for name, value in FAKE_AWS_ENV.items():  # the test's own boto3 client, and moto's
            mp.setenv(name, value)
        bucket = new_bucket(s3)
        env = {
            **os.environ,
            **FAKE_AWS_ENV,
            "WANSERVE_DATABASE_URL": db_url,
            "WANSERVE_BROKER_URL": redis_server.url,
            "WANSERVE_REDIS_URL": redis_server.url.rsplit("/", 1)[0] + "/1",
            "WANSERVE_STORAGE_URL": f"s3://{bucket}/fleet",
            "WANSERVE_S3_ENDPOINT_URL": s3,
            "WANSERVE_S3_ADDRESSING_STYLE": "path",
            "WANSERVE_SECRET_KEY": SECRET,
            "WANSERVE_WEIGHTS": "dummy",
            "WANSERVE_STEPS": "1",
            "WANSERVE_MODELS": json.dumps(MODELS),
            "WANSERVE_X264_PRESET": "ultrafast",
            "WANSERVE_HEARTBEAT_SECONDS": "0.5",
            "WANSERVE_HEARTBEAT_TIMEOUT_SECONDS": str(HEARTBEAT_TIMEOUT),
            "WANSERVE_JANITOR_INTERVAL_SECONDS": "0.5",
            "WANSERVE_MAX_ATTEMPTS": "3",
            "WANSERVE_MAX_UNFINISHED_PER_KEY": str(QUOTA),
            "WANSERVE_RATE_LIMIT_PER_SECOND": "50",
            "WANSERVE_RATE_LIMIT_BURST": "200",
            "WANSERVE_LOG_LEVEL": "info",
        }
        fleet = Fleet(
            tmp=tmp,
            db=create_engine(db_url),
            bucket=bucket,
            s3=s3,
            env=env,
            apis=[],
            workers={},
            key="",
        )
        try:
            # Workers first: they import torch and build their dummy checkpoints while the
            # API replicas start.
            for name in SERVES:
                fleet.start_worker(name)
            for i in range(2):
                data_dir = tmp / f"api-{i}"
                fleet.apis.append(
                    ServerProcess(data_dir, **fleet.process_env(data_dir), WANSERVE_WORKERS="0")
                )
                fleet.apis[-1].start()
            fleet.key = fleet.apis[0].create_key()
            yield fleet
        finally:
            dashscope.base_http_api_url = previous_url
            for worker in fleet.workers.values():
                worker.kill()
            for api in fleet.apis:
                api.stop()
            fleet.db.dispose()
            redis_server.stop()


def image_file(path: Path, seed: int) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, size=(120, 160, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def check_video(url: str, path: Path, *, size: tuple[int, int], frames: int) -> None:
    """Download from the presigned S3 URL and decode every frame."""
    res = httpx.get(url, timeout=scaled(60))
    assert res.status_code == 200, res.text
    path.write_bytes(res.content)
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert (stream.width, stream.height) == size
        assert sum(1 for _ in container.decode(video=0)) == frames


def test_twenty_tasks_across_two_models_and_both_replicas(fleet: Fleet, tmp_path: Path) -> None:
    from tests.api.test_engine_http import data_uri

    a, b = fleet.apis
    submitted: dict[str, str] = {}  # task id -> model
    uploaded: list[str] = []
    for i in range(20):
        use(fleet.apis[i % 2])
        if i % 2 == 0:
            rsp = VideoSynthesis.async_call(
                api_key=fleet.key, model=T2V, prompt=f"a fox, take {i}", size="832*480", seed=i
            )
        elif i < 6:  # the SDK's local-file flow: policy, upload into the bucket, oss:// ref
            path = image_file(tmp_path / f"cat {i}.png", i)
            uploaded.append(path.name)
            rsp = VideoSynthesis.async_call(
                api_key=fleet.key,
                model=I2V,
                img_url=f"file://{path}",
                resolution="480P",
                duration=3,
                seed=i,
            )
        else:
            rsp = VideoSynthesis.async_call(
                api_key=fleet.key, model=I2V, img_url=data_uri(i), resolution="480P", duration=3
            )
        assert rsp.status_code == HTTPStatus.OK, rsp
        submitted[rsp.output.task_id] = T2V if i % 2 == 0 else I2V

    # The uploads landed in the bucket (no process shares a disk with another).
    keys = [o["Key"] for o in client(fleet.s3).list_objects_v2(Bucket=fleet.bucket)["Contents"]]
    for name in uploaded:
        assert any(k.startswith("fleet/uploads/") and k.endswith(name) for k in keys), keys

    for n, (task_id, model) in enumerate(submitted.items()):
        use(fleet.apis[(n + 1) % 2])  # polled through the replica that did not take it
        done = finished(task_id, key=fleet.key)
        assert done.output.task_status == "SUCCEEDED", (done, fleet.logs())
        row = fleet.row(task_id)
        # Made by a worker that serves the model (and only one does, for these two).
        assert model in fleet.who_made(row.worker_id).models
        size, frames = ((832, 480), 150) if model == T2V else ((720, 544), 90)
        check_video(done.output.video_url, tmp_path / f"{n}.mp4", size=size, frames=frames)
        assert done.output.video_url.startswith(f"{fleet.s3}/{fleet.bucket}/fleet/videos/")

    # Nothing went to local disks: every file lives in the bucket.
    for data_dir in [api.data_dir for api in (a, b)] + [
        w.log.parent for w in fleet.workers.values()
    ]:
        assert not (data_dir / "files").exists(), data_dir


def test_cancel_pending_and_running_tasks_across_replicas(fleet: Fleet) -> None:
    a, b = fleet.apis
    use(a)
    # Two long tasks occupy both workers (one message at a time each: prefetch 1)...
    running = [
        VideoSynthesis.async_call(api_key=fleet.key, model=LONG, prompt="slow", size="832*480")
        for _ in range(2)
    ]
    ids = [r.output.task_id for r in running]
    wait_for("both long tasks RUNNING", lambda: all(fleet.row(t).status == "RUNNING" for t in ids))
    # ...so a task queued now stays PENDING.
    pending = VideoSynthesis.async_call(
        api_key=fleet.key, model=T2V, prompt="queued", size="832*480"
    )
    assert fleet.row(pending.output.task_id).status == "PENDING"

    use(b)  # cancel through the other replica
    for task_id in [pending.output.task_id, *ids]:
        rsp = VideoSynthesis.cancel(task_id, api_key=fleet.key)
        assert rsp.status_code == HTTPStatus.OK, rsp
    assert VideoSynthesis.fetch(pending, api_key=fleet.key).output.task_status == "CANCELED"
    # A RUNNING task stops at its next step, in the worker process that runs it.
    for task_id in ids:
        wait_for(f"{task_id} CANCELED", lambda t=task_id: fleet.row(t).status == "CANCELED")
        assert VideoSynthesis.fetch(task_id, api_key=fleet.key).output.task_status == "CANCELED"
    # The canceled PENDING task's message is dropped by the claim: it never runs.
    later = VideoSynthesis.call(api_key=fleet.key, model=T2V, prompt="after", size="832*480")
    assert later.output.task_status == "SUCCEEDED"
    assert tuple(fleet.row(pending.output.task_id)[:2]) == ("CANCELED", 0)


def test_concurrent_submissions_never_exceed_the_quota(fleet: Fleet) -> None:
    """One key, 40 submissions at once across both replicas, for a model no worker serves
    (so none finishes): exactly the quota is accepted, the rest get 429 Throttling.RateQuota."""
    a, b = fleet.apis
    key = a.create_key()
    # Concurrent calls name their replica with the SDK's `base_address`; the global points
    # nowhere, so a call that ignored it would fail rather than pass unnoticed.
    dashscope.base_http_api_url = "http://127.0.0.1:9/api/v1"

    def submit(i: int) -> Any:
        replica = fleet.apis[i % 2]
        return VideoSynthesis.async_call(
            api_key=key,
            model=IDLE,
            prompt=f"waits {i}",
            size="832*480",
            base_address=f"{replica.base}/api/v1",
        )

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(submit, range(40)))
    accepted = [r.output.task_id for r in answers if r.status_code == HTTPStatus.OK]
    refused = [r for r in answers if r.status_code != HTTPStatus.OK]
    assert len(accepted) == QUOTA, [(r.status_code, r.code) for r in answers]
    assert {(r.status_code, r.code) for r in refused} == {(429, "Throttling.RateQuota")}
    with fleet.db.connect() as conn:
        unfinished = conn.execute(
            text("SELECT count(*) FROM tasks WHERE model = :m AND status = 'PENDING'"),
            {"m": IDLE},
        ).scalar_one()
    assert unfinished == QUOTA

    use(b)
    for task_id in accepted:
        assert VideoSynthesis.cancel(task_id, api_key=key).status_code == HTTPStatus.OK
    use(a)
    assert all(fleet.row(t).status == "CANCELED" for t in accepted)
    # The quota is free again.
    again = VideoSynthesis.async_call(api_key=key, model=IDLE, prompt="again", size="832*480")
    assert again.status_code == HTTPStatus.OK
    VideoSynthesis.cancel(again, api_key=key)


def test_sigkill_of_a_worker_mid_task_reruns_on_the_other(fleet: Fleet) -> None:
    use(fleet.apis[0])
    rsp = VideoSynthesis.async_call(api_key=fleet.key, model=LONG, prompt="doomed", size="832*480")
    task_id = rsp.output.task_id
    row = wait_for("the task to report a step", lambda: (r := fleet.row(task_id)).step > 0 and r)
    assert row.status == "RUNNING"
    victim = fleet.who_made(row.worker_id)
    survivor = next(w for w in fleet.workers.values() if w is not victim)

    killed = time.monotonic()
    victim.kill()
    reclaimed = wait_for(
        "another worker to claim the task",
        lambda: (r := fleet.row(task_id)).status == "RUNNING" and survivor.made(r.worker_id),
    )
    reclaim_s = time.monotonic() - killed
    done = finished(task_id, key=fleet.key)
    succeeded_s = time.monotonic() - killed
    print(
        f"worker SIGKILL: re-claimed by the other worker after {reclaim_s:.1f} s, SUCCEEDED "
        f"after {succeeded_s:.1f} s (heartbeat timeout {HEARTBEAT_TIMEOUT:g} s, janitor every "
        "0.5 s)"
    )
    assert reclaimed and done.output.task_status == "SUCCEEDED"
    row = fleet.row(task_id)
    assert survivor.made(row.worker_id) and row.attempts == 2
    with fleet.db.connect() as conn:
        stuck = conn.execute(text("SELECT count(*) FROM tasks WHERE status = 'RUNNING'"))
        assert stuck.scalar_one() == 0
    # Back to full strength for the next test (an operator's supervisor does this).
    fleet.start_worker(victim.name)


def test_sigkill_of_an_api_replica_loses_no_accepted_task(fleet: Fleet) -> None:
    from tests.api.test_engine_http import data_uri

    doomed, survivor = fleet.apis
    use(doomed)
    accepted = [
        VideoSynthesis.async_call(api_key=fleet.key, model=T2V, prompt="x", size="832*480"),
        VideoSynthesis.async_call(
            api_key=fleet.key, model=I2V, img_url=data_uri(3), resolution="480P", duration=3
        ),
    ]
    assert all(rsp.status_code == HTTPStatus.OK for rsp in accepted), accepted
    doomed.kill()  # SIGKILL, right after it answered: nothing of it runs any more

    use(survivor)
    assert httpx.get(f"{survivor.base}/health", timeout=scaled(30)).status_code == 200
    for rsp in accepted:
        done = finished(rsp.output.task_id, key=fleet.key)
        assert done.output.task_status == "SUCCEEDED", (done, fleet.logs())
    # And it still takes new work on its own.
    fresh = VideoSynthesis.call(api_key=fleet.key, model=T2V, prompt="after", size="832*480")
    assert fresh.output.task_status == "SUCCEEDED"
