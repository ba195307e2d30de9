"""`TaskStore`: the record of truth, and the only code that changes a task's status.

Every status change is one conditional UPDATE whose WHERE clause lists the statuses the
lifecycle allows the change from (`lifecycle.sources_of`), so racing writers (a cancel and a
claim, two workers, a reaper and a slow worker) can never produce an illegal sequence. Updates
made on behalf of a worker also match the claim's `attempt`, which fences out a holder that
lost its claim.

Quotas on unfinished tasks are checked inside the transaction that inserts the task, with
submissions serialised across every process sharing the database (PostgreSQL: a transaction
advisory lock; SQLite: `BEGIN IMMEDIATE`, which takes the one write lock up front), so no
number of concurrent submissions, on any number of API replicas, can overshoot a quota.

Usage is metered in the same transaction as every terminal status change (`usage.meter`),
so a task is counted exactly once, when and only when it ends. A task with a callback URL
owes a webhook from that same transaction too (`outbox.enqueue`): the status and the
delivery it owes commit together, so no crash can lose one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol

from sqlalchemy import Engine, Row, bindparam, case, delete, func, select, tuple_, update
from sqlalchemy.orm import Session, aliased, sessionmaker

from wanserve.clock import Clock, utcnow
from wanserve.db.tables import TaskRow
from wanserve.spec import GenerationSpec
from wanserve.tasks.dispatch import DispatchLog
from wanserve.tasks.lifecycle import check_transition, sources_of
from wanserve.tasks.models import (
    Claim,
    CursorPage,
    CursorQuery,
    Progress,
    PromptExtension,
    Task,
    TaskError,
    TaskPage,
    TaskQuery,
    TaskResult,
    TaskStage,
    TaskState,
    TaskStatus,
)
from wanserve.tasks.outbox import count_pending, enqueue
from wanserve.tasks.usage import meter


@dataclass(frozen=True)
class Control:
    """What a worker learns when it reports in: whether it still holds the task, and whether
    the task should stop."""

    owned: bool
    cancel_requested: bool


@dataclass(frozen=True)
class Quota:
    """Most unfinished (PENDING + RUNNING) tasks one key, and the whole server, may hold."""

    per_key: int
    total: int


class QuotaExceeded(Exception):
    def __init__(self, *, scope: Literal["key", "server"], limit: int) -> None:
        super().__init__(f"{scope} quota of {limit} unfinished tasks reached")
        self.scope = scope
        self.limit = limit


# One fleet-wide lock for submissions. The server-wide quota makes every submission compete
# for the same count, so a per-key lock would not be enough; the lock is held only for a count
# and an insert. A fixed digest keeps it clear of other advisory locks.
_SUBMISSION_LOCK = int.from_bytes(
    hashlib.sha256(b"wanserve:submissions").digest()[:8], "big", signed=True
)
_DIALECTS = ("sqlite", "postgresql")


@dataclass(frozen=True)
class Queued:
    """A PENDING task whose id may have to be sent to the broker (again)."""

    task_id: str
    model: str


@dataclass(frozen=True)
class ReapReport:
    requeued: list[str]
    failed: list[str]
    canceled: list[str]


@dataclass(frozen=True)
class TaskCounts:
    """Fleet-wide numbers for the metrics: every task kept in the store (until it is purged),
    expired and deleted ones included."""

    tasks: dict[tuple[str, TaskStatus], int]  # (model, status) -> count
    oldest_pending: dict[str, datetime]  # model -> submit time of its oldest PENDING task
    outbox_pending: int  # webhook messages not yet delivered or abandoned


# -- roles: what each caller asks of the store ------------------------------------------------
#
# `SqlTaskStore` implements all of them; `TaskStore` is their union, for the composition roots.
# Each consumer names the narrowest role it needs, so a test double implements only that, and
# a reader of a consumer sees at once which writes it may make. A method may appear in two
# roles (`get`, `claim`, `delete`): roles follow callers, not a partition of the methods.
# `tests/unit/test_store_roles.py` checks every role against `SqlTaskStore`.


class TaskDesk(Protocol):
    """The API door (`TaskService`): submit, read, cancel and delete a key's tasks."""

    def create(
        self,
        *,
        task_id: str,
        api_key_id: str,
        request_id: str,
        spec: GenerationSpec,
        quota: Quota | None = None,
        callback_url: str | None = None,
    ) -> Task: ...
    def count_unfinished(self, api_key_id: str | None = None) -> int: ...
    def get(self, task_id: str) -> Task | None: ...
    def watch(self, task_id: str) -> TaskState | None: ...
    def query(self, q: TaskQuery) -> TaskPage: ...
    def page(self, q: CursorQuery) -> CursorPage: ...
    def cancel_pending(self, task_id: str) -> bool: ...
    def request_cancel(self, task_id: str) -> bool: ...
    def mark_deleted(self, task_id: str) -> bool: ...
    def delete(self, task_ids: Iterable[str]) -> int: ...


