"""Speed settings on the real engine with tiny random checkpoints: the lossless paths against
plain diffusers (within one 8-bit level), the block-cache mechanics (counts, determinism,
reset between runs, no state shared between pipelines), and setting validation.

Random weights say nothing about a cache's quality; the mechanics are what is tested here."""

from __future__ import annotations

import ast
import dataclasses
import functools
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from tests.engine.test_families import small as family_small
from tests.engine.test_wan import small
from tests.waiting import join
from wanserve.catalog import Catalog, Family, ModelOverride, checkpoint_speeds
from wanserve.engine import dummy, speed, wan
from wanserve.engine.options import CachePreset, CfgBatch, CheckpointSpeed, CompileMode
from wanserve.engine.request import Clip, EngineConfig, GenerationRequest
from wanserve.engine.runner import PipelineRunner, build_runner
from wanserve.spec import GenerationSpec
from wanserve.workers.inputs import Conditioning
from wanserve.workers.translation import request_for

ONE_LEVEL = 1  # float rounding may tip a value across one 8-bit level, never further


def engine(root: Path, spec: GenerationSpec, **settings: Any) -> PipelineRunner:
    return build_runner(
        EngineConfig(
            weights="auto",
            device="cpu",
            dummy_root=root,
            allow_download=False,
            speed={spec.checkpoint: CheckpointSpeed(**settings)},
        )
    )


def go(runner: PipelineRunner, request: GenerationRequest) -> Clip:
    return runner.run(request, on_progress=lambda e: None, should_cancel=lambda: False)


def batch_sizes(runner: PipelineRunner, spec: GenerationSpec) -> list[Any]:
    """Records the batch of every block-0 call of each of the checkpoint's transformers."""
    seen: list[Any] = []
    with runner.manager.lease(spec.checkpoint, spec.family, spec.kind) as leased:
        for n, transformer in enumerate(speed.transformers_of(leased.pipeline)):
            transformer.blocks[0].register_forward_pre_hook(
                lambda _m, args, n=n: seen.append((n, args[0].shape[0]))
            )
    return seen


def local(spec: GenerationSpec, root: Path) -> GenerationSpec:
    return dataclasses.replace(spec, checkpoint=str(dummy.ensure_checkpoint(spec.family, root)))


def assert_close(a: np.ndarray, b: np.ndarray) -> None:
    diff = np.abs(a.astype(int) - b.astype(int))
    assert diff.max() <= ONE_LEVEL and diff.mean() < 0.05, (diff.max(), diff.mean())


