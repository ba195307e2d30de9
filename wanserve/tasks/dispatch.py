"""The `Dispatcher` seam, producer side: how a PENDING task id gets to a worker.

The SQL row is the record of truth; a dispatcher only carries the id. Implementations:

- `TablePoll` (here): nothing to send; workers claim the oldest PENDING rows themselves
  (an API-only process whose workers poll the same database).
- `workers.loop.WorkerLoop`: the embedded consumer; `submit` wakes an idle thread early.
- `workers.celery.CeleryDispatcher`: `send_task` of the id to the queue of the task's model.

Duplicates are harmless everywhere: a worker's claim is a conditional update, so a task that
was canceled, finished or claimed elsewhere is skipped.
"""

from __future__ import annotations

from typing import Protocol


class Dispatcher(Protocol):
    def submit(self, task_id: str, *, model: str) -> None:
        """A PENDING task exists (new, or handed back); get it to a worker serving `model`."""


class TablePoll:
    """Workers poll the task table (`claim_next`), so there is nothing to send."""

    def submit(self, task_id: str, *, model: str) -> None:
        return None
