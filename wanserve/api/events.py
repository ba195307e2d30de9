"""Live events of one task, as Server-Sent Events: `GET /api/v1/tasks/{task_id}/events`.

    event: status    {"task_id", "task_status", "queue_position"}   first, then on each change
    event: progress  {"task_id", "stage", "step", "total_steps", "progress"}   on each change
    event: done      the task's `GET /api/v1/tasks/{id}` body; the stream closes after it
    : keep-alive     a comment, whenever the stream was silent `events_keepalive_seconds`

Events are derived from the task store, never from this process's memory: each stream polls
its task's row (`TaskStore.watch`, one small SELECT) every `events_poll_seconds`, so it works
whichever process or host runs the task, and stages short enough to fall between two polls are
not seen.

Event ids are derived from the state they report, not counted per connection, so a client
that reconnects with `Last-Event-ID: N` on any replica gets exactly what it has not seen:

    id = seq * 10**9 + within
    seq     2 * attempts for RUNNING, 2 * attempts + 1 for PENDING (a new task, or one handed
            back after its attempt), 2 * attempts + 2 once it ended: it only grows
    within  PENDING: 2 * (10**8 - queue_position) for status, + 1 for the queued progress;
            RUNNING: 0 for status, 1 + stage * 10**8 + step * 1000 + percent for progress;
            ended: 0 for status, 1 for done

A state's id is larger than that of every state before it, so "events after N" is "states
whose id is larger than N", and a changed status always has a larger id than anything seen
in the old one. The one exception is a queue position going up (an older task handed back to
the queue): that event is sent with the previous id + 1, so ids still increase.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response, StreamingResponse
from starlette.background import BackgroundTask

from wanserve.api.dashscope import render
from wanserve.api.deps import ApiKeyDep, RequestIdDep, Services, ServicesDep, check_url_text
from wanserve.api.openapi import NEEDS_KEY, responses
from wanserve.api.streams import StreamLease
from wanserve.errors import InvalidParameter
from wanserve.keys import ApiKey
from wanserve.tasks.models import TaskStage, TaskState, TaskStatus

events = APIRouter(prefix="/api/v1", dependencies=[Depends(check_url_text)])

_SPAN = 10**9
_QUEUE = 10**8
_MAX_ID_DIGITS = 30


def _seq(state: TaskState) -> int:
    if state.status is TaskStatus.PENDING:
        return 2 * state.attempts + 1
    if state.status is TaskStatus.RUNNING:
        return 2 * state.attempts
    return 2 * state.attempts + 2


def status_id(state: TaskState) -> int:
    within = 0
    if state.status is TaskStatus.PENDING:
        within = 2 * (_QUEUE - min(state.queue_position or 0, _QUEUE - 1))
    return _seq(state) * _SPAN + within


def progress_id(state: TaskState) -> int:
    """The id of the state's progress event (of its done event, once it ended)."""
    if state.status is TaskStatus.RUNNING:
        p = state.progress
        within = 1 + p.stage.rank * _QUEUE + min(p.step, 99_999) * 1000 + min(p.percent, 100)
        return _seq(state) * _SPAN + within
    return status_id(state) + 1


@dataclass(frozen=True)
class Event:
    kind: str  # status | progress | done
    id: int
    data: dict[str, Any]

    def frame(self) -> bytes:
        data = json.dumps(self.data, ensure_ascii=False, separators=(",", ":"))
        return f"id: {self.id}\nevent: {self.kind}\ndata: {data}\n\n".encode()


KEEP_ALIVE = b": keep-alive\n\n"


class Cursor:
    """What a stream has sent (or, after a reconnect, what the client already has)."""

    def __init__(self, last_id: int) -> None:
        self.last_id = last_id
        self._known: dict[str, int] = {}

    def offer(self, kind: str, derived: int, data: dict[str, Any]) -> Event | None:
        """The event for a state whose id is `derived`, unless the client has it."""
        known = self._known.get(kind)
        if derived == known:
            return None
        self._known[kind] = derived
        if known is None and derived <= self.last_id:
            return None  # seen before the reconnect
        self.last_id = max(derived, self.last_id + 1)
        return Event(kind, self.last_id, data)

    def changes(self, state: TaskState) -> list[Event]:
        """Status (first) and progress events for `state`; none for an ended task, whose
        status the caller sends with its done event."""
        sent = [self.offer("status", status_id(state), status_data(state))]
        if not state.status.is_terminal:
            sent.append(self.offer("progress", progress_id(state), progress_data(state)))
        return [e for e in sent if e is not None]


def parse_last_event_id(value: str | None) -> int:
    if value is None or not value.strip():
        return 0
    value = value.strip()
    if not (value.isascii() and value.isdigit() and len(value) <= _MAX_ID_DIGITS):
        raise InvalidParameter(
            "Last-Event-ID must be the id of an event of this stream (decimal digits)."
        )
    return int(value)


