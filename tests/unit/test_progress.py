"""Engine events become the task's progress: an overall percentage that moves through the VAE
decode as well as through denoising, never backwards; throttled by an injected clock."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from wanserve.catalog import Catalog
from wanserve.engine.request import EngineProgress, Stage
from wanserve.spec import SynthesisRequest, build_spec
from wanserve.tasks.models import Claim, Progress, Task, TaskStage, TaskStatus
from wanserve.tasks.store import Control
from wanserve.workers.progress import BANDS, ENCODING_PERCENT, ProgressReporter

SPEC = build_spec(
    SynthesisRequest(model="wan2.1-t2v-turbo", prompt="a cat", seed=1),
    Catalog.build(steps=4).get("wan2.1-t2v-turbo"),
)
NOW = datetime(2026, 1, 1, tzinfo=UTC)
CLAIM = Claim(
    task=Task(
        id="t",
        api_key_id="k",
        request_id="r",
        model=SPEC.model,
        status=TaskStatus.RUNNING,
        spec=SPEC,
        submit_time=NOW,
        expires_at=NOW,
    ),
    attempt=1,
    worker_id="w",
)


@dataclass
class RecordingStore:
    """A `ProgressSink`: the one method the reporter calls."""

    written: list[Progress] = field(default_factory=list)
    cancel: bool = False

    def report_progress(self, claim: Claim, progress: Progress) -> Control:
        self.written.append(progress)
        return Control(owned=True, cancel_requested=self.cancel)


class Ticks:
    """A clock that moves `step` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def run(events: list[EngineProgress], *, tick: float) -> tuple[RecordingStore, list[Control]]:
    store = RecordingStore()
    controls: list[Control] = []
    report = ProgressReporter(CLAIM, store, on_control=controls.append, clock=Ticks(tick))
    for event in events:
        report(event)
    return store, controls


DENOISE = [EngineProgress(Stage.DENOISE, k, 4) for k in range(1, 5)]
DECODE = [EngineProgress(Stage.DECODE, k, 6) for k in range(1, 7)]


def test_the_bar_keeps_moving_while_decoding() -> None:
    store, _ = run(DENOISE + DECODE, tick=1.0)  # slow chunks: every event is written
    percents = [p.percent for p in store.written]
    assert percents == sorted(percents) and len(set(percents)) == len(percents)
    decoding = percents[len(DENOISE) :]
    assert len(decoding) == len(DECODE) and decoding[-1] == BANDS[Stage.DECODE][1]
    assert all(BANDS[Stage.DECODE][0] < p for p in decoding)
    # The step count shown to clients stays the denoising one.
    assert {(p.step, p.total_steps) for p in store.written[len(DENOISE) :]} == {(4, 4)}


def test_fast_events_are_throttled_but_each_stage_ends_written() -> None:
    store, _ = run(DENOISE + DECODE, tick=0.01)
    assert [p.percent for p in store.written] == [22, 85, 86, 95]  # first and last of each


def test_progress_never_goes_backwards() -> None:
    late = [EngineProgress(Stage.DECODE, 3, 3), EngineProgress(Stage.DENOISE, 1, 4)]
    store, _ = run(late, tick=1.0)
    assert [p.percent for p in store.written] == [95, 95]


def test_the_store_answer_is_passed_on() -> None:
    store = RecordingStore(cancel=True)
    controls: list[Control] = []
    ProgressReporter(CLAIM, store, on_control=controls.append)(DENOISE[0])
    assert controls == [Control(owned=True, cancel_requested=True)]


def test_each_write_names_its_stage_and_encoding_follows_decoding() -> None:
    store = RecordingStore()
    report = ProgressReporter(CLAIM, store, on_control=lambda _: None, clock=Ticks(0.01))
    for event in DENOISE + DECODE:
        report(event)
    report.encoding()
    stages = [p.stage for p in store.written]
    assert stages == [
        TaskStage.DENOISING,
        TaskStage.DENOISING,
        TaskStage.DECODING,
        TaskStage.DECODING,
        TaskStage.ENCODING,
    ]
    assert store.written[-1].percent == ENCODING_PERCENT
    assert (store.written[-1].step, store.written[-1].total_steps) == (4, 4)


def test_step_durations_are_the_gaps_between_consecutive_denoising_steps() -> None:
    steps: list[float] = []
    clock = Ticks(0.5)
    report = ProgressReporter(
        CLAIM,
        RecordingStore(),
        on_control=lambda _: None,
        on_step=steps.append,
        clock=clock,
    )
    for event in [*DENOISE, *DECODE]:
        report(event)
    # Four steps, three gaps: the first step's start (load, prompt encoding) is not known,
    # and decoding is not a step.
    assert steps == [0.5, 0.5, 0.5]
