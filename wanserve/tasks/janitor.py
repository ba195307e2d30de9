"""Housekeeping: hand back tasks whose worker died, and purge expired tasks and their videos.

Every API process runs a janitor, but a sweep runs in one place at a time: `exclusive` is a
PostgreSQL advisory lock shared by all replicas. A task it hands back to PENDING is sent to the
dispatcher again: with a broker, the dead worker's message may be gone (or come back only
after the visibility timeout), and a PENDING row no message points to would never run.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from datetime import timedelta

from wanserve.storage.base import Storage
from wanserve.tasks.dispatch import Dispatcher
from wanserve.tasks.store import TaskStore
from wanserve.uploads import UploadService

log = logging.getLogger(__name__)


class Janitor:
    def __init__(
        self,
        *,
        store: TaskStore,
        storage: Storage,
        interval_seconds: float,
        stale_after: timedelta,
        max_attempts: int,
        dispatcher: Dispatcher,
        uploads: UploadService | None = None,
        exclusive: Callable[[], AbstractContextManager[bool]] = lambda: nullcontext(True),
    ) -> None:
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
                self._dispatcher.submit(task_id, model=task.model)
        for task_id in report.canceled:
            log.info("task %s: its worker stopped while a cancel was pending; canceled", task_id)
        for task_id in report.failed:
            log.error("task %s: its worker stopped responding too often; failed", task_id)
        while expired := self._store.expired():
            for _task_id, video_key in expired:
                if video_key:
                    self._storage.delete(video_key)
            self._store.delete(task_id for task_id, _ in expired)
            log.info("purged %d expired task(s)", len(expired))
        if self._uploads is not None and (count := self._uploads.purge_expired()):
            log.info("purged %d expired upload(s)", count)

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
