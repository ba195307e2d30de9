"""LoRA adapters on the real engine (tiny dummy checkpoints and adapters): loaded through
diffusers' Wan LoRA loader once per resident checkpoint, swapped per run without reloading the
base model, and isolated: each run makes exactly the frames it would make alone."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from wanserve.engine import dummy
from wanserve.engine.adapters import AdapterUse
from wanserve.engine.errors import WeightsUnavailable
from wanserve.engine.families import Family, Kind
from wanserve.engine.lora import loaded_adapters
from wanserve.engine.request import EngineConfig, GenerationRequest
from wanserve.engine.runner import PipelineRunner, build_runner

STYLE = AdapterUse(name=dummy.STYLE_ADAPTER)
DISTILL = AdapterUse(name=dummy.DISTILL_ADAPTER)


@pytest.fixture(scope="module")
def lora_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = dummy.ensure_adapters(tmp_path_factory.mktemp("loras"))
    # One adapter written in both key formats: the converted lightx2v file must equal it.
    same = dummy.adapter_tensors(5)
    dummy.save_diffusers_adapter(same, root / "same-diffusers.safetensors")
    dummy.save_wan_adapter(same, root / "same-lightx2v.safetensors")
    # A diffusers LoRA directory (what `save_lora_weights` writes).
    (root / "as-directory").mkdir()
    dummy.save_diffusers_adapter(same, root / "as-directory" / "pytorch_lora_weights.safetensors")
    return root


def make_runner(dummy_root: Path, lora_dir: Path, *, cache_size: int = 8) -> PipelineRunner:
    return build_runner(
        EngineConfig(
            weights="dummy",
            device="cpu",
            dummy_root=dummy_root,
            lora_dir=lora_dir,
            lora_cache_size=cache_size,
        )
    )


@pytest.fixture(scope="module")
def swapping(dummy_root: Path, lora_dir: Path) -> Iterator[PipelineRunner]:
    """One runner whose resident pipeline sees every adapter, in turn."""
    yield make_runner(dummy_root, lora_dir)


def request(*adapters: AdapterUse, family: Family = Family.WAN21_T2V) -> GenerationRequest:
    return GenerationRequest(
        checkpoint="dummy",
        family=family,
        kind=Kind.TEXT_TO_VIDEO,
        width=64,
        height=48,
        num_frames=5,
        steps=2,
        guidance_scale=5.0,
        guidance_scale_2=4.0 if family is Family.WAN22_T2V_A14B else None,
        seed=11,
        prompt="a cat runs",
        negative_prompt="blurry",
        adapters=adapters,
    )


def frames(runner: PipelineRunner, *adapters: AdapterUse) -> np.ndarray:
    clip = runner.run(request(*adapters), on_progress=lambda _: None, should_cancel=lambda: False)
    return clip.frames


def alone(dummy_root: Path, lora_dir: Path, *adapters: AdapterUse) -> np.ndarray:
    """The frames of a fresh pipeline that has only `adapters` loaded (or none)."""
    return frames(make_runner(dummy_root, lora_dir), *adapters)


def test_consecutive_runs_make_what_each_makes_alone(
    swapping: PipelineRunner, dummy_root: Path, lora_dir: Path
) -> None:
    sequence = [(STYLE,), (DISTILL,), (), (STYLE,), (STYLE, DISTILL), ()]
    outputs = [frames(swapping, *adapters) for adapters in sequence]
    for adapters, got in zip(sequence, outputs, strict=True):
        assert np.array_equal(got, alone(dummy_root, lora_dir, *adapters)), adapters
    style, distill, none = outputs[0], outputs[1], outputs[2]
    # The adapters change the video, each its own way.
    assert not np.array_equal(style, none) and not np.array_equal(distill, none)
    assert not np.array_equal(style, distill) and not np.array_equal(outputs[4], style)
    # Swapping never reloaded the base model.
    assert swapping.manager.loads == 1


def test_a_lightx2v_format_file_is_converted_to_the_same_adapter(swapping: PipelineRunner) -> None:
    diffusers_format = frames(swapping, AdapterUse(name="same-diffusers"))
    assert np.array_equal(frames(swapping, AdapterUse(name="same-lightx2v")), diffusers_format)
    assert np.array_equal(frames(swapping, AdapterUse(name="as-directory")), diffusers_format)
    assert not np.array_equal(diffusers_format, frames(swapping))


def test_scale_zero_is_the_base_model_and_scale_matters(swapping: PipelineRunner) -> None:
    base = frames(swapping)
    assert np.array_equal(frames(swapping, AdapterUse(name=STYLE.name, scale=0.0)), base)
    half = frames(swapping, AdapterUse(name=STYLE.name, scale=0.5))
    assert not np.array_equal(half, base) and not np.array_equal(half, frames(swapping, STYLE))


def test_cached_adapters_are_bounded_least_recently_used_first(
    dummy_root: Path, lora_dir: Path
) -> None:
    runner = make_runner(dummy_root, lora_dir, cache_size=2)
    first = frames(runner, STYLE)
    frames(runner, DISTILL)
    frames(runner, STYLE)  # the style adapter is now the most recently used
    frames(runner, AdapterUse(name="same-diffusers"))  # evicts the distillation adapter
    with runner.manager.lease("dummy", Family.WAN21_T2V, Kind.TEXT_TO_VIDEO) as leased:
        assert list(loaded_adapters(leased)) == [STYLE.name, "same-diffusers"]
        in_model = leased.pipeline.get_list_adapters()["transformer"]
        assert sorted(in_model) == sorted([STYLE.name, "same-diffusers"])
    # Reloading an evicted adapter gives the same frames as before.
    assert np.array_equal(frames(runner, STYLE), first)
    assert runner.manager.loads == 1


def test_a_missing_adapter_fails_the_run_and_leaves_the_pipeline_usable(
    swapping: PipelineRunner,
) -> None:
    with pytest.raises(WeightsUnavailable, match="'gone' is not in"):
        frames(swapping, AdapterUse(name="gone"))
    assert np.array_equal(frames(swapping), frames(swapping))


def test_an_unreadable_adapter_is_reported_and_cleaned_up(dummy_root: Path, tmp_path: Path) -> None:
    (tmp_path / "broken.safetensors").write_bytes(b"not a safetensors file")
    runner = make_runner(dummy_root, tmp_path)
    with pytest.raises(WeightsUnavailable, match=r"'broken'.*could not be loaded"):
        frames(runner, AdapterUse(name="broken"))
    with runner.manager.lease("dummy", Family.WAN21_T2V, Kind.TEXT_TO_VIDEO) as leased:
        assert list(loaded_adapters(leased)) == []


def test_two_expert_checkpoints_get_the_adapter_in_both_experts(
    swapping: PipelineRunner,
) -> None:
    run = swapping.run(
        request(STYLE, family=Family.WAN22_T2V_A14B),
        on_progress=lambda _: None,
        should_cancel=lambda: False,
    )
    with swapping.manager.lease("dummy", Family.WAN22_T2V_A14B, Kind.TEXT_TO_VIDEO) as leased:
        assert leased.pipeline.get_list_adapters() == {
            "transformer": [STYLE.name],
            "transformer_2": [STYLE.name],
        }
    assert run.frames.shape == (5, 48, 64, 3)


def test_adapters_without_a_directory_are_refused(dummy_root: Path) -> None:
    runner = build_runner(EngineConfig(weights="dummy", device="cpu", dummy_root=dummy_root))
    with pytest.raises(WeightsUnavailable, match="not configured"):
        frames(runner, STYLE)
