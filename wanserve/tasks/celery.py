"""Dispatch through Celery (Redis or RabbitMQ broker), producer side: the app's settings, the
queue of each model, and `CeleryDispatcher`, which sends a task id by the task's name.

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
  back seconds after that timeout instead of ~100 s later.

`send_task` needs only the task's name, not its function: this module imports Celery and
nothing of the job body, so an API process (`compose/shared.py::dispatcher_for`) loads no
engine, numpy, PIL or PyAV through it. The consumer, which registers the task under the same
name and runs the job body, is `workers/celery.py`.

Duplicate deliveries and deliveries of canceled tasks are harmless: `Job.run_id` claims with a
conditional update and drops what it cannot claim. The reaper is the safety net for the rest:
a task it requeues is sent again (`Janitor` holds a `CeleryDispatcher`).

Celery is imported only here and in `workers/celery.py`; it comes with the `[celery]` extra.
"""

from __future__ import annotations

from wanserve.config import Settings
from wanserve.tasks.dispatch import DispatchError

try:
    from celery import Celery
    from kombu.exceptions import KombuError
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        "broker_url is set but Celery is not installed: pip install 'wanserve[celery]'"
    ) from exc

TASK_NAME = "wanserve.generate"


def queue_for(model: str) -> str:
    return f"gen.{model}"


def celery_app(settings: Settings) -> Celery:
    """The app both sides build from the same settings (the consumer's transport options
    decide redelivery, so they are set in one place)."""
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
    """The producer: `send_task` of the id, by the task's name, to its model's queue."""

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
