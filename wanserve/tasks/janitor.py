"""Housekeeping: hand back tasks whose worker died, and purge expired tasks and their videos.

Every API process runs a janitor, but a sweep runs in one place at a time: `exclusive` is a
PostgreSQL advisory lock shared by all replicas. A task it hands back to PENDING is sent to the
dispatcher again: with a broker, the dead worker's message may be gone (or come back only
after the visibility timeout), and a PENDING row no message points to would never run.

With a broker it also re-sends PENDING tasks whose message may be missing (`Redispatch`):
ones never sent a few seconds after they were queued (the send failed, or the API process
died between the INSERT and the send), and ones last sent long ago (the broker lost its data).
Resending is safe because a worker's claim is a conditional update: a task that is already
running, finished or canceled ignores the extra message. The price of a short
`resend_after` is queue bloat: every task still waiting gets one more message per period,
each costing a worker one UPDATE to drop; the price of a long one is how long tasks sit
after a broker lost its data. Hence a long default, well above normal queueing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from datetime import timedelta

from wanserve.storage.base import Storage
from wanserve.tasks.dispatch import Dispatcher, DispatchError
from wanserve.tasks.store import TaskSweeper
from wanserve.uploads import UploadService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Redispatch:
    """When the janitor sends a PENDING task's id again (see the module docstring)."""

    unsent_after: timedelta
    resend_after: timedelta


class Janitor:
    def __init__(
        self,
        *,
        store: TaskSweeper,
        storage: Storage,
        interval_seconds: float,
        stale_after: timedelta,
        max_attempts: int,
        dispatcher: Dispatcher,
        uploads: UploadService | None = None,
        exclusive: Callable[[], AbstractContextManager[bool]] = lambda: nullcontext(True),
        redispatch: Redispatch | None = None,
    ) -> None:
        self._redispatch = redispatch
        self._dispatcher = dispatcher
        self._exclusive = exclusive
        self._uploads = uploads
        self._store = store
        self._storage = storage
        self._interval = interval_seconds
        self._stale_after = stale_after
        self._max_attempts = max_attempts
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> bool:
        """One sweep; False if another process holds the sweep lock and does it instead."""
        with self._exclusive() as mine:
            if not mine:
                return False
            self._sweep()
            return True

    def _sweep(self) -> None:
        report = self._store.reap(stale_after=self._stale_after, max_attempts=self._max_attempts)
        for task_id in report.requeued:
            log.warning("task %s: its worker stopped responding; queued again", task_id)
            if (task := self._store.get(task_id)) is not None:
                self._send(task_id, task.model)
        for task_id in report.canceled:
            log.info("task %s: its worker stopped while a cancel was pending; canceled", task_id)
        for task_id in report.failed:
            log.error("task %s: its worker stopped responding too often; failed", task_id)
        if self._redispatch is not None:
            self._resend_stranded(self._redispatch)
        while expired := self._store.expired():
            for _task_id, video_key in expired:
                if video_key:
                    self._storage.delete(video_key)
            self._store.delete(task_id for task_id, _ in expired)
            log.info("purged %d expired task(s)", len(expired))
        if self._uploads is not None and (count := self._uploads.purge_expired()):
            log.info("purged %d expired upload(s)", count)

    def _resend_stranded(self, policy: Redispatch) -> None:
        stranded = self._store.stranded(
            unsent_after=policy.unsent_after, resend_after=policy.resend_after
        )
        for sent, queued in enumerate(stranded):
            if not self._send(queued.task_id, queued.model):
                # The broker is down: the rest would fail the same way, each after its own
                # retries. They stay unsent and are tried again next sweep.
                log.warning(
                    "%d task(s) still to send once the broker answers", len(stranded) - sent
                )
                return
        if stranded:
            log.info("sent %d PENDING task(s) whose message may have been lost", len(stranded))

    def _send(self, task_id: str, model: str) -> bool:
        try:
            self._dispatcher.submit(task_id, model=model)
        except DispatchError as exc:
            log.warning("task %s: not sent: %s", task_id, exc)
            return False
        return True

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="wanserve-janitor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while True:
            try:
                self.run_once()
            except Exception:
                log.exception("janitor pass failed; will retry")
            if self._stop.wait(self._interval):
                return