class TaskClaimer(Protocol):
    """A table-fed worker (`WorkerLoop`): take the task it was handed, or the oldest PENDING."""

    def claim(self, task_id: str, *, worker_id: str) -> Claim | None: ...
    def claim_next(
        self, *, worker_id: str, models: Collection[str] | None = None
    ) -> Claim | None: ...


class ProgressSink(Protocol):
    """Where a run's progress goes (`ProgressReporter`); the answer says whether to go on."""

    def report_progress(self, claim: Claim, progress: Progress) -> Control: ...


class TaskReporter(ProgressSink, Protocol):
    """The job body (`Execution`, `Job`): claim a delivered id, then report on the claim
    (heartbeats, progress, the prompt extension) until it ends or is handed back."""

    def claim(self, task_id: str, *, worker_id: str) -> Claim | None: ...
    def heartbeat(self, claim: Claim) -> Control: ...
    def succeed(self, claim: Claim, result: TaskResult) -> bool: ...
    def fail(self, claim: Claim, error: TaskError) -> bool: ...
    def cancel_running(self, claim: Claim) -> bool: ...
    def release(self, claim: Claim) -> TaskStatus | None: ...
    def record_extension(self, claim: Claim, extension: PromptExtension) -> bool: ...


class TaskSweeper(Protocol):
    """The janitor: requeue tasks of dead workers, re-send stranded ones, purge expired ones."""

    def reap(self, *, stale_after: timedelta, max_attempts: int) -> ReapReport: ...
    def get(self, task_id: str) -> Task | None: ...
    def stranded(
        self, *, unsent_after: timedelta, resend_after: timedelta, limit: int = 500
    ) -> list[Queued]: ...
    def expired(self, *, limit: int = 500) -> list[tuple[str, str | None]]: ...
    def delete(self, task_ids: Iterable[str]) -> int: ...


class TaskCounter(Protocol):
    """The metrics (`observability.StoreCollector`): fleet-wide counts, read at scrape time."""

    def counts(self) -> TaskCounts: ...


class TaskStore(
    TaskDesk, TaskClaimer, TaskReporter, TaskSweeper, TaskCounter, DispatchLog, Protocol
):
    """Every role: what a composition root builds and hands out role by role. `DispatchLog`
    (`mark_dispatched`) is the producer's role (`tasks.dispatch.Recorded`)."""


