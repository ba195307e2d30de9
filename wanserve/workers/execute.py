"""The one job body: run a claimed task to its end, whatever dispatches it.

    claim (done by the caller) -> resolve inputs -> engine -> MP4 -> storage -> SUCCEEDED

Every exit ends the row: SUCCEEDED, FAILED with a DashScope code and an actionable message,
CANCELED when the client asked, or back to PENDING when this worker is shutting down. A
heartbeat thread keeps the claim alive during long steps (VAE decode, encoding) and carries
cancellation requests back from the store.
"""

from __future__ import annotations

import logging
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

from wanserve.engine.errors import Canceled, EngineError
from wanserve.engine.prompt import PromptExtender, PromptJob, ShotPlan
from wanserve.engine.request import AudioDrivenVideo, AudioGenerator, Runner
from wanserve.errors import WanserveError
from wanserve.media.audio import AudioClip, fit_audio
from wanserve.media.video import EncodeSettings, Frames, Mp4Writer, Timeline
from wanserve.media.watermark import Watermark
from wanserve.spec import GenerationSpec
from wanserve.storage.base import FreeSpaceFloor, Storage, StorageError, os_errors
from wanserve.tasks.models import (
    Claim,
    PromptExtension,
    TaskError,
    TaskResult,
    TaskStatus,
)
from wanserve.tasks.store import Control, TaskReporter
from wanserve.workers.compose import native_frames, render, shot_count
from wanserve.workers.inputs import ResolvedInputs
from wanserve.workers.progress import ProgressReporter
from wanserve.workers.translation import request_for, task_error

log = logging.getLogger(__name__)


class InputResolver(Protocol):
    def resolve(self, spec: GenerationSpec, *, owner: str) -> ResolvedInputs:
        """Fetch and decode the spec's inputs; size image-driven specs."""


class RunObserver(Protocol):
    """Told how long runs and their denoising steps take (the process's metrics)."""

    def run_ended(self, *, model: str, status: str, seconds: float) -> None: ...

    def step_finished(self, *, model: str, seconds: float) -> None: ...


@dataclass(frozen=True)
class Execution:
    """What the job body needs, built once per worker process."""

    store: TaskReporter
    runner: Runner
    storage: Storage
    inputs: InputResolver
    scratch_dir: Path
    heartbeat_seconds: float
    # A run past this is stopped at its next step and ends FAILED; one stuck where no step
    # comes (a hung kernel) stops heartbeating a little later, so the reaper takes it back.
    timeout_seconds: float = 7200.0
    heartbeat_timeout_seconds: float = 60.0
    encode: EncodeSettings = field(default_factory=EncodeSettings)
    extender: PromptExtender | None = None
    chain_shots: bool = False  # multi-shot: start each shot from the last frame of the one before
    dubber: AudioGenerator | None = None
    audio_driven: AudioDrivenVideo | None = None
    # Checked before any work: a full disk fails the task in a second, not after generating.
    free_space: FreeSpaceFloor | None = None
    observer: RunObserver | None = None


class _Signals:
    """Thread-shared view of the task's control state."""

    def __init__(self, stopping: Callable[[], bool], *, timeout: float) -> None:
        self.cancel_requested = False
        self.lost = False
        self._stopping = stopping
        self.deadline = time.monotonic() + timeout

    def update(self, control: Control) -> None:
        self.cancel_requested = self.cancel_requested or control.cancel_requested
        self.lost = self.lost or not control.owned

    @property
    def timed_out(self) -> bool:
        return time.monotonic() > self.deadline

    def should_stop(self) -> bool:
        return self.cancel_requested or self.lost or self.timed_out or self._stopping()


def execute(
    claim: Claim, ex: Execution, *, stopping: Callable[[], bool] = lambda: False
) -> TaskStatus | None:
    """Run `claim` to an end state; return the state written (None if the claim was lost)."""
    task = claim.task
    signals = _Signals(stopping, timeout=ex.timeout_seconds)
    beat_stop = threading.Event()
    beat = threading.Thread(
        target=_heartbeat,
        args=(claim, ex, signals, beat_stop),
        daemon=True,
        name=f"heartbeat-{task.id[:8]}",
    )
    beat.start()
    started = time.monotonic()
    status: TaskStatus | None = None
    try:
        status = _run(claim, ex, signals)
        return status
    finally:
        beat_stop.set()
        beat.join()
        if ex.observer is not None:
            # "lost": another holder owns the task now; its own run reports the outcome.
            label = status.value if status is not None else "lost"
            ex.observer.run_ended(
                model=task.model, status=label, seconds=time.monotonic() - started
            )


