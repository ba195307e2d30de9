"""Frames streamed from the VAE as it decodes are the very frames a whole decode gives, chunk
by latent chunk, for text- and image-to-video and for Wan2.2's patched VAE (TI2V-5B); a tiled
decode, which cannot be split in time, still reaches the sink, at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.engine.test_families import picture, small
from wanserve.catalog import Kind
from wanserve.engine.request import EngineConfig, EngineProgress, Stage
from wanserve.engine.runner import PipelineRunner, build_runner
from wanserve.workers.inputs import Conditioning
from wanserve.workers.translation import request_for


def both(runner: PipelineRunner, model: str, **changes: Any) -> tuple[np.ndarray, list[np.ndarray]]:
    spec = dataclasses.replace(small(model), **changes)
    cond = Conditioning() if spec.kind is Kind.TEXT_TO_VIDEO else Conditioning(image=picture(1))
    whole = runner.run(
        request_for(spec, conditioning=cond), on_progress=lambda _e: None, should_cancel=bool
    ).frames
    chunks: list[np.ndarray] = []
    events: list[EngineProgress] = []
    clip = runner.stream(
        request_for(spec, conditioning=cond),
        on_progress=events.append,
        should_cancel=bool,
        on_frames=chunks.append,
    )
    assert len(clip.frames) == 0 and clip.fps == spec.native_fps
    decoded = [e.step for e in events if e.stage is Stage.DECODE]
    assert decoded == list(range(1, len(decoded) + 1))
    return whole, chunks


# Wan2.1's VAE, image conditioning, and Wan2.2-TI2V-5B's patched VAE.
@pytest.mark.parametrize("model", ["wan2.1-t2v-turbo", "wanx2.1-i2v-turbo", "wan2.2-i2v-flash"])
def test_streamed_frames_are_the_whole_decode_chunk_by_chunk(
    runner: PipelineRunner, model: str
) -> None:
    whole, chunks = both(runner, model, num_frames=13)
    # One chunk per latent frame: the first latent frame makes one frame, each later one four.
    assert [len(c) for c in chunks] == [1, 4, 4, 4]
    assert all(c.dtype == np.uint8 and c.flags.c_contiguous for c in chunks)
    assert np.array_equal(np.concatenate(chunks), whole)


def test_a_tiled_decode_reaches_the_sink_at_once(tmp_path: Path) -> None:
    config = EngineConfig(weights="dummy", device="cpu", dummy_root=tmp_path / "w", vae_tiling=True)
    tiled = build_runner(config)
    with tiled.manager.lease(*_checkpoint()) as leased:  # make tiles smaller than the frame
        vae = leased.pipeline.vae
        vae.tile_sample_min_height = vae.tile_sample_min_width = 16
        vae.tile_sample_stride_height = vae.tile_sample_stride_width = 8
    whole, chunks = both(tiled, "wan2.1-t2v-turbo", num_frames=5)
    assert len(chunks) == 1
    assert np.array_equal(chunks[0], whole)


def _checkpoint() -> tuple[Any, ...]:
    request = request_for(small("wan2.1-t2v-turbo"), conditioning=Conditioning())
    return request.checkpoint, request.family, request.kind