class SqlTaskStore:
    """`TaskStore` on SQLAlchemy: SQLite (embedded) or PostgreSQL, same statements."""

    def __init__(self, engine: Engine, *, ttl: timedelta, clock: Clock = utcnow) -> None:
        if engine.dialect.name not in _DIALECTS:
            # Quotas rely on each backend's own way of serialising writers (see above).
            raise ValueError(
                f"unsupported database {engine.dialect.name!r}: use SQLite or PostgreSQL"
            )
        self._engine = engine
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._ttl = ttl
        self._now = clock

    # -- API side -------------------------------------------------------------------------

    def create(
        self,
        *,
        task_id: str,
        api_key_id: str,
        request_id: str,
        spec: GenerationSpec,
        quota: Quota | None = None,
        callback_url: str | None = None,
    ) -> Task:
        """Persist a PENDING task; with `quota`, atomically refuse it (`QuotaExceeded`) when
        the key or the server already holds as many unfinished tasks as allowed.
        `callback_url` (already checked) is POSTed the task when it ends."""
        now = self._now()
        row = TaskRow(
            id=task_id,
            api_key_id=api_key_id,
            request_id=request_id,
            model=spec.model,
            status=TaskStatus.PENDING.value,
            spec=spec.to_json(),
            submit_time=now,
            expires_at=now + self._ttl,
            attempts=0,
            lost=0,
            cancel_requested=False,
            step=0,
            total_steps=spec.steps,
            progress=0,
            stage=TaskStage.QUEUED.value,
            has_audio=False,
            callback_url=callback_url,
        )
        with self._sessions.begin() as s:
            if quota is not None:
                _serialise_submissions(s)
                if (s.scalar(_unfinished(api_key_id)) or 0) >= quota.per_key:
                    raise QuotaExceeded(scope="key", limit=quota.per_key)
                if (s.scalar(_unfinished(None)) or 0) >= quota.total:
                    raise QuotaExceeded(scope="server", limit=quota.total)
            s.add(row)
        return _to_task(row)

    def get(self, task_id: str) -> Task | None:
        """The task, with its queue position while PENDING."""
        # Core, not the ORM: every poll of an unfinished task comes here, and a Session with
        # its identity map and instance loading took most of the lookup's time.
        with self._engine.connect() as conn:
            row = conn.execute(_BY_ID, {"task_id": task_id}).one_or_none()
        return _to_task(row, ahead=row.ahead) if row is not None else None

    def watch(self, task_id: str) -> TaskState | None:
        """The task's status, progress and queue position in one small SELECT (no spec or
        result columns): what a live event stream polls."""
        with self._sessions() as s:
            found = s.execute(
                select(
                    TaskRow.api_key_id,
                    TaskRow.status,
                    TaskRow.attempts,
                    TaskRow.stage,
                    TaskRow.step,
                    TaskRow.total_steps,
                    TaskRow.progress,
                    TaskRow.expires_at,
                    _ahead(),
                ).where(TaskRow.id == task_id)
            ).first()
        if found is None:
            return None
        key, status_text, attempts, stage, step, total, percent, expires_at, ahead = found
        status = TaskStatus(status_text)
        return TaskState(
            task_id=task_id,
            api_key_id=key,
            status=status,
            attempts=attempts,
            progress=Progress(
                stage=_stage(stage, status), step=step, total_steps=total, percent=percent
            ),
            queue_position=ahead if status is TaskStatus.PENDING else None,
            expires_at=expires_at,
        )

    def _visible(self, api_key_id: str) -> list[Any]:
        """The conditions of a key's tasks that callers can see: expired and deleted tasks
        are gone as far as they can tell."""
        return [
            TaskRow.api_key_id == api_key_id,
            TaskRow.deleted.is_(False),
            ~(
                (TaskRow.expires_at < self._now())
                & TaskRow.status.in_([s.value for s in TaskStatus if s.is_terminal])
            ),
        ]

    def query(self, q: TaskQuery) -> TaskPage:
        conditions = self._visible(q.api_key_id)
        if q.start is not None:
            conditions.append(TaskRow.submit_time >= q.start)
        if q.end is not None:
            conditions.append(TaskRow.submit_time <= q.end)
        if q.model is not None:
            conditions.append(TaskRow.model == q.model)
        if q.status is not None:
            conditions.append(TaskRow.status == q.status.value)
        with self._sessions() as s:
            total = s.scalar(select(func.count()).select_from(TaskRow).where(*conditions)) or 0
            rows = s.scalars(
                select(TaskRow)
                .where(*conditions)
                .order_by(TaskRow.submit_time.desc(), TaskRow.id)
                .offset((q.page_no - 1) * q.page_size)
                .limit(q.page_size)
            ).all()
            return TaskPage(total=total, tasks=[_to_task(r) for r in rows])

    def page(self, q: CursorQuery) -> CursorPage:
        """Up to `q.limit` visible tasks of the key after the cursor task, ordered by
        (submit time, id); `LookupError` when the cursor is not a visible task of the key."""
        conditions = self._visible(q.api_key_id)
        with self._sessions() as s:
            if q.after is not None:
                cursor = s.execute(
                    select(TaskRow.submit_time, TaskRow.id).where(
                        TaskRow.id == q.after, *conditions
                    )
                ).first()
                if cursor is None:
                    raise LookupError(q.after)
                key = tuple_(TaskRow.submit_time, TaskRow.id)
                conditions.append(
                    key < tuple_(*cursor) if q.newest_first else key > tuple_(*cursor)
                )
            order = (
                (TaskRow.submit_time.desc(), TaskRow.id.desc())
                if q.newest_first
                else (TaskRow.submit_time, TaskRow.id)
            )
            # One row more than asked says whether another page follows, without a count.
            rows = s.scalars(
                select(TaskRow).where(*conditions).order_by(*order).limit(q.limit + 1)
            ).all()
            tasks = [_to_task(r) for r in rows[: q.limit]]
            return CursorPage(tasks=tasks, has_more=len(rows) > q.limit)

    def mark_deleted(self, task_id: str) -> bool:
        """Hide a task from every caller; the janitor purges it and its video once it has
        ended. False when there was no such task or it was already deleted."""
        with self._sessions.begin() as s:
            res = s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.deleted.is_(False))
                .values(deleted=True)
            )
            return _rowcount(res) == 1

    def count_unfinished(self, api_key_id: str | None = None) -> int:
        with self._sessions() as s:
            return s.scalar(_unfinished(api_key_id)) or 0

    def cancel_pending(self, task_id: str) -> bool:
        """PENDING -> CANCELED. False when the task was not PENDING any more."""
        return self._transition(
            task_id, TaskStatus.CANCELED, only_from={TaskStatus.PENDING}, end_time=self._now()
        )

    def request_cancel(self, task_id: str) -> bool:
        """Flag a RUNNING task; its worker stops at the next step and ends it CANCELED."""
        with self._sessions.begin() as s:
            res = s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.status == TaskStatus.RUNNING.value)
                .values(cancel_requested=True)
            )
            return _rowcount(res) == 1

    # -- worker side ------------------------------------------------------------------------

    def claim(self, task_id: str, *, worker_id: str) -> Claim | None:
        """PENDING -> RUNNING for this worker; None if someone else got it or it was canceled."""
        now = self._now()
        with self._sessions.begin() as s:
            res = s.execute(
                update(TaskRow)
                .where(
                    TaskRow.id == task_id,
                    TaskRow.status.in_(_values(sources_of(TaskStatus.RUNNING))),
                )
                .values(
                    status=TaskStatus.RUNNING.value,
                    attempts=TaskRow.attempts + 1,
                    worker_id=worker_id,
                    scheduled_time=now,
                    heartbeat_at=now,
                    cancel_requested=False,
                    step=0,
                    progress=0,
                    # Claimed: from here to the first denoising step the worker fetches
                    # inputs, extends the prompt and loads the model.
                    stage=TaskStage.LOADING.value,
                )
            )
            if _rowcount(res) != 1:
                return None
            row = s.get(TaskRow, task_id, populate_existing=True)
            assert row is not None
            return Claim(task=_to_task(row), attempt=row.attempts, worker_id=worker_id)

    def claim_next(self, *, worker_id: str, models: Collection[str] | None = None) -> Claim | None:
        """Claim the oldest PENDING task (of `models`, if given)."""
        stmt = (
            select(TaskRow.id)
            .where(TaskRow.status == TaskStatus.PENDING.value)
            .order_by(TaskRow.submit_time, TaskRow.id)
            .limit(8)
        )
        if models is not None:
            stmt = stmt.where(TaskRow.model.in_(list(models)))
        for _ in range(5):  # losing a race to another worker just means: try the next one
            with self._sessions() as s:
                candidates = list(s.scalars(stmt))
            if not candidates:
                return None
            for task_id in candidates:
                claim = self.claim(task_id, worker_id=worker_id)
                if claim is not None:
                    return claim
        return None

    def heartbeat(self, claim: Claim) -> Control:
        return self._touch(claim)

    def report_progress(self, claim: Claim, progress: Progress) -> Control:
        return self._touch(claim, progress)

    def succeed(self, claim: Claim, result: TaskResult) -> bool:
        now = self._now()
        return self._finish(
            claim,
            TaskStatus.SUCCEEDED,
            video_key=result.video_key,
            width=result.width,
            height=result.height,
            has_audio=result.has_audio,
            actual_prompt=result.actual_prompt,
            blocks_computed=result.blocks_computed,
            blocks_skipped=result.blocks_skipped,
            duration=result.duration,
            progress=100,
            step=TaskRow.total_steps,
            # The video stays downloadable for the full TTL after it is made.
            expires_at=now + self._ttl,
        )

    def fail(self, claim: Claim, error: TaskError) -> bool:
        return self._finish(
            claim, TaskStatus.FAILED, error_code=error.code, error_message=error.message
        )

    def cancel_running(self, claim: Claim) -> bool:
        return self._finish(claim, TaskStatus.CANCELED)

    def record_extension(self, claim: Claim, extension: PromptExtension) -> bool:
        """Keep the prompt extension a run made, so a retry of the task reuses it."""
        text = _extension_json(extension)
        with self._sessions.begin() as s:
            res = s.execute(update(TaskRow).where(*self._held(claim)).values(extension=text))
            return _rowcount(res) == 1

    def release(self, claim: Claim) -> TaskStatus | None:
        """Hand a RUNNING task back to the queue (graceful shutdown): it runs again later,
        unless a cancel was asked for meanwhile, which ends it CANCELED. Returns the status
        written, or None if the claim was lost."""
        with self._sessions.begin() as s:
            return self._requeue(s, [*self._held(claim)])

    def _requeue(self, s: Session, where: list[Any], **values: Any) -> TaskStatus | None:
        """RUNNING -> CANCELED if a cancel was asked for, else RUNNING -> PENDING. A cancel
        answered 200 must never be lost by putting the task back in the queue."""
        canceled = s.execute(
            update(TaskRow)
            .where(*where, TaskRow.cancel_requested.is_(True))
            .values(
                status=_checked(TaskStatus.RUNNING, TaskStatus.CANCELED),
                end_time=self._now(),
                heartbeat_at=None,
                **values,
            )
            .returning(*_ENDED)
        )
        if self._ended(s, canceled, TaskStatus.CANCELED):
            return TaskStatus.CANCELED
        requeued = s.execute(
            update(TaskRow)
            .where(*where, TaskRow.cancel_requested.is_(False))
            .values(
                status=_checked(TaskStatus.RUNNING, TaskStatus.PENDING),
                worker_id=None,
                heartbeat_at=None,
                scheduled_time=None,
                # The message that delivered it is spent: this PENDING spell needs a new one.
                dispatched_at=None,
                step=0,
                progress=0,
                stage=TaskStage.QUEUED.value,
                **values,
            )
        )
        return TaskStatus.PENDING if _rowcount(requeued) == 1 else None

    # -- housekeeping -----------------------------------------------------------------------

    def reap(self, *, stale_after: timedelta, max_attempts: int) -> ReapReport:
        """RUNNING tasks whose worker stopped reporting: back to PENDING, or FAILED once they
        have been lost `max_attempts` times, or CANCELED if a cancel was asked for."""
        now = self._now()
        stale = (TaskRow.status == TaskStatus.RUNNING.value) & (
            TaskRow.heartbeat_at < now - stale_after
        )
        requeued: list[str] = []
        failed: list[str] = []
        canceled: list[str] = []
        with self._sessions() as s:
            rows = s.execute(select(TaskRow.id, TaskRow.attempts, TaskRow.lost).where(stale)).all()
        for task_id, attempts, lost in rows:
            held = [TaskRow.id == task_id, TaskRow.attempts == attempts, stale]
            with self._sessions.begin() as s:
                if lost + 1 < max_attempts:
                    outcome = self._requeue(s, held, lost=lost + 1)
                    if outcome is TaskStatus.PENDING:
                        requeued.append(task_id)
                    elif outcome is TaskStatus.CANCELED:
                        canceled.append(task_id)
                    continue
                res = s.execute(
                    update(TaskRow)
                    .where(*held)
                    .values(
                        status=_checked(TaskStatus.RUNNING, TaskStatus.FAILED),
                        lost=lost + 1,
                        end_time=now,
                        heartbeat_at=None,
                        worker_id=None,
                        error_code="InternalError",
                        error_message=(
                            f"The worker running this task stopped responding {lost + 1} "
                            "time(s); the task was not retried again. Resubmit it, and tell the "
                            "operator if this repeats (it usually means the process ran out of "
                            "memory)."
                        ),
                    )
                    .returning(*_ENDED)
                )
                if self._ended(s, res, TaskStatus.FAILED):
                    failed.append(task_id)
        return ReapReport(requeued=requeued, failed=failed, canceled=canceled)

    def mark_dispatched(self, task_id: str) -> bool:
        """Record that a message carrying this PENDING task's id has just left for the broker.
        False if the task is not PENDING any more (a worker was quicker than this write)."""
        with self._sessions.begin() as s:
            res = s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.status == TaskStatus.PENDING.value)
                .values(dispatched_at=self._now())
            )
            return _rowcount(res) == 1

    def stranded(
        self, *, unsent_after: timedelta, resend_after: timedelta, limit: int = 500
    ) -> list[Queued]:
        """PENDING tasks no message may point to, oldest first: never sent though created (or
        handed back) more than `unsent_after` ago (the producer failed or died between the
        INSERT and the send), or last sent more than `resend_after` ago (the broker may have
        lost the message). A handed-back task's `submit_time` is old, so it counts as unsent
        at once; its worker sends it within milliseconds, and a doubled message is harmless."""
        now = self._now()
        unsent = TaskRow.dispatched_at.is_(None) & (TaskRow.submit_time < now - unsent_after)
        stale = TaskRow.dispatched_at < now - resend_after
        with self._sessions() as s:
            rows = s.execute(
                select(TaskRow.id, TaskRow.model)
                .where(TaskRow.status == TaskStatus.PENDING.value, unsent | stale)
                .order_by(TaskRow.submit_time, TaskRow.id)
                .limit(limit)
            ).all()
        return [Queued(task_id=r[0], model=r[1]) for r in rows]

    def expired(self, *, limit: int = 500) -> list[tuple[str, str | None]]:
        """Finished tasks past their expiry or deleted by their owner: (task id, video key)
        pairs to purge."""
        with self._sessions() as s:
            rows = s.execute(
                select(TaskRow.id, TaskRow.video_key)
                .where(
                    (TaskRow.expires_at < self._now()) | TaskRow.deleted.is_(True),
                    TaskRow.status.in_([s.value for s in TaskStatus if s.is_terminal]),
                )
                .limit(limit)
            ).all()
            return [(r[0], r[1]) for r in rows]

    def delete(self, task_ids: Iterable[str]) -> int:
        ids = list(task_ids)
        if not ids:
            return 0
        with self._sessions.begin() as s:
            return _rowcount(s.execute(delete(TaskRow).where(TaskRow.id.in_(ids))))

    # -- metrics ------------------------------------------------------------------------------

    def counts(self) -> TaskCounts:
        """Tasks by model and status, each model's oldest PENDING task, and the webhooks
        still owed: one grouped query and one count, on one connection."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(
                    TaskRow.model,
                    TaskRow.status,
                    func.count(),
                    func.min(TaskRow.submit_time),
                ).group_by(TaskRow.model, TaskRow.status)
            ).all()
            outbox = count_pending(conn)
        tasks = {(model, TaskStatus(status)): int(n) for model, status, n, _ in rows}
        oldest = {
            model: first for model, status, _, first in rows if status == TaskStatus.PENDING.value
        }
        return TaskCounts(tasks=tasks, oldest_pending=oldest, outbox_pending=outbox)

    # -- helpers ------------------------------------------------------------------------------

    def _held(self, claim: Claim) -> list[Any]:
        return [
            TaskRow.id == claim.task.id,
            TaskRow.status == TaskStatus.RUNNING.value,
            TaskRow.attempts == claim.attempt,
        ]

    def _touch(self, claim: Claim, progress: Progress | None = None) -> Control:
        """Renew the claim's heartbeat (and write `progress`, if given)."""
        values: dict[str, Any] = {}
        if progress is not None:
            values = {
                "stage": progress.stage.value,
                "step": progress.step,
                "total_steps": progress.total_steps,
                "progress": progress.percent,
            }
        with self._sessions.begin() as s:
            res = s.execute(
                update(TaskRow)
                .where(*self._held(claim))
                .values(heartbeat_at=self._now(), **values)
                .returning(TaskRow.cancel_requested)
            )
            flag = res.scalar_one_or_none()
            return Control(owned=flag is not None, cancel_requested=bool(flag))

    def _finish(self, claim: Claim, status: TaskStatus, **values: Any) -> bool:
        check_transition(TaskStatus.RUNNING, status)
        with self._sessions.begin() as s:
            res = s.execute(
                update(TaskRow)
                .where(*self._held(claim))
                .values(status=status.value, end_time=self._now(), heartbeat_at=None, **values)
                .returning(*_ENDED)
            )
            delivered = values.get("duration") or claim.task.spec.duration
            return self._ended(s, res, status, video_seconds=delivered)

    def _transition(
        self, task_id: str, target: TaskStatus, *, only_from: set[TaskStatus], **values: Any
    ) -> bool:
        allowed = sources_of(target) & only_from
        with self._sessions.begin() as s:
            res = s.execute(
                update(TaskRow)
                .where(TaskRow.id == task_id, TaskRow.status.in_(_values(allowed)))
                .values(status=target.value, **values)
                .returning(*_ENDED)
            )
            if target.is_terminal:
                return self._ended(s, res, target)
            return res.first() is not None

    def _ended(self, s: Session, res: Any, status: TaskStatus, *, video_seconds: int = 0) -> bool:
        """Whether the UPDATE (returning `_ENDED`) ended a task; if so, meter it and owe its
        webhook in the same transaction, so usage, callbacks and status cannot disagree."""
        row = res.first()
        if row is None:
            return False
        now = self._now()
        meter(
            s,
            api_key_id=row.api_key_id,
            model=row.model,
            outcome=status,
            day=now.astimezone(UTC).date(),
            video_seconds=video_seconds,
        )
        if row.callback_url is not None:
            enqueue(s, task_id=row.id, api_key_id=row.api_key_id, url=row.callback_url, now=now)
        return True


