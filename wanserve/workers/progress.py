"""Engine progress events -> the task's `Progress` row: a stage and one overall percentage
that never goes backwards, throttled so a fast GPU does not write a row per step.

    0 .. 2     loading: claimed (the claim writes the stage), inputs, prompt, model load
    2 .. 85    denoising, every pass of a chained or multi-shot video (step k of n)
    85 .. 95   decoding the final pass, one event per decoded VAE chunk
    95 .. 100  encoding: scaling, encoding and storing (100 is written when the task succeeds)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from wanserve.engine.request import EngineProgress, Stage
from wanserve.tasks.models import Claim, Progress, TaskStage
from wanserve.tasks.store import Control, ProgressSink

log = logging.getLogger(__name__)

BANDS: dict[Stage, tuple[int, int]] = {Stage.DENOISE: (2, 85), Stage.DECODE: (85, 95)}
STAGES: dict[Stage, TaskStage] = {
    Stage.DENOISE: TaskStage.DENOISING,
    Stage.DECODE: TaskStage.DECODING,
}
ENCODING_PERCENT = 95
MIN_INTERVAL = 0.5  # seconds between progress writes within a stage


class ProgressReporter:
    """Turns engine events into `Progress` rows, throttled, and passes what the store says
    back to `on_control` (cancel requests, a lost claim). The first event of each stage and
    the last of each stage are always written; `clock` is injectable for tests."""

    def __init__(
        self,
        claim: Claim,
        store: ProgressSink,
        *,
        on_control: Callable[[Control], None],
        on_step: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._claim = claim
        self._store = store
        self._on_control = on_control
        self._clock = clock
        self._denoise_step = 0
        self._denoise_total = claim.task.spec.steps
        self._percent = 0
        self._last_write = 0.0
        self._last_stage: Stage | None = None
        self._on_step = on_step
        self._step_at: tuple[int, float] | None = None  # (step, clock) of the last one seen

    def __call__(self, event: EngineProgress) -> None:
        lo, hi = BANDS[event.stage]
        now = self._clock()
        if event.stage is Stage.DENOISE:
            # Steps count across every pass of a chained or multi-shot video.
            self._denoise_step, self._denoise_total = event.step, event.total
            self._time_step(event.step, now)
        # Never backwards, whatever order the stages report in.
        percent = max(self._percent, lo + (hi - lo) * event.step // max(1, event.total))
        self._percent = percent
        final = event.step == event.total
        if event.stage == self._last_stage and not final and now - self._last_write < MIN_INTERVAL:
            return
        self._last_stage, self._last_write = event.stage, now
        self._write(STAGES[event.stage], percent)

    def encoding(self) -> None:
        """The frames are made: scaling, encoding and storing start (always written)."""
        self._percent = max(self._percent, ENCODING_PERCENT)
        self._write(TaskStage.ENCODING, self._percent)

    def _write(self, stage: TaskStage, percent: int) -> None:
        progress = Progress(
            stage=stage,
            step=self._denoise_step,
            total_steps=self._denoise_total,
            percent=percent,
        )
        try:
            self._on_control(self._store.report_progress(self._claim, progress))
        except Exception:
            log.warning("progress write for task %s failed", self._claim.task.id, exc_info=True)

    def _time_step(self, step: int, now: float) -> None:
        """Report the time since the previous denoising step. The first step of a run has no
        start to measure from (it includes loading and encoding the prompt), so it is only
        remembered."""
        previous = self._step_at
        self._step_at = (step, now)
        if self._on_step is not None and previous is not None and step == previous[0] + 1:
            self._on_step(now - previous[1])
