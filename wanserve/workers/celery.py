"""Dispatch through Celery (Redis or RabbitMQ broker): the fleet's producer and consumer.

The SQL row stays the record of truth; a message carries only a task id. Each model has its
own queue, `gen.<model>`, and a worker consumes only the queues of the models it has loaded,
so a task reaches only a worker that can run it. Settings follow the measurements in the
distributed-engine reference:

- `task_acks_late` + `task_reject_on_worker_lost` + prefetch 1: a message is acknowledged
  only after its task ended, so a worker that dies mid-task does not lose it, and an idle
  worker is never starved by a busy one holding a second message;
- no result backend: the task table holds results;
- Redis `visibility_timeout` above the longest run (2 × the task time limit plus heartbeat
  patience), else a healthy long task would be delivered to a second worker; and kombu's
  restore sweep every `broker_restore_seconds` (throttle 1), so a dead host's message comes
  back seconds after that timeout instead of ~100 s later;
- the solo pool: one task at a time per GPU in the worker's own process, no fork after the
  models are loaded (CUDA cannot survive a fork).

Duplicate deliveries and deliveries of canceled tasks are harmless: `Job.run_id` claims with a
conditional update and drops what it cannot claim. The reaper is the safety net for the rest:
a task it requeues is sent again (`Janitor` holds a `CeleryDispatcher`).

Celery is imported only here; it comes with the `[celery]` extra.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from wanserve.config import Settings
from wanserve.tasks.dispatch import DispatchError
from wanserve.workers.job import Job
from wanserve.workers.shutdown import Shutdown

try:
    from celery import Celery
    from celery.worker import state as worker_state
    from kombu.exceptions import KombuError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "broker_url is set but Celery is not installed: pip install 'wanserve[celery]'"
    ) from exc

log = logging.getLogger(__name__)

TASK_NAME = "wanserve.generate"


def queue_for(model: str) -> str:
    return f"gen.{model}"


def celery_app(settings: Settings) -> Celery:
    broker = settings.broker
    if broker is None:
        raise ValueError("Celery dispatch needs broker_url")
    longest = settings.task_timeout_seconds + settings.heartbeat_timeout_seconds
    app = Celery("wanserve", broker=broker, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_create_missing_queues=True,
        broker_connection_retry_on_startup=True,
        worker_send_task_events=False,
        worker_hijack_root_logger=False,
        broker_transport_options={
            "visibility_timeout": int(2 * longest),
            "unacked_restore_interval": settings.broker_restore_seconds,
            "unacked_restore_throttle": 1,
        },
    )
    return app


class CeleryDispatcher:
    """The producer: `send_task` of the id to its model's queue."""

    def __init__(self, settings: Settings) -> None:
        self._app = celery_app(settings)

    def submit(self, task_id: str, *, model: str) -> None:
        try:
            # kombu's default publish retry policy bounds this to about a second when the
            # broker refuses connections (broker_connection_timeout when it does not answer).
            self._app.send_task(TASK_NAME, args=[task_id], queue=queue_for(model))
        except (KombuError, OSError) as exc:
            # The exception's text names host and port, never the URL's password.
            raise DispatchError(f"broker refused task {task_id}: {exc}") from exc

    def close(self) -> None:
        self._app.close()


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
