"""The embedded composition root: the API and generation threads in one process.

SQLite store, local file storage, and `WorkerLoop` threads that claim tasks from the same
table the API writes; the loop is also the dispatcher (a submit wakes an idle thread). Tests
pass their own `runner` (a fake at the engine seam) or `start_workers=False` to drive workers
themselves.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import uvicorn
from fastapi import FastAPI

from wanserve.api.deps import Services
from wanserve.clock import Clock, utcnow
from wanserve.compose.api import (
    ApiServer,
    build_deliverer,
    build_janitor,
    build_services,
    create_api_app,
)
from wanserve.compose.shared import (
    ProcessKind,
    adapter_directory,
    annotators_of,
    build_shared,
    check_process_model,
)
from wanserve.compose.worker import build_execution, worker_name
from wanserve.config import Settings
from wanserve.engine.request import AudioDrivenVideo, Runner
from wanserve.observability import Probe
from wanserve.spec import Features
from wanserve.tasks.dispatch import TablePoll
from wanserve.tasks.janitor import Janitor
from wanserve.tasks.store import TaskStore
from wanserve.tasks.webhooks import Deliverer
from wanserve.workers.execute import InputResolver
from wanserve.workers.job import Job
from wanserve.workers.loop import WorkerLoop
from wanserve.workers.shutdown import Shutdown

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Components:
    """The long-lived objects behind an embedded app, exposed for tests and the CLI."""

    settings: Settings
    services: Services
    store: TaskStore
    loop: WorkerLoop
    job: Job
    janitor: Janitor
    deliverer: Deliverer
    runner: Runner
    stopping: threading.Event  # set: running tasks stop at their next step, back to PENDING


def build_components(
    settings: Settings,
    *,
    runner: Runner | None = None,
    inputs: InputResolver | None = None,
    audio_driven: AudioDrivenVideo | None = None,
    clock: Clock = utcnow,
) -> Components:
    check_process_model(settings, kind=ProcessKind.EMBEDDED)
    shared = build_shared(settings, clock=clock)
    execution = build_execution(shared, runner=runner, inputs=inputs, audio_driven=audio_driven)
    stopping = threading.Event()
    # The table is the queue: a task handed back on shutdown needs no message, its row is
    # PENDING again and the next start (or another process) claims it.
    job = Job(execution=execution, dispatcher=TablePoll(), stopping=stopping.is_set)
    loop = WorkerLoop(
        store=shared.store,
        run=job.run,
        stopping=stopping,
        worker_prefix=f"embedded:{worker_name()}",
        workers=settings.workers,
    )
    features = Features(
        audio_generation=execution.dubber is not None,
        multi_shot=execution.extender is not None,
        adapters=adapter_directory(settings),
        annotators=annotators_of(settings),
    )
    generation = Probe(
        "workers",
        lambda: None if loop.alive() else "the generation threads are not running",
    )
    services = build_services(shared, dispatcher=loop, features=features, probes=[generation])
    return Components(
        settings=settings,
        services=services,
        store=shared.store,
        loop=loop,
        job=job,
        janitor=build_janitor(shared, dispatcher=loop),
        deliverer=build_deliverer(shared, services=services),
        runner=execution.runner,
        stopping=stopping,
    )


class _Workers:
    """The loop as a lifespan part: started with the app, stopped gracefully with it."""

    def __init__(self, parts: Components) -> None:
        self._parts = parts

    def start(self) -> None:
        self._parts.loop.start()

    def stop(self) -> None:
        grace = self._parts.settings.shutdown_grace_seconds
        if not self._parts.loop.stop(timeout=grace):
            # A run that reached no step within the grace period (a long VAE decode, a hung
            # kernel): hand its task back now; its late writes are fenced by the claim.
            handed = self._parts.job.hand_back()
            log.warning("handed back without waiting: %s", ", ".join(handed) or "none")


def create_app(
    settings: Settings,
    *,
    components: Components | None = None,
    start_workers: bool = True,
) -> FastAPI:
    parts = components or build_components(settings)
    workers = [_Workers(parts)] if start_workers else []
    app = create_api_app(
        settings,
        services=parts.services,
        background=[parts.janitor, parts.deliverer, *workers],
    )
    app.state.components = parts
    return app


class SignalledServer(ApiServer):
    """uvicorn's server, with signals that reach the generation threads at once: the first
    SIGTERM/SIGINT stops the running task at its next step (it goes back to PENDING) while
    HTTP drains, instead of after it; a second one exits immediately, handing running tasks
    back first (uvicorn alone would keep waiting for the lifespan's shutdown)."""

    def __init__(
        self, config: uvicorn.Config, *, components: Components, shutdown: Shutdown
    ) -> None:
        super().__init__(config, services=components.services, on_signal=[shutdown.request])
