"""`FinishedTasks`: the rendered bodies of finished tasks, kept in memory for polls.

A SUCCEEDED, FAILED or CANCELED task never changes again (`tasks/lifecycle.py` allows no
transition out of a terminal status), so its answer can be served again without the database
and without re-signing its URL, until the task expires. Clients poll a finished task several
times (the SDK's `wait`, then `fetch`, dashboards), and a poll is the most frequent call a
video API gets.

Every hit is checked like a database read: the caller's key must own the task (another key's
task is not served from here; the store then answers, and the route says UNKNOWN), and an
expired task is not served (the store's own expiry rule then applies). Entries live at most
`ENTRY_SECONDS` (a signed URL handed out again stays valid for as long as any storage's URLs
last) and the newest `ENTRY_LIMIT` are kept. Only the event loop touches it: no lock.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime, timedelta

from wanserve.tasks.models import Task

ENTRY_LIMIT = 4096
ENTRY_SECONDS = timedelta(minutes=5)


@dataclass(frozen=True)
class _Entry:
    api_key_id: str
    origin: str  # the answer's video_url was made for requests from this origin
    body: bytes
    expires_at: datetime  # the task's
    until: datetime  # this entry's own end


class FinishedTasks:
    def __init__(self, *, limit: int = ENTRY_LIMIT, lifetime: timedelta = ENTRY_SECONDS) -> None:
        self._limit = limit
        self._lifetime = lifetime
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def body(self, task_id: str, *, api_key_id: str, origin: str, now: datetime) -> bytes | None:
        """The kept body of the caller's finished task, or None: ask the store."""
        entry = self._entries.get(task_id)
        if entry is None:
            return None
        if entry.until <= now or entry.expires_at < now:
            del self._entries[task_id]
            return None
        if entry.api_key_id != api_key_id or entry.origin != origin:
            return None
        self._entries.move_to_end(task_id)
        return entry.body

    def forget(self, task_id: str) -> None:
        """Drop `task_id`'s kept answer (its owner deleted it). Other API processes keep
        theirs for at most `ENTRY_SECONDS`."""
        self._entries.pop(task_id, None)

    def keep(self, task: Task, *, origin: str, body: bytes, now: datetime) -> None:
        """Remember `body` as `task`'s answer, if the task is finished."""
        if not task.status.is_terminal:
            return
        self._entries[task.id] = _Entry(
            api_key_id=task.api_key_id,
            origin=origin,
            body=body,
            expires_at=task.expires_at,
            until=min(task.expires_at, now + self._lifetime),
        )
        self._entries.move_to_end(task.id)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)
