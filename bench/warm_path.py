"""The warm path: from a task becoming visible to the worker to its first denoising step.

The model is already resident (loaded and warmed by one task first). For each of N tasks the
script persists a PENDING row, then times, from the start of the claim (the conditional
PENDING -> RUNNING update), the real job body `workers.execute.execute` on the dummy engine
at a tiny size:

* `to first forward`: until the transformer's first forward call begins (a forward pre-hook):
  everything the server does before the GPU starts denoising (claim, input resolution,
  prompt embeddings, adapters, scheduler, latents);
* `to first step event`: until the first `on_progress` DENOISE event, i.e. one tiny
  denoising step later (what a client sees as progress).

    python bench/warm_path.py [--tasks 20] [--lora]

Target: `to first forward` under 50 ms (median and p95). Each task has its own prompt (as in
service: its UMT5 embeddings are computed once, the default negative prompt's are cached).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from wanserve.catalog import Size
from wanserve.compose.shared import build_shared
from wanserve.compose.worker import build_engine_config, build_execution, preload
from wanserve.config import Settings
from wanserve.engine import dummy
from wanserve.engine.adapters import AdapterDirectory
from wanserve.engine.request import (
    CancelFn,
    Clip,
    EngineProgress,
    GenerationRequest,
    ProgressFn,
    Stage,
)
from wanserve.engine.runner import PipelineRunner, build_runner
from wanserve.request import Extensions, SynthesisRequest
from wanserve.spec import Features, build_spec
from wanserve.tasks.models import TaskStatus
from wanserve.workers.execute import execute

MODEL = "wan2.1-t2v-turbo"


class Stamps:
    """When the current task's first transformer forward began and first step ended."""

    def __init__(self) -> None:
        self.forward: float | None = None
        self.step: float | None = None

    def reset(self) -> None:
        self.forward = self.step = None


class TimedRunner:
    """The real runner, stamping the first DENOISE event of each run."""

    def __init__(self, inner: PipelineRunner, stamps: Stamps) -> None:
        self._inner = inner
        self._stamps = stamps

    def run(
        self, request: GenerationRequest, *, on_progress: ProgressFn, should_cancel: CancelFn
    ) -> Clip:
        def stamped(event: EngineProgress) -> None:
            if event.stage is Stage.DENOISE and self._stamps.step is None:
                self._stamps.step = time.perf_counter()
            on_progress(event)

        return self._inner.run(request, on_progress=stamped, should_cancel=should_cancel)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tasks", type=int, default=20)
    parser.add_argument("--lora", action="store_true", help="each task names a dummy adapter")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as data_dir:
        settings = Settings(
            data_dir=Path(data_dir),
            weights="dummy",
            steps=2,
            models={MODEL: {"max_area": 80 * 48}},
            heartbeat_seconds=5.0,
            secret_key="warm-path-bench-secret-key",
        )
        shared = build_shared(settings)
        engine = build_engine_config(settings)
        assert engine.lora_dir is not None
        dummy.ensure_adapters(engine.lora_dir)
        stamps = Stamps()
        inner = build_runner(engine)
        execution = build_execution(shared, runner=TimedRunner(inner, stamps))
        preload(inner, shared.catalog, [MODEL])
        card = shared.catalog.get(MODEL)
        with inner.manager.lease(
            card.checkpoint.source, card.checkpoint.family, card.kind
        ) as lease:
            transformer = lease.pipeline.transformer

        def first_forward(_module: Any, _args: Any) -> None:
            if stamps.forward is None:
                stamps.forward = time.perf_counter()

        transformer.register_forward_pre_hook(first_forward)
        key, _secret = shared.keys.create("warm-path bench")
        features = Features(adapters=AdapterDirectory(engine.lora_dir))
        to_forward: list[float] = []
        to_step: list[float] = []
        for i in range(args.tasks + 1):  # the first task warms caches and is not counted
            request = SynthesisRequest(
                model=MODEL,
                prompt=f"a fox runs through the snow, take {i}",
                size=Size(832, 480),
                seed=i,
                prompt_extend=False,
                extensions=Extensions(lora=dummy.STYLE_ADAPTER if args.lora else None),
            )
            spec = build_spec(request, card, features=features)
            task = shared.store.create(
                task_id=f"warm-{i}", api_key_id=key.id, request_id=f"r{i}", spec=spec
            )
            stamps.reset()
            start = time.perf_counter()
            claim = shared.store.claim(task.id, worker_id="bench")
            assert claim is not None
            status = execute(claim, execution)
            assert status is TaskStatus.SUCCEEDED, status
            assert stamps.forward is not None and stamps.step is not None
            if i:
                to_forward.append((stamps.forward - start) * 1000)
                to_step.append((stamps.step - start) * 1000)

    result = {
        "tasks": args.tasks,
        "lora": args.lora,
        "to_first_forward_ms_median": round(statistics.median(to_forward), 1),
        "to_first_forward_ms_p95": round(percentile(to_forward, 0.95), 1),
        "to_first_step_event_ms_median": round(statistics.median(to_step), 1),
        "to_first_step_event_ms_p95": round(percentile(to_step, 0.95), 1),
    }
    for key, value in result.items():
        print(f"{key:>32}: {value}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
