"""`WorkerLoop`: generation threads fed straight from the task table.

The SQL table is the queue: a thread claims the oldest PENDING row of the models it serves
with the same conditional update any other worker uses, so a canceled or already-claimed task
never runs twice. It is the consumer of the embedded server (threads inside `wanserve serve`)
and of `wanserve worker` when no broker is configured. As a `Dispatcher`, `submit` hands an
idle thread the new task's id so it claims that one first; a periodic poll picks up anything
missed, including tasks left PENDING by a previous run or handed back by another worker.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Collection

from wanserve.tasks.models import Claim
from wanserve.tasks.store import TaskClaimer

log = logging.getLogger(__name__)

RunClaim = Callable[[Claim], object]


class WorkerLoop:
    def __init__(
        self,
        *,
        store: TaskClaimer,
        run: RunClaim,
        stopping: threading.Event,
        worker_prefix: str,
        workers: int = 1,
        models: Collection[str] | None = None,
        poll_seconds: float = 2.0,
    ) -> None:
        self._store = store
        self._run = run
        self._workers = workers
        self._models = frozenset(models) if models is not None else None
        self._poll = poll_seconds
        self._wake = threading.Condition()
        self._submitted: collections.deque[str] = collections.deque(maxlen=1000)
        self._stopping = stopping
        self._threads: list[threading.Thread] = []
        self.worker_prefix = worker_prefix

    def start(self) -> None:
        for n in range(self._workers):
            thread = threading.Thread(
                target=self._loop,
                args=(f"{self.worker_prefix}:{n}",),
                name=f"wanserve-worker-{n}",
                daemon=True,
            )
            thread.start()
            self._threads.append(thread)

    def alive(self) -> bool:
        """Whether the loop was started, is not stopping, and every thread still runs."""
        threads = list(self._threads)
        return bool(threads) and not self._stopping.is_set() and all(t.is_alive() for t in threads)

    def submit(self, task_id: str, *, model: str) -> None:
        if self._models is not None and model not in self._models:
            return  # another worker serves it
        with self._wake:
            self._submitted.append(task_id)
            self._wake.notify()

    def stop(self, *, timeout: float) -> bool:
        """Stop claiming; running tasks stop at their next step and go back to PENDING.
        True when every thread ended within `timeout`."""
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        stopped = True
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                # Its task stays RUNNING with a heartbeat that stops with the process; the
                # reaper hands it back to the queue.
                log.warning("%s did not stop within %.0fs", thread.name, timeout)
                stopped = False
        self._threads.clear()
        return stopped

    def _next(self, worker_id: str) -> Claim | None:
        while True:
            with self._wake:
                if not self._submitted:
                    break
                task_id = self._submitted.popleft()
            claim = self._store.claim(task_id, worker_id=worker_id)
            if claim is not None:
                return claim
        return self._store.claim_next(worker_id=worker_id, models=self._models)

    def _loop(self, worker_id: str) -> None:
        while not self._stopping.is_set():
            try:
                claim = self._next(worker_id)
            except Exception:
                log.exception("claiming the next task failed; retrying")
                claim = None
            if claim is None:
                with self._wake:
                    if not self._submitted and not self._stopping.is_set():
                        self._wake.wait(self._poll)
                continue
            try:
                self._run(claim)
            except Exception:  # execute() ends the row itself; this is a last resort
                log.exception("worker %s crashed running task %s", worker_id, claim.task.id)
