"""Same request, same seed: byte-identical MP4, through the worker's job body and the real
engine (small size, so it runs in seconds)."""

from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path

from tests.conftest import make_settings
from wanserve.catalog import Catalog
from wanserve.compose.embedded import build_components
from wanserve.engine.request import EngineConfig
from wanserve.engine.runner import build_runner
from wanserve.spec import SynthesisRequest, build_spec
from wanserve.tasks.models import TaskStatus
from wanserve.workers.execute import Execution, execute
from wanserve.workers.inputs import MediaResolver


def test_same_seed_byte_identical_mp4(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "d")
    runner = build_runner(EngineConfig(weights="dummy", device="cpu", dummy_root=tmp_path / "w"))
    parts = build_components(settings, runner=runner)
    key, _ = parts.services.keys.create("k")
    card = Catalog.build(steps=2).get("wan2.1-t2v-turbo")
    spec = build_spec(
        SynthesisRequest(model=card.name, prompt="a cat", seed=11, watermark=True), card
    )
    spec = dataclasses.replace(
        spec, width=96, height=64, gen_width=96, gen_height=64, num_frames=17, duration=1
    )
    ex = Execution(
        store=parts.store,
        runner=runner,
        storage=parts.services.storage,
        inputs=MediaResolver(),
        scratch_dir=tmp_path / "tmp",
        heartbeat_seconds=0.5,
    )

    digests = []
    for n in range(3):
        task_spec = spec if n < 2 else dataclasses.replace(spec, seed=12)
        parts.store.create(task_id=f"t{n}", api_key_id=key.id, request_id="r", spec=task_spec)
        claim = parts.store.claim(f"t{n}", worker_id="w")
        assert claim is not None
        assert execute(claim, ex) is TaskStatus.SUCCEEDED
        video = parts.services.storage.path(f"videos/t{n}.mp4")  # type: ignore[attr-defined]
        digests.append(hashlib.sha256(video.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    assert digests[0] != digests[2]