def plain_diffusers(spec: GenerationSpec, root: Path) -> np.ndarray:
    from diffusers import WanPipeline

    pipe = WanPipeline.from_pretrained(dummy.ensure_checkpoint(Family.WAN21_T2V, root))
    pipe.set_progress_bar_config(disable=True)
    wan._set_flow_shift(pipe, spec.flow_shift)
    with torch.inference_mode():
        video = pipe(
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
    return np.asarray((video * 255).round(), dtype=np.uint8)


def test_batched_cfg_matches_plain_diffusers_in_one_batch_two_forward(
    dummy_root: Path, tmp_path: Path
) -> None:
    spec = local(small(steps=3), dummy_root)
    runner = engine(tmp_path, spec, cfg_batch=CfgBatch.ON)
    seen = batch_sizes(runner, spec)
    clip = go(runner, request_for(spec, conditioning=Conditioning()))
    assert seen == [(0, 2)] * 3  # one forward per step, both passes in it
    assert_close(clip.frames, plain_diffusers(spec, dummy_root))
    layers = 2
    assert clip.blocks == speed.BlockCount(computed=3 * 2 * layers, skipped=0)


def test_cfg_batch_off_runs_two_forwards_and_unguided_runs_one(
    dummy_root: Path, tmp_path: Path
) -> None:
    spec = local(small(steps=2), dummy_root)
    runner = engine(tmp_path, spec, cfg_batch=CfgBatch.OFF)
    seen = batch_sizes(runner, spec)
    go(runner, request_for(spec, conditioning=Conditioning()))
    assert seen == [(0, 1)] * 4
    seen.clear()
    on = engine(tmp_path, spec, cfg_batch=CfgBatch.ON)
    seen_on = batch_sizes(on, spec)
    unguided = dataclasses.replace(spec, guidance_scale=1.0)
    clip = go(on, request_for(unguided, conditioning=Conditioning()))
    assert seen_on == [(0, 1)] * 2  # nothing to batch without guidance
    assert clip.blocks == speed.BlockCount(computed=2 * 2, skipped=0)


@pytest.mark.parametrize(
    "model",
    [
        "wanx2.1-i2v-turbo",  # CLIP image embeddings ride along in the batch
        "wan2.2-t2v-plus",  # two experts: both batched
        "wan2.2-i2v-flash",  # TI2V-5B: a timestep per token
    ],
)
def test_batched_cfg_on_image_and_two_expert_families(
    model: str, dummy_root: Path, tmp_path: Path
) -> None:
    spec = local(family_small(model), dummy_root)
    image = Image.new("RGB", (spec.gen_width or 0, spec.gen_height or 0), (200, 40, 90))
    cond = Conditioning(image=image) if spec.kind.value != "t2v" else Conditioning()
    request = request_for(dataclasses.replace(spec, steps=4), conditioning=cond)
    off = engine(tmp_path, spec, cfg_batch=CfgBatch.OFF)
    on = engine(tmp_path, spec, cfg_batch=CfgBatch.ON)
    seen = batch_sizes(on, spec)
    reference = go(off, request).frames
    assert_close(go(on, request).frames, reference)
    assert {batch for _, batch in seen} == {2}
    experts = {n for n, _ in seen}
    assert experts == ({0, 1} if spec.family is Family.WAN22_T2V_A14B else {0})


def hook_wrapped(module: Any) -> bool:
    """Whether the module's instance `forward` is the one diffusers' `HookRegistry` installs
    (a partial of its rewritten forward, bound to the module), not a function of ours."""
    forward = vars(module).get("forward")
    return (
        isinstance(forward, functools.partial)
        and forward.func.__module__ == "diffusers.hooks.hooks"
        and forward.args == (module,)
    )


def registered(module: Any) -> tuple[str, ...]:
    """The names of the diffusers hooks on `module` itself, in registration order."""
    registry = getattr(module, "_diffusers_hook", None)
    return () if registry is None else tuple(registry._hook_order)


def class_forward(module: Any) -> Any:
    return type(module).forward.__get__(module)


def test_batched_cfg_is_a_diffusers_hook_removed_cleanly() -> None:
    """On one transformer: registered under its name in the `HookRegistry`, wrapping the
    class's own forward; one batch-2 forward answers both passes; removed afterwards, the
    transformer computes exactly what it did before it was ever hooked."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = dummy._transformer()
        hidden = torch.randn(1, 16, 2, 8, 8)
        embeds, negative = torch.randn(2, 1, 16, transformer.config.text_dim)
    timestep = torch.tensor([500.0])
    batches: list[int] = []
    transformer.blocks[0].register_forward_pre_hook(lambda _m, a: batches.append(a[0].shape[0]))

    def guided() -> tuple[torch.Tensor, torch.Tensor]:
        cond, uncond = (
            transformer(
                hidden_states=hidden, timestep=timestep, encoder_hidden_states=e, return_dict=False
            )[0]
            for e in (embeds, negative)
        )
        return cond, uncond

    with torch.inference_mode():
        never = guided()
        assert "forward" not in vars(transformer) and registered(transformer) == ()
        with speed.batched_cfg([transformer], negative=negative):
            assert registered(transformer) == (speed.BATCHED_CFG_HOOK,)
            assert hook_wrapped(transformer)
            hook = transformer._diffusers_hook.get_hook(speed.BATCHED_CFG_HOOK)
            assert hook.fn_ref.original_forward == class_forward(transformer)
            batches.clear()
            batched = guided()
            assert batches == [2]  # both passes in one forward
        assert registered(transformer) == ()
        assert transformer.forward == class_forward(transformer)  # HookRegistry restored it
        batches.clear()
        after = guided()
        assert batches == [1, 1]
    for ours, plain in zip(batched, never, strict=True):
        torch.testing.assert_close(ours, plain)  # batch 2 against batch 1: float rounding
    for ours, plain in zip(after, never, strict=True):
        assert torch.equal(ours, plain)


def test_batched_cfg_hook_lives_for_one_guided_run(dummy_root: Path, tmp_path: Path) -> None:
    """Through the engine: during a guided run the transformer's forward is HookRegistry's
    wrapper with our hook alone in it; an unguided run on the same resident pipeline runs
    without it; nothing is left after either, and the pipeline's output equals that of one
    never hooked."""
    spec = local(small(steps=2), dummy_root)
    runner = engine(tmp_path, spec, cfg_batch=CfgBatch.ON)
    seen: list[tuple[tuple[str, ...], bool]] = []
    with runner.manager.lease(spec.checkpoint, spec.family, spec.kind) as leased:
        transformer = leased.pipeline.transformer
    # nn.Module pre-hooks run in __call__, before the instance's (hooked) forward.
    transformer.register_forward_pre_hook(
        lambda m, _a: seen.append((registered(m), hook_wrapped(m)))
    )
    request = request_for(spec, conditioning=Conditioning())
    unguided = request_for(
        dataclasses.replace(spec, guidance_scale=1.0), conditioning=Conditioning()
    )
    first = go(runner, request)
    assert seen == [((speed.BATCHED_CFG_HOOK,), True)] * 4  # both passes of both steps
    assert registered(transformer) == () and transformer.forward == class_forward(transformer)
    seen.clear()
    plain = go(runner, unguided)
    assert seen == [((), False)] * 2
    again = go(runner, request)
    assert np.array_equal(again.frames, first.frames)
    never = go(engine(tmp_path, spec, cfg_batch=CfgBatch.ON), unguided)
    assert np.array_equal(plain.frames, never.frames)


def test_batched_cfg_assigns_no_forward() -> None:
    """speed.py replaces no module's `forward` itself (no assignment or deletion of an
    attribute named forward, no setattr/delattr of "forward"): diffusers' HookRegistry does it
    for the hook, and undoes it."""
    found = []
    for node in ast.walk(ast.parse(Path(speed.__file__).read_text())):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign | ast.Delete):
            targets = node.targets
        elif isinstance(node, ast.AugAssign | ast.AnnAssign):
            targets = [node.target]
        if any(isinstance(t, ast.Attribute) and t.attr == "forward" for t in targets):
            found.append(node.lineno)
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("setattr", "delattr")
            and any(isinstance(a, ast.Constant) and a.value == "forward" for a in node.args)
        ):
            found.append(node.lineno)
    assert found == []


def test_regional_compile_warms_at_load_and_matches_eager(dummy_root: Path, tmp_path: Path) -> None:
    """The blocks are compiled while the checkpoint loads: the first task compiles nothing.
    (On a CPU compiling costs tens of seconds per batch size; see docs/performance.md.)"""
    from torch._dynamo.utils import counters

    spec = local(small(steps=2), dummy_root)
    eager = go(engine(tmp_path, spec), request_for(spec, conditioning=Conditioning()))
    compiled = engine(tmp_path, spec, compile=CompileMode.REGIONAL)
    before = sum(counters["stats"].values())
    with compiled.manager.lease(spec.checkpoint, spec.family, spec.kind):
        pass  # loads and warms
    loaded = sum(counters["stats"].values())
    assert loaded > before  # frames were compiled at load
    clip = go(compiled, request_for(spec, conditioning=Conditioning()))
    assert sum(counters["stats"].values()) == loaded  # nothing compiled during the task
    assert_close(clip.frames, eager.frames)


def test_attention_backend_native_is_used_and_unavailable_ones_are_refused(
    dummy_root: Path, tmp_path: Path
) -> None:
    spec = local(small(steps=2), dummy_root)
    native = engine(tmp_path, spec, attention="native")
    with native.manager.lease(spec.checkpoint, spec.family, spec.kind) as leased:
        processor = leased.pipeline.transformer.blocks[0].attn1.processor
        assert processor._attention_backend == "native"
    assert_close(
        go(native, request_for(spec, conditioning=Conditioning())).frames,
        go(engine(tmp_path, spec), request_for(spec, conditioning=Conditioning())).frames,
    )
    with pytest.raises(ValueError, match="'flash' needs a GPU"):
        engine(tmp_path, spec, attention="flash")
    with pytest.raises(ValueError, match="unknown attention backend 'warp'"):
        engine(tmp_path, spec, attention="warp")


@pytest.fixture(scope="module")
def deep_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny T2V checkpoint with the 1.3B's 30 blocks, so MagCache's published 1.3B ratios
    apply (the skip schedule depends on the ratios and the step count, not the weights)."""
    path = tmp_path_factory.mktemp("deep") / "t2v-30-blocks"
    pipe = dummy.build_pipeline(Family.WAN21_T2V)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        pipe.transformer = dummy._transformer(num_layers=30)
    pipe.save_pretrained(path)
    return path


