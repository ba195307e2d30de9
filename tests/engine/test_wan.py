"""The real engine on tiny random Wan checkpoints, at small sizes, through its own API."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm

from wanserve.catalog import Catalog, Family
from wanserve.engine import dummy, wan
from wanserve.engine.errors import Canceled, WeightsUnavailable
from wanserve.engine.request import EngineConfig, EngineProgress, Stage
from wanserve.engine.runner import PipelineRunner, build_runner
from wanserve.spec import GenerationSpec, SynthesisRequest, build_spec
from wanserve.workers.inputs import Conditioning
from wanserve.workers.translation import request_for

CATALOG = Catalog.build(steps=2)


def small(model: str = "wan2.1-t2v-turbo", **changes: Any) -> GenerationSpec:
    card = CATALOG.get(model)
    spec = build_spec(SynthesisRequest(model=model, prompt="a cat runs", seed=7), card)
    base = {
        "width": 64,
        "height": 48,
        "gen_width": 64,
        "gen_height": 48,
        "num_frames": 9,
        "duration": 1,
    }
    return dataclasses.replace(spec, **(base | changes))


def run(
    runner: PipelineRunner,
    spec: GenerationSpec,
    events: list[EngineProgress] | None = None,
    cancel_after: int | None = None,
) -> np.ndarray:
    seen = events if events is not None else []

    def should_cancel() -> bool:
        return cancel_after is not None and len(seen) >= cancel_after

    clip = runner.run(
        request_for(spec, conditioning=Conditioning()),
        on_progress=seen.append,
        should_cancel=should_cancel,
    )
    assert clip.fps == spec.native_fps
    return clip.frames


def test_text_to_video_frames(runner: PipelineRunner) -> None:
    events: list[EngineProgress] = []
    frames = run(runner, small(), events)
    assert frames.shape == (9, 48, 64, 3) and frames.dtype == np.uint8
    assert frames.std() > 0  # noise, but not a constant image
    assert [e.step for e in events if e.stage == "denoise"] == [1, 2]
    assert [e.step for e in events if e.stage == "decode"] == [
        1,
        2,
        3,
    ]  # (9 - 1) / 4 + 1 latent frames


def test_same_seed_same_frames_and_the_inputs_matter(runner: PipelineRunner) -> None:
    a = run(runner, small())
    assert np.array_equal(a, run(runner, small()))
    assert not np.array_equal(a, run(runner, small(seed=8)))
    assert not np.array_equal(a, run(runner, small(negative_prompt="flower")))
    assert not np.array_equal(a, run(runner, small(prompt="a dog plays")))


def test_warm_model_is_not_reloaded(dummy_root: Path) -> None:
    fresh = build_runner(EngineConfig(weights="dummy", device="cpu", dummy_root=dummy_root))
    run(fresh, small())
    run(fresh, small(seed=3))
    assert fresh.manager.loads == 1
    assert fresh.manager.resident() == [(small().checkpoint, Family.WAN21_T2V)]


def test_cancel_stops_at_the_next_step_and_the_pipeline_stays_usable(
    runner: PipelineRunner,
) -> None:
    events: list[EngineProgress] = []
    with pytest.raises(Canceled):
        run(runner, small(steps=6), events, cancel_after=1)
    assert [(e.stage, e.step) for e in events] == [("denoise", 1)]
    assert run(runner, small()).shape == (9, 48, 64, 3)


def test_cancel_during_decode(runner: PipelineRunner) -> None:
    events: list[EngineProgress] = []
    with pytest.raises(Canceled):
        run(runner, small(), events, cancel_after=3)  # 2 denoise steps + 1 decoded frame
    assert events[-1] == EngineProgress(Stage.DECODE, 1, 3)


def test_decode_progress_counts_finished_chunks(runner: PipelineRunner) -> None:
    """The bar keeps moving through the VAE decode: one event per decoded latent frame, each
    sent once that chunk is done (counted by the decoder's own calls, not by the clock)."""
    spec = small(num_frames=17)  # 5 latent frames
    with runner.manager.lease(spec.checkpoint, spec.family, spec.kind) as leased:
        decoder = leased.pipeline.vae.decoder
    seen: list[tuple[EngineProgress, int]] = []
    calls = [0]

    def count(*_: Any) -> None:
        calls[0] += 1

    handle = decoder.register_forward_hook(count, prepend=True)
    try:
        runner.run(
            request_for(spec, conditioning=Conditioning()),
            on_progress=lambda e: seen.append((e, calls[0])),
            should_cancel=lambda: False,
        )
    finally:
        handle.remove()
    decode = [(e.step, e.total, done) for e, done in seen if e.stage is Stage.DECODE]
    assert [step for step, _, _ in decode] == [1, 2, 3, 4, 5]
    assert all(total == 5 and done == step for step, total, done in decode)
    assert all(e.stage is Stage.DENOISE for e, _ in seen[: spec.steps])


def test_fast_cpu_norm_matches_f_normalize() -> None:
    norm = WanRMS_norm(5, images=False)
    with torch.no_grad():
        norm.gamma.uniform_(0.5, 1.5)
    x = torch.randn(1, 5, 3, 17, 23)
    expected = norm(x)
    wan._rms_norm_channels_first(norm, x)
    got = wan._rms_norm_channels_first(norm, x)
    assert torch.allclose(got, expected, atol=1e-6, rtol=1e-5)
    assert torch.allclose(got, F.normalize(x, dim=1) * norm.scale * norm.gamma, atol=1e-6)


def test_real_loading_path_from_a_local_directory(dummy_root: Path, tmp_path: Path) -> None:
    """auto mode loads a diffusers-format directory given as the checkpoint."""
    directory = dummy.ensure_checkpoint(Family.WAN21_T2V, dummy_root)
    real = build_runner(
        EngineConfig(weights="auto", device="cpu", dummy_root=tmp_path, allow_download=False)
    )
    spec = small(checkpoint=str(directory))
    frames = run(real, spec)
    dummy_frames = run(
        build_runner(EngineConfig(weights="dummy", device="cpu", dummy_root=dummy_root)), small()
    )
    assert np.array_equal(frames, dummy_frames)  # same weights, same output


def test_missing_weights_fail_with_how_to_configure(tmp_path: Path) -> None:
    config = EngineConfig(
        weights="auto",
        device="cpu",
        dummy_root=tmp_path,
        hf_cache_dir=tmp_path / "hf",
        allow_download=False,
    )
    with pytest.raises(WeightsUnavailable) as info:
        wan.WanLoader(config).prepare("Wan-AI/Wan2.1-T2V-1.3B-Diffusers", Family.WAN21_T2V)
    message = str(info.value)
    assert "Wan-AI/Wan2.1-T2V-1.3B-Diffusers" in message
    assert "WANSERVE_MODELS" in message and "--weights dummy" in message


def test_dummy_checkpoints_are_deterministic(tmp_path: Path) -> None:
    a = dummy.build_pipeline(Family.WAN21_T2V)
    b = dummy.build_pipeline(Family.WAN21_T2V)
    for (name, pa), (_, pb) in zip(
        a.transformer.state_dict().items(), b.transformer.state_dict().items(), strict=True
    ):
        assert torch.equal(pa, pb), name
    assert a.tokenizer("a cat").input_ids == b.tokenizer("a cat").input_ids
