"""VACE (composite conditioning) on the tiny random Wan2.1-VACE checkpoint, through the
engine's own request: a source video, its mask and reference images each reach the model."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from PIL import Image

from wanserve.engine.errors import BadInput
from wanserve.engine.families import CHECKPOINTS, Family, Kind
from wanserve.engine.options import CachePreset
from wanserve.engine.request import GenerationRequest
from wanserve.engine.runner import PipelineRunner

W, H, F = 32, 32, 5
_RNG = np.random.default_rng(3)
VIDEO = _RNG.integers(0, 255, (F, H, W, 3), dtype=np.uint8)
MASK = np.full((F, H, W), 255, dtype=np.uint8)
MASK[0] = 0  # keep the first frame: an extension
REFERENCE = Image.fromarray(_RNG.integers(0, 255, (40, 24, 3), dtype=np.uint8))


def request(**changes: Any) -> GenerationRequest:
    base: dict[str, Any] = {
        "checkpoint": CHECKPOINTS["vace-1.3b"].source,
        "family": Family.WAN21_VACE,
        "kind": Kind.COMPOSITE,
        "width": W,
        "height": H,
        "num_frames": F,
        "steps": 2,
        "guidance_scale": 5.0,
        "seed": 11,
        "prompt": "a cat runs",
        "negative_prompt": "blurry",
        "video": VIDEO,
        "mask": MASK,
        "reference_images": (REFERENCE,),
    }
    return GenerationRequest(**(base | changes))


def frames(runner: PipelineRunner, req: GenerationRequest) -> np.ndarray:
    clip = runner.run(req, on_progress=lambda _: None, should_cancel=lambda: False)
    assert clip.fps == 16
    return clip.frames


def test_every_input_steers_the_video(runner: PipelineRunner) -> None:
    base = frames(runner, request())
    assert base.shape == (F, H, W, 3) and base.dtype == np.uint8
    assert np.array_equal(base, frames(runner, request()))  # same inputs, same seed: same video
    other_video = np.ascontiguousarray(VIDEO[::-1])
    assert not np.array_equal(base, frames(runner, request(video=other_video)))
    assert not np.array_equal(base, frames(runner, request(mask=np.zeros_like(MASK))))
    assert not np.array_equal(base, frames(runner, request(reference_images=())))
    assert not np.array_equal(base, frames(runner, request(conditioning_scale=0.5)))


def test_nothing_but_a_prompt_and_references_alone_run(runner: PipelineRunner) -> None:
    bare = frames(runner, request(video=None, mask=None, reference_images=()))
    refs = frames(runner, request(video=None, mask=None, guidance_scale=1.0))
    assert bare.shape == refs.shape == (F, H, W, 3)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"video": None}, "a mask needs the source video"),
        ({"video": VIDEO[:3]}, "the source video is"),
        ({"mask": MASK[:, :16]}, "the mask is"),
        ({"conditioning_scale": 3.0}, "conditioning scale"),
        ({"cache": CachePreset.FAST}, "block cache"),
        ({"first_frame": REFERENCE}, "takes no first frame"),
    ],
)
def test_inconsistent_requests_are_refused_before_any_model(
    changes: dict[str, Any], message: str
) -> None:
    with pytest.raises(BadInput, match=message):
        request(**changes)


def test_other_kinds_take_no_composite_inputs() -> None:
    with pytest.raises(BadInput, match="takes no source video"):
        GenerationRequest(
            checkpoint=CHECKPOINTS["t2v-1.3b"].source,
            family=Family.WAN21_T2V,
            kind=Kind.TEXT_TO_VIDEO,
            width=W,
            height=H,
            num_frames=F,
            steps=1,
            guidance_scale=1.0,
            seed=0,
            prompt="p",
            negative_prompt="",
            reference_images=(REFERENCE,),
        )


def test_streamed_frames_are_the_decoded_ones(runner: PipelineRunner) -> None:
    """Streaming decodes the latents itself: the references' latent frames are not video."""
    req = request()
    chunks: list[np.ndarray] = []
    clip = runner.stream(
        req, on_progress=lambda _: None, should_cancel=lambda: False, on_frames=chunks.append
    )
    assert len(clip.frames) == 0
    assert np.array_equal(np.concatenate(chunks), frames(runner, req))
