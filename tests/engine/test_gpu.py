"""The engine on a CUDA device: every family in bfloat16 (the GPU default), CPU offload, and
the memory budget read from the device. Tiny dummy checkpoints, so a small GPU suffices.

Opt-in: skipped unless `WANSERVE_TEST_GPU=1`, so the default suite runs on CPU-only machines.
Asked for on a host where torch sees no CUDA device, they fail rather than skip: a CPU-only
torch build on a GPU host is exactly what they are there to catch.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.engine.test_families import go, picture, small
from wanserve.catalog import Kind
from wanserve.engine import wan
from wanserve.engine.request import EngineConfig
from wanserve.engine.runner import PipelineRunner, build_runner
from wanserve.workers.inputs import Conditioning

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(
        os.environ.get("WANSERVE_TEST_GPU") != "1",
        reason="GPU tests are opt-in: WANSERVE_TEST_GPU=1 on a host with CUDA",
    ),
]


@pytest.fixture(scope="module", autouse=True)  # module scope: before `cuda_runner`
def _cuda() -> None:
    assert torch.cuda.is_available(), "WANSERVE_TEST_GPU=1 but torch sees no CUDA device"


@pytest.fixture(scope="module")
def cuda_runner(dummy_root: Path) -> PipelineRunner:
    return build_runner(EngineConfig(weights="dummy", device="cuda", dummy_root=dummy_root))


def conditioning(kind: Kind) -> Conditioning:
    if kind is Kind.TEXT_TO_VIDEO:
        return Conditioning()
    if kind is Kind.KEYFRAMES_TO_VIDEO:
        return Conditioning(image=picture(1), last_image=picture(2))
    return Conditioning(image=picture(1))


@pytest.mark.parametrize(
    "model",
    [
        "wan2.1-t2v-turbo",  # Wan2.1 T2V
        "wan2.2-t2v-plus",  # Wan2.2 T2V A14B, two experts
        "wanx2.1-i2v-turbo",  # Wan2.1 I2V with CLIP
        "wan2.2-i2v-plus",  # Wan2.2 I2V A14B
        "wan2.2-i2v-flash",  # Wan2.2 TI2V-5B
        "wanx2.1-kf2v-plus",  # Wan2.1 FLF2V
    ],
)
def test_every_family_on_cuda_is_reproducible(cuda_runner: PipelineRunner, model: str) -> None:
    spec = small(model)
    cond = conditioning(spec.kind)
    frames = go(cuda_runner, spec, cond)
    assert frames.shape == (5, spec.gen_height, spec.gen_width, 3) and frames.dtype == np.uint8
    assert frames.std() > 0
    assert np.array_equal(frames, go(cuda_runner, spec, cond))  # same seed, same frames


def test_cpu_offload_gives_the_same_video(cuda_runner: PipelineRunner, dummy_root: Path) -> None:
    offloaded = build_runner(
        EngineConfig(weights="dummy", device="cuda", dummy_root=dummy_root, cpu_offload=True)
    )
    spec = small("wan2.1-t2v-turbo")
    resident = go(cuda_runner, spec)
    moved = go(offloaded, spec)
    # The same kernels on the same device; moving weights in and out changes no arithmetic,
    # but allow one 8-bit level for a differently ordered reduction.
    assert np.abs(resident.astype(int) - moved.astype(int)).max() <= 1


def test_budget_defaults_to_most_of_the_device(dummy_root: Path) -> None:
    loader = wan.WanLoader(EngineConfig(weights="dummy", device="cuda", dummy_root=dummy_root))
    _free, total = torch.cuda.mem_get_info(loader.device)
    assert loader.dtype is torch.bfloat16
    assert loader.budget_bytes() == int(total * 0.9)


def test_vace_on_cuda_is_reproducible(cuda_runner: PipelineRunner) -> None:
    """The composite kind (WanVACEPipeline) in bfloat16: video, mask and a reference."""
    from tests.engine.test_composite import request

    req = dataclasses.replace(request(), checkpoint="Wan-AI/Wan2.1-VACE-1.3B-diffusers")
    frames = cuda_runner.run(req, on_progress=lambda _: None, should_cancel=lambda: False).frames
    assert frames.shape == (req.num_frames, req.height, req.width, 3) and frames.std() > 0
    again = cuda_runner.run(req, on_progress=lambda _: None, should_cancel=lambda: False).frames
    assert np.array_equal(frames, again)


@pytest.mark.skipif(
    not os.environ.get("WANSERVE_TEST_VACE_WEIGHTS"),
    reason="real VACE weights: WANSERVE_TEST_VACE_WEIGHTS=<a Wan2.1-VACE diffusers directory>",
)
def test_real_vace_weights_keep_the_known_frames(tmp_path: Path) -> None:
    """Real Wan2.1-VACE weights extend a clip: the kept first frames come back close to the
    source (random weights cannot show this), at 480P, 17 frames, 20 steps."""
    from PIL import Image

    from wanserve.engine.families import Family
    from wanserve.engine.request import GenerationRequest
    from wanserve.workers import composite

    source = os.environ["WANSERVE_TEST_VACE_WEIGHTS"]
    runner = build_runner(
        EngineConfig(weights="auto", device="cuda", dummy_root=tmp_path, allow_download=False)
    )
    first = np.asarray(picture(3).resize((832, 480)))
    inputs = composite.extension(
        num_frames=17, width=832, height=480, first_clip=np.stack([first] * 4)
    )
    req = GenerationRequest(
        checkpoint=source,
        family=Family.WAN21_VACE,
        kind=Kind.COMPOSITE,
        width=832,
        height=480,
        num_frames=17,
        steps=20,
        guidance_scale=5.0,
        flow_shift=3.0,
        seed=1,
        prompt="a calm lake at dawn",
        negative_prompt="",
        video=inputs.video,
        mask=inputs.mask,
        reference_images=(Image.fromarray(first),),
    )
    frames = runner.run(req, on_progress=lambda _: None, should_cancel=lambda: False).frames
    assert frames.shape == (17, 480, 832, 3)
    error = np.abs(frames[:4].astype(float) - first.astype(float)).mean()
    assert error < 20, f"kept frames drift by {error:.1f} levels on average"