def _run(claim: Claim, ex: Execution, signals: _Signals) -> TaskStatus | None:
    task = claim.task
    started = time.monotonic()
    observer = ex.observer
    reporter = ProgressReporter(
        claim,
        ex.store,
        on_control=signals.update,
        on_step=(lambda s: observer.step_finished(model=task.model, seconds=s))
        if observer is not None
        else None,
    )
    try:
        if ex.free_space is not None:
            ex.free_space.check()
        inputs = ex.inputs.resolve(task.spec, owner=task.api_key_id)
        spec, shots = _extend_prompt(claim, inputs, ex)
        # Before the video: the MP4's tracks are all declared before its first frame, and the
        # frames are encoded as they are decoded.
        audio = _soundtrack(spec, inputs, ex, signals)
        key = f"videos/{task.id}.mp4"
        width, height = spec.size.width, spec.size.height
        timeline = partial(
            Timeline,
            width=width,
            height=height,
            fps=spec.fps,
            duration=spec.duration,
            decorate=Watermark(width, height) if spec.watermark else None,
        )
        with _scratch_dir(ex) as tmp:
            path = tmp / "video.mp4"
            # A full or read-only scratch directory is a storage failure like a full store;
            # only the encoder's own I/O is mapped so (the engine's errors stay its own).
            with _encoder_io(ex):
                writer = Mp4Writer(
                    path, width=width, height=height, fps=spec.fps, settings=ex.encode, audio=audio
                )
            try:
                if inputs.audio is not None and ex.audio_driven is not None:
                    clip = ex.audio_driven.run(
                        request_for(spec, conditioning=inputs.conditioning),
                        audio=inputs.audio,
                        on_progress=reporter,
                        should_cancel=signals.should_stop,
                    )
                    frames = timeline(len(clip.frames), source_fps=clip.fps)
                    _encode(writer, frames, clip.frames, ex)
                else:
                    names = shots.prompts() if shots else None
                    count = native_frames(spec, names, chain_shots=ex.chain_shots)
                    frames = timeline(count, source_fps=spec.native_fps)
                    clip = render(
                        spec,
                        runner=ex.runner,
                        conditioning=inputs.conditioning,
                        shots=names,
                        on_progress=reporter,
                        should_cancel=signals.should_stop,
                        chain_shots=ex.chain_shots,
                        # Frames are encoded as the VAE decodes them (see workers/compose.py).
                        on_frames=lambda chunk: _encode(writer, frames, chunk, ex),
                    )
                if signals.should_stop():
                    raise Canceled()
                if clip.blocks is not None:
                    # Clients see it in output.transformer_blocks; operators in the log.
                    log.info(
                        "task %s: transformer blocks computed %d, skipped by the cache %d",
                        task.id,
                        clip.blocks.computed,
                        clip.blocks.skipped,
                    )
                if not frames.done:  # the exact-length contract: never a short video
                    raise RuntimeError(f"the engine delivered too few frames for task {task.id}")
                # Frames were encoded while decoding; what is left is flushing the encoder,
                # muxing and storing.
                reporter.encoding()
                with _encoder_io(ex):
                    writer.finish()
            except BaseException:
                writer.abandon()
                raise
            ex.storage.put(key, path)
        result = TaskResult(
            video_key=key,
            width=width,
            height=height,
            has_audio=audio is not None,
            # The prompt the video was made from: extended, planned into shots, or (with no
            # extender) the one sent.
            actual_prompt=(shots.describe() if shots else spec.prompt)
            if spec.prompt_extend
            else None,
            blocks_computed=clip.blocks.computed if clip.blocks is not None else None,
            blocks_skipped=clip.blocks.skipped if clip.blocks is not None else None,
            duration=spec.duration if spec.duration != task.spec.duration else None,
        )
        if signals.should_stop():  # asked to cancel (or stop) while encoding: honour it
            ex.storage.delete(key)
            raise Canceled()
        if ex.store.succeed(claim, result):
            log.info("task %s succeeded in %.1fs", task.id, time.monotonic() - started)
            return TaskStatus.SUCCEEDED
        ex.storage.delete(key)  # the claim was lost meanwhile; the new holder writes its own
        return None
    except Canceled:
        return _stopped(claim, ex, signals)
    except EngineError as exc:
        return _failed(claim, ex, task_error(exc, spec=task.spec))
    except StorageError as exc:  # the server's fault: the operator needs the detail
        log.error("task %s failed: %s: %s", task.id, exc.code, exc.detail)
        return _end(ex.store.fail(claim, TaskError(exc.code, exc.message)), TaskStatus.FAILED)
    except WanserveError as exc:
        return _failed(claim, ex, exc)
    except Exception:
        log.exception("task %s failed with an unexpected error", task.id)
        error = TaskError(
            "InternalError",
            "An internal error occurred while generating the video. It has been logged with "
            f"task id {task.id}; please try again later.",
        )
        return _end(ex.store.fail(claim, error), TaskStatus.FAILED)


