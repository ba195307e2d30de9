"""Domain records of a task. No SQL and no DashScope field names here."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from wanserve.spec import GenerationSpec


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"

    @property
    def is_terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED)


class TaskStage(StrEnum):
    """What a task is doing, in the order a run goes through them."""

    QUEUED = "queued"  # PENDING: waiting for a worker
    LOADING = "loading"  # claimed: inputs, prompt extension, model load, up to the first step
    DENOISING = "denoising"
    DECODING = "decoding"  # the VAE turning latents into frames
    ENCODING = "encoding"  # scaling, watermarking, H.264, storing

    @property
    def rank(self) -> int:
        return _STAGE_ORDER.index(self)


_STAGE_ORDER = tuple(TaskStage)


@dataclass(frozen=True)
class Progress:
    """Where a task is: its stage, denoising step k of n, and an overall percentage."""

    stage: TaskStage
    step: int
    total_steps: int
    percent: int


@dataclass(frozen=True)
class PromptExtension:
    """What prompt extension decided at a task's first attempt, kept so a retry makes the
    same video: the prompt to generate with, or (multi-shot) a subject and one description
    per shot. Exactly one of `prompt` and `shots` is set."""

    prompt: str | None = None
    subject: str = ""
    shots: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.prompt is None) == (not self.shots):
            raise ValueError("a prompt extension is either a prompt or a shot plan")


@dataclass(frozen=True)
class TaskResult:
    video_key: str
    width: int
    height: int
    has_audio: bool
    actual_prompt: str | None
    # Transformer block evaluations computed and skipped by a block cache, across every pass;
    # None when the engine did not count them (a fake runner).
    blocks_computed: int | None = None
    blocks_skipped: int | None = None
    # Seconds of video delivered, where the worker decided it (a source video's length);
    # None: the spec's duration.
    duration: int | None = None


@dataclass(frozen=True)
class TaskError:
    code: str
    message: str


@dataclass(frozen=True)
class TaskOutcome:
    """How a task ended, as a client of the HTTP API learns it (`status` None: UNKNOWN)."""

    task_id: str
    status: TaskStatus | None
    video_url: str | None
    error: TaskError | None


@dataclass(frozen=True)
class Task:
    id: str
    api_key_id: str
    request_id: str
    model: str
    status: TaskStatus
    spec: GenerationSpec
    submit_time: datetime
    expires_at: datetime
    scheduled_time: datetime | None = None
    end_time: datetime | None = None
    attempts: int = 0
    progress: Progress | None = None
    cancel_requested: bool = False
    result: TaskResult | None = None
    error: TaskError | None = None
    extension: PromptExtension | None = None  # recorded by the worker at its first attempt
    deleted: bool = False  # deleted by its owner: hidden from every caller, purged when ended
    # PENDING tasks of the same model ahead of this one (claim order); None unless PENDING.
    queue_position: int | None = None

    @property
    def seconds(self) -> int:
        """The video's length: as delivered, where the worker decided it, else as asked."""
        if self.result is not None and self.result.duration is not None:
            return self.result.duration
        return self.spec.duration


@dataclass(frozen=True)
class TaskState:
    """What a watcher of a task sees, read cheaply (no spec, no result): the live events
    stream polls this."""

    task_id: str
    api_key_id: str
    status: TaskStatus
    attempts: int
    progress: Progress
    queue_position: int | None  # None unless PENDING
    expires_at: datetime


@dataclass(frozen=True)
class Claim:
    """A worker's hold on a RUNNING task; `attempt` fences out a stale holder."""

    task: Task
    attempt: int
    worker_id: str


@dataclass(frozen=True)
class TaskQuery:
    api_key_id: str
    page_no: int = 1
    page_size: int = 10
    start: datetime | None = None
    end: datetime | None = None
    model: str | None = None
    status: TaskStatus | None = None


@dataclass(frozen=True)
class TaskPage:
    total: int
    tasks: list[Task]


@dataclass(frozen=True)
class CursorQuery:
    """One page of a key's tasks in submission order, after a cursor (the last task of the
    previous page): keyset pagination, stable while tasks are added."""

    api_key_id: str
    limit: int
    after: str | None = None  # a task id of this key
    newest_first: bool = True


@dataclass(frozen=True)
class CursorPage:
    tasks: list[Task]
    has_more: bool