_STREAM_DOC = (
    "Server-Sent Events: `status`, `progress` and `done` events, each with an `id:` to "
    "resume from (`Last-Event-ID`), and `: keep-alive` comments. An unknown task, or another "
    "key's, gets one `done` event with the UNKNOWN body."
)


# One event (OpenAPI 3.1: an event stream's `schema` describes each event); `data` is JSON:
# the status and progress objects of docs/api.md, or the task body for done.
_EVENT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["event", "id", "data"],
    "properties": {
        "event": {"enum": ["status", "progress", "done"]},
        "id": {"type": "string", "pattern": "^[0-9]+$"},
        "data": {"type": "string", "contentMediaType": "application/json"},
    },
}


@events.get(
    "/tasks/{task_id}/events",
    response_class=StreamingResponse,
    responses={
        **responses(_STREAM_DOC, 400, 401, 429, 500),
        200: {
            "description": _STREAM_DOC,
            "content": {"text/event-stream": {"schema": _EVENT_SCHEMA}},
        },
        204: {"description": "Last-Event-ID is the ended task's done event: nothing follows."},
    },
    openapi_extra=NEEDS_KEY,
)
async def task_events(
    task_id: str,
    request: Request,
    services: ServicesDep,
    key: ApiKeyDep,
    request_id: RequestIdDep,
    last_event_id: Annotated[
        str | None,
        Header(
            alias="Last-Event-ID",
            description="Resume after this event (what EventSource sends on reconnect).",
        ),
    ] = None,
) -> Response:
    """Live status and progress of a task, as Server-Sent Events, until it ends."""
    after = parse_last_event_id(last_event_id)
    lease = services.streams.open(key.id)
    try:
        state = await anyio.to_thread.run_sync(services.tasks.watch, task_id, key.id)
    except BaseException:
        lease.release()
        raise
    if state is not None and state.status.is_terminal and after >= progress_id(state):
        lease.release()
        return Response(status_code=204)  # EventSource stops reconnecting on a 204
    stream = _Stream(
        services,
        key=key,
        task_id=task_id,
        request_id=request_id,
        base_url=str(request.base_url),
        lease=lease,
    )
    return StreamingResponse(
        stream.run(state, after=after),
        media_type="text/event-stream",
        # Proxies must neither cache nor buffer a stream (X-Accel-Buffering: nginx).
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        # Also released here: a stream cancelled before its first chunk never runs `finally`.
        background=BackgroundTask(lease.release),
    )


class _Stream:
    def __init__(
        self,
        services: Services,
        *,
        key: ApiKey,
        task_id: str,
        request_id: str,
        base_url: str,
        lease: StreamLease,
    ) -> None:
        self._services = services
        self._key = key
        self._task_id = task_id
        self._request_id = request_id
        self._base_url = base_url
        self._lease = lease

    async def run(self, first: TaskState | None, *, after: int) -> AsyncIterator[bytes]:
        settings = self._services.settings
        streams = self._services.streams
        try:
            cursor = Cursor(after)
            state = first
            started = last_sent = time.monotonic()
            while True:
                if state is None:
                    yield Event("done", 0, await self._body(None)).frame()
                    return
                for event in cursor.changes(state):
                    yield event.frame()
                    last_sent = time.monotonic()
                if state.status.is_terminal:
                    body = await self._body(state)
                    done = cursor.offer("done", progress_id(state), body)
                    if done is not None:
                        yield done.frame()
                    return
                now = time.monotonic()
                if streams.closing or now - started >= settings.events_max_seconds:
                    return  # the client resumes with Last-Event-ID, here or elsewhere
                if now - last_sent >= settings.events_keepalive_seconds:
                    yield KEEP_ALIVE
                    last_sent = now
                await anyio.sleep(settings.events_poll_seconds)
                state = await anyio.to_thread.run_sync(
                    self._services.tasks.watch, self._task_id, self._key.id
                )
        finally:
            self._lease.release()

    async def _body(self, state: TaskState | None) -> dict[str, Any]:
        """The task's GET body (UNKNOWN when it is gone, expired or not the caller's)."""
        task = None
        if state is not None:
            task = await anyio.to_thread.run_sync(
                lambda: self._services.tasks.get(self._task_id, api_key_id=self._key.id)
            )
        if task is None:
            return render.unknown(self._task_id, request_id=self._request_id)
        url = self._services.video_url(task, base_url=self._base_url)
        return render.task_body(task, request_id=self._request_id, video_url=url)


# -- The `data` of each event kind. --


def status_data(state: TaskState) -> dict[str, Any]:
    return {
        "task_id": state.task_id,
        "task_status": state.status.value,
        "queue_position": state.queue_position,
    }


def progress_data(state: TaskState) -> dict[str, Any]:
    progress = state.progress
    # Steps mean something from the first denoising step on.
    counted = progress.stage not in (TaskStage.QUEUED, TaskStage.LOADING)
    return {
        "task_id": state.task_id,
        "stage": progress.stage.value,
        "step": progress.step if counted else None,
        "total_steps": progress.total_steps if counted else None,
        "progress": progress.percent,
    }
