"""The `Dispatcher` seam, producer side: how a PENDING task id gets to a worker.

The SQL row is the record of truth; a dispatcher only carries the id. Implementations:

- `TablePoll` (here): nothing to send; workers claim the oldest PENDING rows themselves
  (an API-only process whose workers poll the same database).
- `workers.loop.WorkerLoop`: the embedded consumer; `submit` wakes an idle thread early.
- `tasks.celery.CeleryDispatcher`: `send_task` of the id, by name, to the queue of the task's
  model (the consumer, `workers.celery`, registers the task and runs the job body).

Duplicates are harmless everywhere: a worker's claim is a conditional update, so a task that
was canceled, finished or claimed elsewhere is skipped.

A message can be lost where a table cannot: the send fails (broker down), the process dies
between the INSERT and the send, or the broker loses its data. `Recorded` notes on the row
when a message left (`dispatched_at`), and the janitor re-sends PENDING tasks that were never
sent, or were sent long ago (`TaskStore.stranded`, `Janitor`). A failed send raises
`DispatchError`; the row is already the truth, so callers log it and go on.
"""

from __future__ import annotations

from typing import Protocol


class DispatchError(Exception):
    """The id could not be handed to the broker; the janitor will send it again later."""


class Dispatcher(Protocol):
    def submit(self, task_id: str, *, model: str) -> None:
        """A PENDING task exists (new, or handed back); get it to a worker serving `model`.
        Raises `DispatchError` if it could not."""


class DispatchLog(Protocol):
    def mark_dispatched(self, task_id: str) -> bool: ...


class Recorded:
    """A message-carrying dispatcher whose sends are recorded on the task row, so the janitor
    can tell a task whose message never left (or left long ago) from one merely waiting."""

    def __init__(self, inner: Dispatcher, *, log: DispatchLog) -> None:
        self._inner = inner
        self._log = log

    def submit(self, task_id: str, *, model: str) -> None:
        self._inner.submit(task_id, model=model)
        # After the send, never before: a crash in between leaves the row unmarked, and an
        # unmarked row is re-sent (a duplicate is harmless; a missing message is not).
        self._log.mark_dispatched(task_id)


class TablePoll:
    """Workers poll the task table (`claim_next`), so there is nothing to send."""

    def submit(self, task_id: str, *, model: str) -> None:
        return None