def _ahead() -> Any:
    """Scalar subquery: PENDING tasks of the row's model that a worker claims before it
    (`claim_next` order: submit time, then id). Uses the (status, submit_time) index."""
    other = aliased(TaskRow)
    ahead = (
        select(func.count())
        .select_from(other)
        .where(
            other.status == TaskStatus.PENDING.value,
            other.model == TaskRow.model,
            (other.submit_time < TaskRow.submit_time)
            | ((other.submit_time == TaskRow.submit_time) & (other.id < TaskRow.id)),
        )
        .correlate(TaskRow)
        .scalar_subquery()
    )
    # Counted only for a PENDING row: polls of running and finished tasks pay nothing.
    return case((TaskRow.status == TaskStatus.PENDING.value, ahead), else_=None)


def _stage(value: str | None, status: TaskStatus) -> TaskStage:
    if value is not None:
        return TaskStage(value)
    # Rows written before stages were recorded.
    return TaskStage.QUEUED if status is TaskStatus.PENDING else TaskStage.DENOISING


# What an UPDATE that may end a task returns, for `_ended`.
_ENDED = (TaskRow.id, TaskRow.api_key_id, TaskRow.model, TaskRow.callback_url)


def _unfinished(api_key_id: str | None) -> Any:
    stmt = (
        select(func.count())
        .select_from(TaskRow)
        .where(TaskRow.status.in_([TaskStatus.PENDING.value, TaskStatus.RUNNING.value]))
    )
    return stmt if api_key_id is None else stmt.where(TaskRow.api_key_id == api_key_id)