def deep(path: Path, **changes: Any) -> GenerationSpec:
    return dataclasses.replace(small(steps=10), checkpoint=str(path), **changes)


def test_cache_skips_blocks_and_counts_them(deep_checkpoint: Path, tmp_path: Path) -> None:
    spec = deep(deep_checkpoint)
    runner = engine(tmp_path, spec, cfg_batch=CfgBatch.OFF)
    scheduled = 10 * 2 * 30  # steps x (cond, uncond) x blocks
    off = go(runner, request_for(spec, conditioning=Conditioning()))
    assert off.blocks == speed.BlockCount(computed=scheduled, skipped=0)
    fast = go(
        runner, request_for(dataclasses.replace(spec, cache="fast"), conditioning=Conditioning())
    )
    faster = go(
        runner, request_for(dataclasses.replace(spec, cache="faster"), conditioning=Conditioning())
    )
    for clip in (fast, faster):
        assert clip.blocks is not None
        assert clip.blocks.computed + clip.blocks.skipped == scheduled
        # Whole steps are skipped: a multiple of the 30 blocks, for one pass or both.
        assert clip.blocks.skipped > 0 and clip.blocks.skipped % 30 == 0
    assert fast.blocks is not None and faster.blocks is not None
    assert faster.blocks.skipped > fast.blocks.skipped
    assert not np.array_equal(fast.frames, off.frames)  # the cache did change the output


