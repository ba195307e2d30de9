"""Compose a video from denoising passes: one pass, chained segments, or several shots.

Open Wan checkpoints make one clip well up to their training length (81 frames, 5 s at 16 fps;
121 for TI2V-5B); past it they loop or degrade. Longer videos are generated as chained
segments: each segment after the first is an image-to-video pass conditioned on the last frame
of the one before, and its first frame (which reproduces that frame) is dropped at the join, so
the video runs on without a seam or a repeated frame.

Multi-shot videos are shots cut together: each shot has its own prompt (the plan's shared
subject plus the shot's description) and the next seed of the request's lineage, and is itself
chained if it is long. For image-to-video models every shot starts from the input image, which
keeps the subject consistent across cuts.

Progress spans the whole video: step k of n counts every pass's denoising steps.

Frames stream: with a `StreamingRunner`, each pass hands its frames over as the VAE decodes
them and they go straight on to the caller's sink (the encoder), joins and all; only the last
frame of a pass is kept, to condition the next. Passes of a plain `Runner` (a fake, an
audio-driven model) go on whole, one pass at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from wanserve.engine.families import Kind, frames_at_least, frames_at_most
from wanserve.engine.options import BlockCount
from wanserve.engine.request import (
    Clip,
    EngineProgress,
    FrameSink,
    Runner,
    Stage,
    StreamingRunner,
)
from wanserve.spec import SEED_MAX, GenerationSpec
from wanserve.workers.inputs import Conditioning
from wanserve.workers.translation import request_for

# Shortest pass worth running (two latent frames); shares of a video never go below it.
_MIN_PASS_FRAMES = 5


@dataclass(frozen=True)
class Pass:
    spec: GenerationSpec
    continues: bool  # conditioned on the previous pass's last frame; drop that first frame


def plan(
    spec: GenerationSpec, shots: list[str] | None = None, *, chain_shots: bool = False
) -> list[Pass]:
    """The denoising passes that make `spec`'s video (one per shot segment). With
    `chain_shots`, each shot after the first starts from the previous shot's last frame (a
    continuous camera instead of cuts), where the model can continue from an image."""
    prompts = shots or [spec.prompt]
    can_chain = spec.kind is not Kind.TEXT_TO_VIDEO or spec.continuation_checkpoint is not None
    limit = spec.frames_per_pass if can_chain else spec.num_frames
    chained = chain_shots and can_chain and len(prompts) > 1
    passes: list[Pass] = []
    delivered = 0  # native frames of the video so far (a source video's frames alike)
    sizes = _split(spec, len(prompts), joined=chained)
    for shot, (prompt, frames) in enumerate(zip(prompts, sizes, strict=True)):
        remaining, index = frames, 0
        if chained and shot > 0:
            remaining -= 1  # the shot's first frame is the previous shot's last
        while remaining > 0:
            first = index == 0 and not (chained and shot > 0)
            size = _clip_frames(min(remaining if first else remaining + 1, limit))
            segment = spec.segment(
                num_frames=size,
                prompt=prompt,
                seed=_seed(spec.seed, shot, index),
                continued=not first,
                offset=delivered - (0 if first else 1),
            )
            passes.append(Pass(spec=segment, continues=not first))
            remaining -= size if first else size - 1
            delivered += size if first else size - 1
            index += 1
    return passes


def _seed(seed: int, shot: int, segment: int) -> int:
    """The request's seed lineage: shot k starts at seed + k; each later segment of a shot
    draws fresh noise (the same noise again would invite the same motion again)."""
    return (seed + shot + 7919 * segment) % (SEED_MAX + 1)


def shot_count(seconds: int) -> int:
    """How many shots a multi-shot video of `seconds` gets: about one per three seconds,
    two to five."""
    return max(2, min(5, seconds // 3))


def _split(spec: GenerationSpec, shots: int, *, joined: bool = False) -> list[int]:
    """Native frames per shot, each 4n+1: equal shares rounded down, the last shot taking the
    rest (rounded up; at most three frames too many, trimmed after joining). `joined` shots
    share their boundary frame, so together they make one frame more per join."""
    if shots == 1:
        return [spec.num_frames]
    target = spec.num_frames + (shots - 1 if joined else 0)
    share = target // shots
    sizes = [max(_MIN_PASS_FRAMES, frames_at_most(share)) for _ in range(shots - 1)]
    rest = target - sum(sizes)
    sizes.append(max(_MIN_PASS_FRAMES, frames_at_least(rest)))
    return sizes


def _clip_frames(n: int) -> int:
    """Round down to 4n+1 (what the Wan VAE decodes), at least `_MIN_PASS_FRAMES`."""
    return max(_MIN_PASS_FRAMES, frames_at_most(n))


def native_frames(
    spec: GenerationSpec, shots: list[str] | None = None, *, chain_shots: bool = False
) -> int:
    """How many native frames `render` delivers for `spec` (known before any pass runs, so
    the output can be retimed as frames arrive)."""
    passes = plan(spec, shots, chain_shots=chain_shots)
    joined = sum(p.spec.num_frames - (1 if p.continues else 0) for p in passes)
    return min(joined, spec.num_frames)


class _Joiner:
    """Joins passes' frames into one video for `sink`: drops the first frame of a pass that
    continues the one before, stops at the video's length, and keeps each pass's last frame."""

    def __init__(self, sink: FrameSink, *, length: int) -> None:
        self._sink = sink
        self._left = length
        self._skip = 0
        self.last_frame: np.ndarray | None = None

    def start_pass(self, *, continues: bool) -> None:
        self._skip = 1 if continues else 0

    def take(self, frames: np.ndarray) -> None:
        if len(frames):
            # A copy: the chunk itself is released once the sink is done with it.
            self.last_frame = frames[-1].copy()
        dropped = min(self._skip, len(frames))
        self._skip -= dropped
        kept = frames[dropped : dropped + self._left]
        if len(kept):
            self._left -= len(kept)
            self._sink(kept)


def render(
    spec: GenerationSpec,
    *,
    runner: Runner,
    conditioning: Conditioning,
    shots: list[str] | None,
    on_progress: Callable[[EngineProgress], None],
    should_cancel: Callable[[], bool],
    chain_shots: bool = False,
    on_frames: FrameSink | None = None,
) -> Clip:
    """Run every pass of `spec` and join the frames: into the returned clip, or, with
    `on_frames`, into that sink as they are decoded (the clip then holds none)."""
    passes = plan(spec, shots, chain_shots=chain_shots)
    total = sum(p.spec.steps for p in passes)
    length = native_frames(spec, shots, chain_shots=chain_shots)
    collected: list[np.ndarray] = []
    joiner = _Joiner(on_frames or collected.append, length=length)
    done = 0
    blocks: BlockCount | None = BlockCount()
    for index, p in enumerate(passes):
        offset, final = done, index == len(passes) - 1

        def report(event: EngineProgress, offset: int = offset, final: bool = final) -> None:
            if event.stage is Stage.DENOISE:
                on_progress(EngineProgress(Stage.DENOISE, offset + event.step, total))
            elif final:
                # Earlier passes' decoding happens inside the denoising span of the whole
                # video; reporting it as decoding would jump the bar ahead and then stall it.
                on_progress(event)

        if p.continues:
            assert joiner.last_frame is not None
            # An edited source keeps its decoded frames: the pass takes its window of them.
            cond = Conditioning(
                image=Image.fromarray(joiner.last_frame), sources=conditioning.sources
            )
        else:
            cond = conditioning
        request = request_for(p.spec, conditioning=cond)
        joiner.start_pass(continues=p.continues)
        if isinstance(runner, StreamingRunner):
            clip = runner.stream(
                request, on_progress=report, should_cancel=should_cancel, on_frames=joiner.take
            )
        else:
            clip = runner.run(request, on_progress=report, should_cancel=should_cancel)
            joiner.take(clip.frames)
        # A runner that does not count (a fake) leaves the whole video uncounted.
        blocks = blocks + clip.blocks if blocks is not None and clip.blocks is not None else None
        done += p.spec.steps
    if on_frames is not None or not collected:
        empty = np.empty((0, 0, 0, 3), dtype=np.uint8)
        return Clip(frames=empty, fps=spec.native_fps, blocks=blocks)
    return Clip(frames=np.concatenate(collected), fps=spec.native_fps, blocks=blocks)
