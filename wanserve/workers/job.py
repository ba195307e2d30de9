"""`Job`: run tasks through the one job body (`execute`), whichever consumer delivers them.

The embedded loop hands it claims it made itself; the Celery consumer hands it task ids. A
task handed back to PENDING (this worker is stopping) is sent to the dispatcher again, so a
broker-fed fleet gets a fresh message for it; for a table-polled one that is a no-op. The
running claims are remembered, so an immediate exit (a second signal) can still hand them
back first.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from wanserve.tasks.dispatch import Dispatcher, DispatchError
from wanserve.tasks.models import Claim, TaskStatus
from wanserve.workers.execute import Execution, execute

log = logging.getLogger(__name__)


class Job:
    def __init__(
        self, *, execution: Execution, dispatcher: Dispatcher, stopping: Callable[[], bool]
    ) -> None:
        self._ex = execution
        self._dispatcher = dispatcher
        self._stopping = stopping
        self._running: dict[str, Claim] = {}
        self._guard = threading.Lock()

    def run_id(self, task_id: str, *, worker_id: str) -> TaskStatus | None:
        """Claim `task_id` and run it. A delivery of a task that is canceled, finished or held
        by another worker claims nothing and is dropped: that is what fences duplicates."""
        claim = self._ex.store.claim(task_id, worker_id=worker_id)
        if claim is None:
            log.info("task %s: not PENDING any more (canceled, done or taken); skipped", task_id)
            return None
        return self.run(claim)

    def run(self, claim: Claim) -> TaskStatus | None:
        with self._guard:
            self._running[claim.worker_id] = claim
        try:
            status = execute(claim, self._ex, stopping=self._stopping)
        finally:
            with self._guard:
                self._running.pop(claim.worker_id, None)
        if status is TaskStatus.PENDING:
            self._resend(claim)
        return status

    def _resend(self, claim: Claim) -> None:
        try:
            self._dispatcher.submit(claim.task.id, model=claim.task.model)
        except DispatchError as exc:  # the row is PENDING and unsent: the janitor sends it
            log.warning("task %s handed back, not re-sent: %s", claim.task.id, exc)

    def hand_back(self) -> list[str]:
        """Return every running task to the queue now (the process is about to exit without
        waiting for them). Their runs' later writes are fenced off by the claim's attempt."""
        with self._guard:
            claims = list(self._running.values())
        handed: list[str] = []
        for claim in claims:
            try:
                if self._ex.store.release(claim) is TaskStatus.PENDING:
                    self._dispatcher.submit(claim.task.id, model=claim.task.model)
                    handed.append(claim.task.id)
            except Exception:  # exiting anyway: the reaper is the safety net
                log.warning("could not hand task %s back", claim.task.id, exc_info=True)
        return handed