def test_cache_is_deterministic_reset_between_runs_and_removed_when_off(
    deep_checkpoint: Path, tmp_path: Path
) -> None:
    spec = deep(deep_checkpoint, cache="faster")
    runner = engine(tmp_path, spec)  # cfg_batch auto: batched on a CPU, counts unchanged
    request = request_for(spec, conditioning=Conditioning())
    first, second = go(runner, request), go(runner, request)
    assert np.array_equal(first.frames, second.frames)  # same seed, same bytes, cache on
    assert first.blocks == second.blocks  # no state carried from the first run
    off_request = dataclasses.replace(request, cache=CachePreset.OFF)
    after = go(runner, off_request)
    fresh = go(engine(tmp_path, spec), off_request)
    assert after.blocks is not None and after.blocks.skipped == 0
    assert np.array_equal(after.frames, fresh.frames)  # no hook left behind
    with runner.manager.lease(spec.checkpoint, spec.family, spec.kind) as leased:
        registry = getattr(leased.pipeline.transformer.blocks[0], "_diffusers_hook", None)
        assert registry is None or not registry.hooks


def test_batched_cfg_composes_with_the_block_cache(deep_checkpoint: Path, tmp_path: Path) -> None:
    """The cache's hooks sit on the blocks, inside the transformer forward that batched CFG
    wraps: one batch-2 block call per computed step. MagCache's skip schedule depends only on
    the step, so batched and unbatched runs skip the same blocks and agree to one level."""
    from diffusers.hooks.mag_cache import _MAG_CACHE_BLOCK_HOOK, _MAG_CACHE_LEADER_BLOCK_HOOK

    spec = deep(deep_checkpoint, cache="fast")
    request = request_for(spec, conditioning=Conditioning())
    on = engine(tmp_path, spec, cfg_batch=CfgBatch.ON)
    layout: list[tuple[tuple[str, ...], tuple[str, ...], tuple[str, ...], int]] = []
    with on.manager.lease(spec.checkpoint, spec.family, spec.kind) as leased:
        transformer = leased.pipeline.transformer
    transformer.blocks[1].ffn.register_forward_pre_hook(
        lambda _m, a: layout.append(
            (
                registered(transformer),
                registered(transformer.blocks[0]),
                registered(transformer.blocks[1]),
                a[0].shape[0],
            )
        )
    )
    batched = go(on, request)
    unbatched = go(engine(tmp_path, spec, cfg_batch=CfgBatch.OFF), request)
    assert layout and set(layout) == {
        (
            (speed.BATCHED_CFG_HOOK,),
            (_MAG_CACHE_LEADER_BLOCK_HOOK,),
            (_MAG_CACHE_BLOCK_HOOK,),
            2,
        )
    }
    assert batched.blocks == unbatched.blocks
    assert batched.blocks is not None and batched.blocks.skipped > 0
    assert_close(batched.frames, unbatched.frames)
    assert registered(transformer) == () and registered(transformer.blocks[0]) == ()


