"""Every Wan family through the one runner interface, resident-model management, engine
switches, and fidelity to a plain diffusers call. Tiny real architectures, small sizes."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from tests.requests import dashscope_request
from wanserve.catalog import Catalog, Family, Kind, ModelOverride
from wanserve.engine import dummy, wan
from wanserve.engine.request import EngineConfig, EngineProgress
from wanserve.engine.runner import PipelineRunner, build_runner
from wanserve.spec import GenerationSpec, build_spec
from wanserve.workers.inputs import Conditioning
from wanserve.workers.translation import request_for

IMG = "data:image/png;base64,AAAA"  # never fetched here: tests hand the runner PIL images


def small(
    model: str, overrides: dict[str, ModelOverride] | None = None, **fields: Any
) -> GenerationSpec:
    card = Catalog.build(overrides, steps=2).get(model)
    if card.kind is Kind.TEXT_TO_VIDEO:
        fields.setdefault("prompt", "a cat runs")
        spec = build_spec(dashscope_request(model, seed=3, **fields), card)
    else:
        fields.setdefault("img_url" if card.kind is Kind.IMAGE_TO_VIDEO else "first_frame_url", IMG)
        if card.kind is Kind.KEYFRAMES_TO_VIDEO:
            fields.setdefault("last_frame_url", IMG)
        spec = build_spec(dashscope_request(model, prompt="it moves", seed=3, **fields), card)
    m = spec.size_multiple
    return dataclasses.replace(
        spec, width=2 * m, height=2 * m, gen_width=2 * m, gen_height=2 * m, num_frames=5, duration=1
    )


def picture(seed: int, size: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8))


@contextmanager
def counting(module: torch.nn.Module) -> Iterator[list[int]]:
    calls = [0]
    handle = module.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    try:
        yield calls
    finally:
        handle.remove()


def go(
    runner: PipelineRunner, spec: GenerationSpec, cond: Conditioning | None = None
) -> np.ndarray:
    events: list[EngineProgress] = []
    clip = runner.run(
        request_for(spec, conditioning=cond or Conditioning()),
        on_progress=events.append,
        should_cancel=lambda: False,
    )
    assert [e.step for e in events if e.stage == "denoise"] == list(range(1, spec.steps + 1))
    assert clip.fps == spec.native_fps
    return clip.frames


TI2V_AS_T2V = {
    "wan2.5-t2v-preview": ModelOverride(
        checkpoint="Wan-AI/Wan2.2-TI2V-5B-Diffusers", family=Family.WAN22_TI2V_5B
    )
}


@pytest.mark.parametrize(
    ("model", "overrides", "family"),
    [
        ("wan2.1-t2v-turbo", None, Family.WAN21_T2V),
        ("wan2.2-t2v-plus", None, Family.WAN22_T2V_A14B),
        ("wan2.5-t2v-preview", TI2V_AS_T2V, Family.WAN22_TI2V_5B),
    ],
)
def test_text_to_video_families(
    runner: PipelineRunner, model: str, overrides: dict[str, ModelOverride] | None, family: Family
) -> None:
    spec = small(model, overrides)
    assert spec.family is family
    frames = go(runner, spec)
    assert frames.shape == (5, spec.gen_height, spec.gen_width, 3)


@pytest.mark.parametrize(
    ("model", "family"),
    [
        ("wanx2.1-i2v-turbo", Family.WAN21_I2V),
        ("wan2.2-i2v-plus", Family.WAN22_I2V_A14B),
        ("wan2.2-i2v-flash", Family.WAN22_TI2V_5B),
    ],
)
def test_image_to_video_families_follow_the_first_frame(
    runner: PipelineRunner, model: str, family: Family
) -> None:
    spec = small(model)
    assert spec.family is family
    a = go(runner, spec, Conditioning(image=picture(1)))
    b = go(runner, spec, Conditioning(image=picture(2)))
    assert a.shape == (5, spec.gen_height, spec.gen_width, 3)
    assert not np.array_equal(a, b)  # the image conditions the video


def test_first_and_last_frame(runner: PipelineRunner) -> None:
    spec = small("wanx2.1-kf2v-plus")
    assert spec.family is Family.WAN21_FLF2V and spec.kind is Kind.KEYFRAMES_TO_VIDEO
    a = go(runner, spec, Conditioning(image=picture(1), last_image=picture(2)))
    b = go(runner, spec, Conditioning(image=picture(1), last_image=picture(3)))
    assert not np.array_equal(a, b)  # the last frame conditions the video too


def test_two_experts_both_run(runner: PipelineRunner) -> None:
    spec = dataclasses.replace(small("wan2.2-t2v-plus"), steps=4)
    with runner.manager.lease(spec.checkpoint, spec.family, spec.kind) as leased:
        high, low = leased.pipeline.transformer, leased.pipeline.transformer_2
    with counting(high) as high_calls, counting(low) as low_calls:
        go(runner, spec)
    # Steps at timesteps >= 0.875 * 1000 go to the high-noise expert, the rest to the low-noise
    # one; with flow shift 12 most of four steps are high-noise. Two calls per step (CFG).
    assert high_calls[0] > 0 and low_calls[0] > 0
    assert high_calls[0] + low_calls[0] == 2 * 4


def test_one_checkpoint_serves_both_kinds_from_one_copy(dummy_root: Path) -> None:
    fresh = build_runner(EngineConfig(weights="dummy", device="cpu", dummy_root=dummy_root))
    t2v = small("wan2.5-t2v-preview", TI2V_AS_T2V)
    i2v = small("wan2.2-i2v-flash")
    assert t2v.checkpoint == i2v.checkpoint
    go(fresh, t2v)
    go(fresh, i2v, Conditioning(image=picture(1)))
    assert fresh.manager.loads == 1
    with fresh.manager.lease(t2v.checkpoint, t2v.family, Kind.TEXT_TO_VIDEO) as a:
        pass
    with fresh.manager.lease(i2v.checkpoint, i2v.family, Kind.IMAGE_TO_VIDEO) as b:
        pass
    assert (
        type(a.pipeline).__name__ == "WanPipeline"
        and type(b.pipeline).__name__ == "WanImageToVideoPipeline"
    )
    assert a.pipeline.transformer is b.pipeline.transformer and a.pipeline.vae is b.pipeline.vae
    # Catalogue entries mapped to the same checkpoint share it too.
    go(fresh, small("wan2.2-t2v-plus"))
    go(fresh, small("wan2.6-t2v"))
    assert fresh.manager.loads == 2


def test_least_recently_used_checkpoint_is_evicted_under_a_budget(dummy_root: Path) -> None:
    probe = build_runner(EngineConfig(weights="dummy", device="cpu", dummy_root=dummy_root))
    go(probe, small("wan2.1-t2v-turbo"))
    one = probe.manager.resident_bytes()
    budget = int(one * 2.5)  # room for two tiny checkpoints, not three
    limited = build_runner(
        EngineConfig(
            weights="dummy", device="cpu", dummy_root=dummy_root, memory_budget_bytes=budget
        )
    )
    t21, a14b, i2v = small("wan2.1-t2v-turbo"), small("wan2.2-t2v-plus"), small("wanx2.1-i2v-turbo")
    go(limited, t21)
    go(limited, a14b)
    go(limited, t21)  # t21 is now the most recently used
    go(limited, i2v, Conditioning(image=picture(1)))
    resident = {family for _, family in limited.manager.resident()}
    assert limited.manager.resident_bytes() <= budget
    assert Family.WAN21_I2V in resident and Family.WAN22_T2V_A14B not in resident
    assert limited.manager.evictions >= 1
    loads = limited.manager.loads
    go(limited, a14b)  # evicted models come back on demand
    assert limited.manager.loads == loads + 1


def test_prompt_embeddings_are_cached_per_checkpoint(runner: PipelineRunner) -> None:
    spec = small("wan2.1-t2v-turbo")
    go(runner, spec)
    with runner.manager.lease(spec.checkpoint, spec.family, spec.kind) as leased:
        encoder = leased.pipeline.text_encoder
    with counting(encoder) as calls:
        first = go(runner, dataclasses.replace(spec, prompt="a new prompt entirely"))
    assert calls[0] == 1  # the new prompt; the negative prompt came from the cache
    with counting(encoder) as calls:
        again = go(runner, dataclasses.replace(spec, prompt="a new prompt entirely"))
    assert calls[0] == 0 and np.array_equal(first, again)


def test_text_encoder_on_cpu_and_vae_tiling(dummy_root: Path) -> None:
    base = build_runner(EngineConfig(weights="dummy", device="cpu", dummy_root=dummy_root))
    switched = build_runner(
        EngineConfig(
            weights="dummy",
            device="cpu",
            dummy_root=dummy_root,
            text_encoder_device="cpu",
            vae_tiling=True,
        )
    )
    spec = dataclasses.replace(
        small("wan2.1-t2v-turbo"), gen_width=320, gen_height=288, width=320, height=288
    )
    with switched.manager.lease(spec.checkpoint, spec.family, spec.kind) as leased:
        assert leased.pipeline.vae.use_tiling and leased.pipeline.text_encoder.device.type == "cpu"
    events: list[EngineProgress] = []
    a = go(base, spec)
    b = switched.run(request_for(spec, conditioning=Conditioning()),
                     on_progress=events.append, should_cancel=lambda: False).frames  # fmt: skip
    assert a.shape == b.shape == (5, 288, 320, 3)
    decode = [(e.step, e.total) for e in events if e.stage == "decode"]
    # Tiled decoding runs the decoder once per tile per latent frame: progress counts tiles.
    assert decode[-1][0] == decode[-1][1] > 2 and all(s <= t for s, t in decode)
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 8  # tiles blend at their seams only


def test_engine_settings_this_machine_cannot_honour(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cpu_offload .* needs device cuda"):
        wan.WanLoader(
            EngineConfig(weights="dummy", device="cpu", dummy_root=tmp_path, cpu_offload=True)
        )
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            wan.WanLoader(EngineConfig(weights="dummy", device="cuda", dummy_root=tmp_path))


def test_fidelity_to_a_plain_diffusers_call(runner: PipelineRunner, dummy_root: Path) -> None:
    """Our runner (cached prompt embeddings, progress and cancel hooks, the CPU norm) against
    `pipeline(...)` on the same checkpoint, seed and settings. Tolerance: every pixel within
    one 8-bit level (float rounding can tip a value across a level), mean under 0.05."""
    from diffusers import WanPipeline

    spec = dataclasses.replace(
        small("wan2.1-t2v-turbo"), gen_width=96, gen_height=64, num_frames=9, steps=3
    )
    ours = go(runner, spec)
    plain = WanPipeline.from_pretrained(dummy.ensure_checkpoint(Family.WAN21_T2V, dummy_root))
    plain.set_progress_bar_config(disable=True)
    wan._set_flow_shift(plain, spec.flow_shift)
    with torch.inference_mode():
        reference = plain(
            prompt=spec.prompt,
            negative_prompt=spec.negative_prompt,
            height=spec.gen_height,
            width=spec.gen_width,
            num_frames=spec.num_frames,
            num_inference_steps=spec.steps,
            guidance_scale=spec.guidance_scale,
            generator=torch.Generator("cpu").manual_seed(spec.seed),
            output_type="np",
        ).frames[0]
    expected = np.asarray((reference * 255).round(), dtype=np.uint8)
    diff = np.abs(ours.astype(int) - expected.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.05, (diff.max(), diff.mean())
