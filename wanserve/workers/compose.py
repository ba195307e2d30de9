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
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from PIL import Image

from wanserve.catalog import Kind
from wanserve.engine.runner import Clip, Conditioning, EngineProgress, Runner
from wanserve.spec import SEED_MAX, GenerationSpec


@dataclass(frozen=True)
class Pass:
    spec: GenerationSpec
    shot: int
    continues: bool  # conditioned on the previous pass's last frame; drop that first frame


def plan(spec: GenerationSpec, shots: list[str] | None = None) -> list[Pass]:
    """The denoising passes that make `spec`'s video (one per shot segment)."""
    prompts = shots or [spec.prompt]
    can_chain = spec.kind is not Kind.TEXT_TO_VIDEO or spec.continuation_checkpoint is not None
    limit = spec.frames_per_pass if can_chain else spec.num_frames
    passes: list[Pass] = []
    for shot, (prompt, frames) in enumerate(zip(prompts, _split(spec, len(prompts)), strict=True)):
        remaining, first = frames, True
        seed = (spec.seed + shot) % (SEED_MAX + 1)
        while remaining > 0:
            size = _clip_frames(min(remaining if first else remaining + 1, limit))
            segment = spec.segment(num_frames=size, prompt=prompt, seed=seed, continued=not first)
            passes.append(Pass(spec=segment, shot=shot, continues=not first))
            remaining -= size if first else size - 1
            first = False
    return passes


def shot_count(seconds: int) -> int:
    """How many shots a multi-shot video of `seconds` gets: about one per three seconds,
    two to five."""
    return max(2, min(5, seconds // 3))


def _split(spec: GenerationSpec, shots: int) -> list[int]:
    """Native frames per shot: the video's frames shared out, each shot 4n+1 frames long."""
    if shots == 1:
        return [spec.num_frames]
    total = spec.num_frames - 1
    base = [total * (i + 1) // shots - total * i // shots for i in range(shots)]
    return [4 * max(1, round(n / 4)) + 1 for n in base]


def _clip_frames(n: int) -> int:
    """Round down to 4n+1 (what the Wan VAE decodes), at least 5 frames."""
    return max(5, (n - 1) // 4 * 4 + 1)


def render(
    spec: GenerationSpec,
    *,
    runner: Runner,
    conditioning: Conditioning,
    shots: list[str] | None,
    on_progress: Callable[[EngineProgress], None],
    should_cancel: Callable[[], bool],
) -> Clip:
    """Run every pass of `spec` and join the frames."""
    passes = plan(spec, shots)
    total = sum(p.spec.steps for p in passes)
    done = 0
    parts: list[np.ndarray] = []
    last_frame: Image.Image | None = None
    fps = spec.native_fps
    for index, p in enumerate(passes):
        offset, final = done, index == len(passes) - 1

        def report(event: EngineProgress, offset: int = offset, final: bool = final) -> None:
            if event.stage == "denoise":
                on_progress(EngineProgress("denoise", offset + event.step, total))
            elif final:  # earlier passes' decoding is part of the denoising span
                on_progress(event)

        if p.continues:
            assert last_frame is not None
            cond = Conditioning(image=last_frame)
        else:
            cond = conditioning
        clip = runner.run(
            p.spec, conditioning=cond, on_progress=report, should_cancel=should_cancel
        )
        frames = clip.frames[1:] if p.continues else clip.frames
        parts.append(frames)
        last_frame = Image.fromarray(clip.frames[-1])
        done += p.spec.steps
    return Clip(frames=np.concatenate(parts, axis=0), fps=fps)