def test_concurrent_cached_runs_on_two_pipelines_do_not_share_state(
    deep_checkpoint: Path, dummy_root: Path, tmp_path: Path
) -> None:
    a = deep(deep_checkpoint, cache="faster")
    b = local(small(steps=10, cache="faster", seed=5), dummy_root)
    runner = build_runner(
        EngineConfig(weights="auto", device="cpu", dummy_root=tmp_path, allow_download=False)
    )
    requests = [request_for(s, conditioning=Conditioning()) for s in (a, b)]
    alone = [go(runner, r) for r in requests]
    together: list[Clip | None] = [None, None]

    def work(i: int) -> None:
        together[i] = go(runner, requests[i])

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        join(t, stall=600, what="a concurrent run")
    for solo, clip in zip(alone, together, strict=True):
        assert clip is not None
        assert np.array_equal(solo.frames, clip.frames) and solo.blocks == clip.blocks


def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError):
        ModelOverride(cache="fastest")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ModelOverride(cfg_batch="sometimes")  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        ModelOverride(compile="full")  # type: ignore[arg-type]
    overrides = {
        "wan2.1-t2v-turbo": ModelOverride(compile="regional", cache="fast"),  # type: ignore[arg-type]
    }
    card = Catalog.build(overrides).get("wan2.1-t2v-turbo")
    assert card.speed.compile is CompileMode.REGIONAL and card.cache is CachePreset.FAST
    # The alias shares the checkpoint: they must agree on load-time settings.
    with pytest.raises(ValueError, match="share checkpoint"):
        checkpoint_speeds(Catalog.build(overrides))
    both = overrides | {"wanx2.1-t2v-turbo": ModelOverride(compile="regional")}  # type: ignore[arg-type]
    speeds = checkpoint_speeds(Catalog.build(both))
    assert speeds[card.checkpoint.source].compile is CompileMode.REGIONAL