def _serialise_submissions(s: Session) -> None:
    """Make this transaction the only submission in progress until it ends, in every process
    on the database, so its quota counts cannot be invalidated before its insert commits."""
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        # Released at commit or rollback; READ COMMITTED gives each later statement a fresh
        # snapshot, so the counts see every task committed by the previous holder.
        conn.execute(select(func.pg_advisory_xact_lock(_SUBMISSION_LOCK)))
    else:
        # pysqlite starts transactions lazily and only before writes, so the counts would run
        # outside any transaction. BEGIN IMMEDIATE takes the database's write lock now; other
        # submitters wait on busy_timeout, and the driver's commit ends it.
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _checked(current: TaskStatus, target: TaskStatus) -> str:
    check_transition(current, target)
    return target.value


def _values(statuses: Iterable[TaskStatus]) -> list[str]:
    return [s.value for s in statuses]


def _rowcount(result: Any) -> int:
    return int(result.rowcount)


_BY_ID = select(TaskRow.__table__, _ahead().label("ahead")).where(
    TaskRow.id == bindparam("task_id")
)


def _to_task(row: TaskRow | Row[*tuple[Any, ...]], *, ahead: int | None = None) -> Task:
    status = TaskStatus(row.status)
    progress = None
    if status is TaskStatus.RUNNING or row.step:
        progress = Progress(
            stage=_stage(row.stage, status),
            step=row.step,
            total_steps=row.total_steps,
            percent=row.progress,
        )
    result = None
    if status is TaskStatus.SUCCEEDED and row.video_key is not None:
        result = TaskResult(
            video_key=row.video_key,
            width=row.width or 0,
            height=row.height or 0,
            has_audio=row.has_audio,
            actual_prompt=row.actual_prompt,
            blocks_computed=row.blocks_computed,
            blocks_skipped=row.blocks_skipped,
            duration=row.duration,
        )
    error = None
    if status is TaskStatus.FAILED:
        error = TaskError(code=row.error_code or "InternalError", message=row.error_message or "")
    return Task(
        id=row.id,
        api_key_id=row.api_key_id,
        request_id=row.request_id,
        model=row.model,
        status=status,
        spec=GenerationSpec.from_json(row.spec),
        submit_time=row.submit_time,
        expires_at=row.expires_at,
        scheduled_time=row.scheduled_time,
        end_time=row.end_time,
        attempts=row.attempts,
        progress=progress,
        cancel_requested=row.cancel_requested,
        result=result,
        error=error,
        extension=_extension_from(row.extension),
        deleted=row.deleted,
        queue_position=ahead if status is TaskStatus.PENDING else None,
    )


# The extension column holds JSON: {"prompt": "..."} or {"plan": {"subject": "...",
# "shots": [...]}} (the layout of rows written before `PromptExtension` existed).


def _extension_json(extension: PromptExtension) -> str:
    data: dict[str, Any] = (
        {"prompt": extension.prompt}
        if extension.prompt is not None
        else {"plan": {"subject": extension.subject, "shots": list(extension.shots)}}
    )
    return json.dumps(data, ensure_ascii=False)


def _extension_from(text: str | None) -> PromptExtension | None:
    """The recorded extension, or None when there is none or it is unreadable (the worker
    then extends again: best effort, like extension itself)."""
    if not text:
        return None
    try:
        data = json.loads(text)
        if isinstance(data.get("prompt"), str):
            return PromptExtension(prompt=data["prompt"])
        plan = data["plan"]
        shots = tuple(str(shot) for shot in plan["shots"])
        return PromptExtension(subject=str(plan["subject"]), shots=shots)
    except (ValueError, TypeError, KeyError, AttributeError):
        return None
