"""`EmbeddedDispatcher`: generation threads inside the server process, fed by the task table.

The SQL table is the queue: a worker thread claims the oldest PENDING row with the same
conditional update any other worker would use, so a cancelled or already-claimed task never
runs twice. `submit` only wakes a thread early; a periodic poll picks up anything missed,
including tasks left PENDING by a previous run of the server.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable

from wanserve.tasks.models import Claim
from wanserve.tasks.store import TaskStore

log = logging.getLogger(__name__)

Execute = Callable[[Claim, Callable[[], bool]], object]


class EmbeddedDispatcher:
    def __init__(
        self,
        *,
        store: TaskStore,
        execute: Execute,
        workers: int = 1,
        poll_seconds: float = 2.0,
    ) -> None:
        self._store = store
        self._execute = execute
        self._workers = workers
        self._poll = poll_seconds
        self._wake = threading.Condition()
        self._pending_signal = False
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self.worker_prefix = f"embedded:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"

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

    def submit(self, task_id: str, *, model: str) -> None:
        with self._wake:
            self._pending_signal = True
            self._wake.notify()

    def stop(self, *, timeout: float) -> None:
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout)
            if thread.is_alive():
                # Its task stays RUNNING with a heartbeat that stops with the process; the
                # reaper hands it back to the queue after a restart.
                log.warning("%s did not stop within %.0fs", thread.name, timeout)
        self._threads.clear()

    def _loop(self, worker_id: str) -> None:
        while not self._stopping.is_set():
            try:
                claim = self._store.claim_next(worker_id=worker_id)
            except Exception:
                log.exception("claiming the next task failed; retrying")
                claim = None
            if claim is None:
                with self._wake:
                    if not self._pending_signal and not self._stopping.is_set():
                        self._wake.wait(self._poll)
                    self._pending_signal = False
                continue
            try:
                self._execute(claim, self._stopping.is_set)
            except Exception:  # execute() ends the row itself; this is a last resort
                log.exception("worker %s crashed running task %s", worker_id, claim.task.id)