def _extend_prompt(
    claim: Claim, inputs: ResolvedInputs, ex: Execution
) -> tuple[GenerationSpec, ShotPlan | None]:
    """The spec to generate with (its prompt extended if asked), and the shot plan of a
    multi-shot video. Extension is best effort: failures keep the prompt as sent. What the
    first attempt decided is recorded on the task, so a retry makes the same video."""
    spec = inputs.spec
    if not spec.prompt_extend or ex.extender is None:
        return spec, None
    recorded = claim.task.extension
    if recorded is None:
        recorded = _extension(spec, inputs, ex.extender)
        ex.store.record_extension(claim, recorded)
    if recorded.prompt is None:
        return spec, ShotPlan(subject=recorded.subject, shots=recorded.shots)
    return spec.with_prompt(recorded.prompt), None


def _extension(
    spec: GenerationSpec, inputs: ResolvedInputs, extender: PromptExtender
) -> PromptExtension:
    job = PromptJob(
        prompt=spec.prompt, kind=spec.kind, image=inputs.conditioning.image, seed=spec.seed
    )
    if spec.shot_type == "multi":
        plan = extender.plan_shots(job, shot_count(spec.duration))
        if plan is not None:
            return PromptExtension(subject=plan.subject, shots=plan.shots)
    return PromptExtension(prompt=extender.extend(job))


def _soundtrack(
    spec: GenerationSpec, inputs: ResolvedInputs, ex: Execution, signals: _Signals
) -> AudioClip | None:
    """The track to mux: the one sent, a generated one, or none."""
    if inputs.audio is not None:
        return fit_audio(inputs.audio, spec.duration)
    if not spec.audio or ex.dubber is None:
        return None
    try:
        track = ex.dubber.generate(
            spec.prompt, seconds=spec.duration, seed=spec.seed, should_cancel=signals.should_stop
        )
    except Canceled:
        raise
    except Exception:
        # The video is still good: deliver it silent, and `usage.audio` says so.
        log.warning("dubbing failed; delivering a silent video", exc_info=True)
        return None
    return fit_audio(track, spec.duration)


def _stopped(claim: Claim, ex: Execution, signals: _Signals) -> TaskStatus | None:
    if signals.lost:
        return None
    if signals.cancel_requested:
        log.info("task %s canceled while running", claim.task.id)
        return _end(ex.store.cancel_running(claim), TaskStatus.CANCELED)
    if signals.timed_out:
        log.warning("task %s stopped after %.0f s", claim.task.id, ex.timeout_seconds)
        error = TaskError(
            "RequestTimeOut",
            f"Generating this video took longer than the server's limit of "
            f"{ex.timeout_seconds:.0f} s, so it was stopped. Try a shorter or smaller video.",
        )
        return _end(ex.store.fail(claim, error), TaskStatus.FAILED)
    # Shutting down: the task is not the client's fault; it runs again after restart.
    log.info("task %s handed back to the queue (worker stopping)", claim.task.id)
    return ex.store.release(claim)


def _failed(claim: Claim, ex: Execution, exc: WanserveError) -> TaskStatus | None:
    log.info("task %s failed: %s: %s", claim.task.id, exc.code, exc.message)
    return _end(ex.store.fail(claim, TaskError(exc.code, exc.message)), TaskStatus.FAILED)


def _end(written: bool, status: TaskStatus) -> TaskStatus | None:
    return status if written else None


def _encode(writer: Mp4Writer, timeline: Timeline, chunk: Frames, ex: Execution) -> None:
    """Encode the output frames a chunk of native frames completes."""
    with _encoder_io(ex):
        writer.write(timeline.feed(chunk))


def _encoder_io(ex: Execution) -> AbstractContextManager[None]:
    return os_errors(f"encoding in {ex.scratch_dir}")


@contextmanager
def _scratch_dir(ex: Execution) -> Iterator[Path]:
    """A scratch directory for one video; OS errors making or removing it are storage
    failures."""
    with _encoder_io(ex):
        tmp = tempfile.TemporaryDirectory(dir=_scratch(ex))
    try:
        yield Path(tmp.name)
    finally:
        with _encoder_io(ex):
            tmp.cleanup()


def _scratch(ex: Execution) -> Path:
    ex.scratch_dir.mkdir(parents=True, exist_ok=True)
    return ex.scratch_dir


def _heartbeat(claim: Claim, ex: Execution, signals: _Signals, stop: threading.Event) -> None:
    # Past the deadline plus the reaper's patience the run is stuck somewhere no step check
    # reaches: stop vouching for it, so the reaper hands the task on (its writes are fenced).
    give_up = signals.deadline + ex.heartbeat_timeout_seconds
    while not stop.wait(ex.heartbeat_seconds) and time.monotonic() < give_up:
        try:
            signals.update(ex.store.heartbeat(claim))
        except Exception:  # a transient database error must not kill the heartbeat
            log.warning("heartbeat for task %s failed", claim.task.id, exc_info=True)
