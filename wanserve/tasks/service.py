"""What the API asks of the task layer: submit, look up, cancel and list tasks for a key."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from typing import overload

from wanserve.catalog import Catalog
from wanserve.clock import Clock, utcnow
from wanserve.errors import InvalidParameter, InvalidURL, NotFound, Throttled, UnsupportedOperation
from wanserve.request import MediaKind, Medium, SynthesisRequest
from wanserve.spec import Features, GenerationSpec, MediaRef, build_spec, resolve_card
from wanserve.storage.base import Storage
from wanserve.tasks.dispatch import Dispatcher, DispatchError
from wanserve.tasks.models import (
    CursorPage,
    CursorQuery,
    Task,
    TaskPage,
    TaskQuery,
    TaskState,
    TaskStatus,
)
from wanserve.tasks.store import Quota, QuotaExceeded, TaskDesk
from wanserve.tasks.webhooks import Destinations, check_callback
from wanserve.uploads import UploadService

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    max_unfinished_per_key: int
    max_queue: int
    max_image_bytes: int
    max_audio_bytes: int
    max_video_bytes: int = 100 * 1024 * 1024


def _throttled(scope: str, limit: int) -> Throttled:
    if scope == "key":
        return Throttled(
            f"This API key already has {limit} unfinished tasks; wait for some to finish "
            "before submitting more.",
            code="Throttling.RateQuota",
        )
    return Throttled("The server's task queue is full; please try again later.")


class TaskService:
    def __init__(
        self,
        *,
        store: TaskDesk,
        dispatcher: Dispatcher,
        catalog: Catalog,
        features: Features,
        limits: Limits,
        cancel_running: bool,
        destinations: Destinations,
        uploads: UploadService | None = None,
        storage: Storage | None = None,
        clock: Clock = utcnow,
    ) -> None:
        self._destinations = destinations
        self._uploads = uploads
        self._storage = storage
        self._store = store
        self._dispatcher = dispatcher
        self.catalog = catalog
        self._features = features
        self._limits = limits
        self._cancel_running = cancel_running
        self._now = clock

    def submit(self, request: SynthesisRequest, *, api_key_id: str, request_id: str) -> Task:
        """Validate, persist as PENDING, and hand to a worker. Raises domain errors."""
        card = resolve_card(request, self.catalog)
        spec = build_spec(request, card, features=self._features)
        # Kept on the task row, not in the spec: it is about delivery, not generation, and
        # only the store (which owes the webhook when the task ends) reads it.
        callback_url = check_callback(request.callback_url, destinations=self._destinations)
        # A cheap early refusal, before inline inputs are stored as uploads; the store's
        # atomic check below is the one that holds under concurrency.
        if self._store.count_unfinished(api_key_id) >= self._limits.max_unfinished_per_key:
            raise _throttled("key", self._limits.max_unfinished_per_key)
        if self._store.count_unfinished() >= self._limits.max_queue:
            raise _throttled("server", self._limits.max_queue)
        spec = self._take_inputs(spec, api_key_id)
        quota = Quota(per_key=self._limits.max_unfinished_per_key, total=self._limits.max_queue)
        try:
            task = self._store.create(
                task_id=str(uuid.uuid4()),
                api_key_id=api_key_id,
                request_id=request_id,
                spec=spec,
                quota=quota,
                callback_url=callback_url,
            )
        except QuotaExceeded as exc:
            raise _throttled(exc.scope, exc.limit) from None
        try:
            self._dispatcher.submit(task.id, model=task.model)
        except DispatchError as exc:
            # The task is committed and the client gets its id: answering 500 now would make
            # it resubmit a task that runs anyway. The janitor sends what was never sent.
            log.warning(
                "task %s: accepted, not yet sent (%s); the janitor will send it", task.id, exc
            )
        return task

    def _take_inputs(self, spec: GenerationSpec, api_key_id: str) -> GenerationSpec:
        """Check uploaded references belong to the caller, and move inline (base64) inputs
        out of the request into the upload store, so task rows stay small."""
        images, audio = self._limits.max_image_bytes, self._limits.max_audio_bytes
        by_medium = {
            Medium.IMAGE: images,
            Medium.AUDIO: audio,
            Medium.VIDEO: self._limits.max_video_bytes,
        }
        inputs = tuple(
            self._take(ref, api_key_id, by_medium[MediaKind(ref.kind).medium])
            for ref in spec.inputs
        )
        return spec.with_inputs(
            image=self._take(spec.image, api_key_id, images),
            last_image=self._take(spec.last_image, api_key_id, images),
            audio_ref=self._take(spec.audio_ref, api_key_id, audio),
            inputs=tuple(ref for ref in inputs if ref is not None),
        )

    @overload
    def _take(self, ref: MediaRef, api_key_id: str, max_bytes: int) -> MediaRef: ...
    @overload
    def _take(self, ref: None, api_key_id: str, max_bytes: int) -> None: ...
    def _take(self, ref: MediaRef | None, api_key_id: str, max_bytes: int) -> MediaRef | None:
        if ref is None or (ref.inline is None and ref.scheme.is_web):
            return ref
        if self._uploads is None:
            raise InvalidURL(f"{ref.field}: this server takes only http(s) input URLs.")
        if ref.inline is None:  # an oss:// upload (a door reads no other reference)
            self._uploads.check(ref.url, api_key_id=api_key_id, field=ref.field)
            return ref
        if len(ref.inline.data) > max_bytes:
            raise InvalidParameter(f"{ref.field} is larger than {max_bytes // (1024 * 1024)} MB.")
        url = self._uploads.keep_inline(
            ref.inline.data,
            api_key_id=api_key_id,
            content_type=ref.inline.media_type,
            field=ref.field,
        )
        return MediaRef(field=ref.field, url=url, kind=ref.kind)

    def get(self, task_id: str, *, api_key_id: str) -> Task | None:
        """The caller's task, or None when it never existed, expired, or is another key's."""
        task = self._store.get(task_id)
        if task is None or task.api_key_id != api_key_id or task.deleted or self._expired(task):
            return None
        return task

    def watch(self, task_id: str, api_key_id: str) -> TaskState | None:
        """The caller's task's live state (cheap: for event streams), or None like `get`."""
        state = self._store.watch(task_id)
        if state is None or state.api_key_id != api_key_id:
            return None
        if state.status.is_terminal and state.expires_at < self._now():
            return None
        return state

    def cancel(self, task_id: str, *, api_key_id: str) -> Task:
        """Cancel a PENDING task now, or (unless strict) ask a RUNNING one to stop."""
        task = self.get(task_id, api_key_id=api_key_id)
        if task is None:
            raise UnsupportedOperation(f"Task {task_id} does not exist or has expired.")
        if task.status is TaskStatus.PENDING and self._store.cancel_pending(task_id):
            return self._reload(task)
        task = self._reload(task)
        if task.status is TaskStatus.RUNNING and self._cancel_running:
            if self._store.request_cancel(task_id):
                return self._reload(task)
            task = self._reload(task)
        if task.status is TaskStatus.RUNNING:
            raise UnsupportedOperation(
                f"Task {task_id} is RUNNING; only PENDING tasks can be canceled on this server."
            )
        raise UnsupportedOperation(
            f"Task {task_id} has already ended ({task.status.value}) and cannot be canceled."
        )

    def list(self, query: TaskQuery) -> TaskPage:
        return self._store.query(query)

    def page(self, query: CursorQuery) -> CursorPage:
        """A page of the caller's tasks after a cursor task (keyset pagination)."""
        try:
            return self._store.page(query)
        except LookupError:
            raise InvalidParameter(
                f"after {query.after!r} is not a task of this API key (it may have been "
                "deleted or have expired).",
                field="after",
            ) from None

    def delete(self, task_id: str, *, api_key_id: str) -> Task:
        """Delete the caller's task: hidden at once from every door, stopped if unfinished
        (a RUNNING one at its next step, unless `cancel_running` is off: then it runs to its
        end), and purged with its video as soon as it has ended."""
        task = self.get(task_id, api_key_id=api_key_id)
        if task is None or not self._store.mark_deleted(task_id):
            raise NotFound(f"Task {task_id} does not exist, has expired or was deleted.")
        # A PENDING task may be claimed between the two calls; the flag then stops the run.
        if not self._store.cancel_pending(task_id) and self._cancel_running:
            self._store.request_cancel(task_id)
        ended = self._reload(task)
        if ended.status.is_terminal:
            self._purge(ended)
        return ended

    def _purge(self, task: Task) -> None:
        # Now rather than at the janitor's next sweep: a signed URL handed out earlier stops
        # working the moment the owner deletes the video. The janitor purges the rest
        # (tasks that were still running, or a storage failure here).
        if self._storage is None:
            return
        if task.result is not None:
            self._storage.delete(task.result.video_key)
        self._store.delete([task.id])

    def _reload(self, task: Task) -> Task:
        fresh = self._store.get(task.id)
        return fresh if fresh is not None else task

    def _expired(self, task: Task) -> bool:
        return task.status.is_terminal and task.expires_at < self._now()
