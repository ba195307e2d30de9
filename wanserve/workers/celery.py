"""Dispatch through Celery, consumer side: a `wanserve worker` consuming its models' queues.

The producer (the app's settings, `queue_for`, `CeleryDispatcher`) is `tasks/celery.py`, which
imports no job body; this module registers the task under the same name, `TASK_NAME`, with the
job body behind it (`Job.run_id`), and runs the worker:

- the solo pool: one task at a time per GPU in the worker's own process, no fork after the
  models are loaded (CUDA cannot survive a fork);
- acknowledgement, prefetch and redelivery as `tasks/celery.py` configures the app for both
  sides.

Duplicate deliveries and deliveries of canceled tasks are harmless: `Job.run_id` claims with a
conditional update and drops what it cannot claim.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from wanserve.config import Settings
from wanserve.tasks.celery import TASK_NAME, celery_app, queue_for
from wanserve.workers.job import Job
from wanserve.workers.shutdown import Shutdown

try:
    from celery.worker import state as worker_state
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "broker_url is set but Celery is not installed: pip install 'wanserve[celery]'"
    ) from exc

log = logging.getLogger(__name__)


def consume(
    settings: Settings,
    *,
    job: Job,
    models: Sequence[str],
    worker_id: str,
    shutdown: Shutdown,
) -> int:
    """Run a Celery worker (solo pool) on the models' queues until shut down; the exit code.

    Celery's own worker program (`celery worker`) is not used: it installs signal handlers
    whose warm shutdown waits for the running task to finish, which for a video is minutes.
    Ours stop the task at its next step (see `Shutdown`), then end the consumer loop."""
    app = celery_app(settings)

    @app.task(name=TASK_NAME, ignore_result=True)  # type: ignore[untyped-decorator]
    def generate(task_id: str) -> None:
        job.run_id(task_id, worker_id=worker_id)

    # Celery keeps the "stop now" flags in module globals; a previous worker in this process
    # (tests) must not stop this one.
    worker_state.should_stop = None
    worker_state.should_terminate = None
    shutdown.add_on_first(_stop_consuming)
    shutdown.install()
    worker: Any = app.WorkController(
        hostname=f"wanserve@{worker_id}",
        pool="solo",
        concurrency=1,
        queues=[queue_for(m) for m in models],
        loglevel=settings.log_level.upper(),
        without_heartbeat=True,  # no events consumer; liveness is the task heartbeat
        without_mingle=True,
        without_gossip=True,
    )
    worker.start()
    return int(worker.exitcode or 0)


def _stop_consuming() -> None:
    # Checked by the consumer loop between messages: the worker shuts down once the running
    # task (which stops at its next step) has returned.
    worker_state.should_stop = 0
