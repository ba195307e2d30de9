"""The reference job at full size with random weights, against the H100 compute floor.

Wan2.1-T2V-1.3B, 832x480, 81 frames, 50 steps, classifier-free guidance 5: 100 transformer
forwards of 283 TFLOP each, 28.3 PFLOP, whose floor on one H100 at 800 TFLOP/s is 35.4 s
(/work/shared/reference/anchors.md section 5). The engine builds the published architecture
with random weights (`--weights random`: no download; videos are noise), runs the job through
its own runner (`PipelineRunner.run`, the worker's code path), and prints seconds per
denoising step, the denoising and total times, peak memory, and the ratio of the measured
denoising time to the floor for the shape that ran (the floor counts transformer FLOPs only:
text encoding and the VAE decode come on top).

    python bench/reference_job.py                       # the reference job (a CUDA host)
    python bench/reference_job.py --steps 1 --frames 5 --width 416 --height 240  # CPU proof
    python bench/reference_job.py --model Wan-AI/Wan2.2-TI2V-5B-Diffusers \\
        --width 1280 --height 704 --frames 121          # the 5B job (floor 64.6 s)

It runs unchanged on CPU (fp32) and CUDA (bf16); `--json` ends the output with one JSON
object. `--steps`/`--frames`/sizes shrink the job; the floor is recomputed for the shape run.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from wanserve.engine import random_weights
from wanserve.engine.families import CHECKPOINTS, FAMILIES, Kind
from wanserve.engine.request import EngineConfig, EngineProgress, GenerationRequest, Stage
from wanserve.engine.runner import build_runner
from wanserve.engine.wan import resolve_device, resolve_dtype

H100_TFLOPS = 800.0  # sustained dense bf16 the anchors' floor assumes (989 is the peak)
TEXT_TOKENS = 512  # UMT5 context every prompt is padded to


def forward_flops(layout: random_weights.Layout, *, tokens: int) -> float:
    """FLOPs of one transformer forward over `tokens` video tokens (anchors.md section 5:
    2 x multiply-adds of the projections, feed-forward and both attentions)."""
    d, f, n, t = layout.dim, layout.ffn, tokens, TEXT_TOKENS
    per_layer = (
        2 * n * 4 * d * d  # self-attention q, k, v, o
        + 2 * n * 2 * d * d  # cross-attention q, o
        + 2 * t * 2 * d * d  # cross-attention k, v over the text
        + 2 * n * 2 * d * f  # feed-forward
        + 4 * n * n * d  # self-attention scores and values
        + 4 * n * t * d  # cross-attention scores and values
    )
    return float(per_layer * layout.layers)


def video_tokens(layout: random_weights.Layout, *, frames: int, width: int, height: int) -> int:
    spatial = 32 if layout.vae_22 else 16  # VAE stride x the 2x2 patch
    return ((frames - 1) // 4 + 1) * (height // spatial) * (width // spatial)


def peak_memory_bytes(device: torch.device) -> int:
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default=CHECKPOINTS["t2v-1.3b"].source)
    parser.add_argument("--width", type=int, default=832)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--guidance", type=float, default=5.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()

    layout = random_weights.LAYOUTS.get(args.model)
    if layout is None:
        parser.error(f"--model must be one of {', '.join(sorted(random_weights.LAYOUTS))}")
    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as scratch:
        config = EngineConfig(
            weights="random", device=args.device, dtype=args.dtype, dummy_root=Path(scratch)
        )
        runner = build_runner(config)
        if FAMILIES[layout.family].image_pipeline:
            parser.error("image-to-video layouts need an input image; time a text-to-video one")
        request = GenerationRequest(
            checkpoint=args.model,
            family=layout.family,
            kind=Kind.TEXT_TO_VIDEO,
            width=args.width,
            height=args.height,
            num_frames=args.frames,
            steps=args.steps,
            guidance_scale=args.guidance,
            guidance_scale_2=args.guidance if layout.experts == 2 else None,
            flow_shift=FAMILIES[layout.family].sampling.flow_shift,
            seed=0,
            prompt="a cat walks through a sunlit garden",
            negative_prompt="blurry",
        )
        started = time.perf_counter()
        with runner.manager.lease(request.checkpoint, request.family, request.kind):
            pass  # build the weights first: their time is not the job's
        built = time.perf_counter() - started

        marks: list[tuple[EngineProgress, float]] = []

        def on_progress(event: EngineProgress) -> None:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            marks.append((event, time.perf_counter()))

        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        t0 = time.perf_counter()
        runner.run(request, on_progress=on_progress, should_cancel=lambda: False)
        total = time.perf_counter() - t0

    denoise = [t for e, t in marks if e.stage is Stage.DENOISE]
    steps = [b - a for a, b in zip([t0, *denoise], denoise, strict=False)]
    denoised = denoise[-1] - t0
    tokens = video_tokens(layout, frames=args.frames, width=args.width, height=args.height)
    forwards = args.steps * (2 if args.guidance > 1.0 else 1)
    job_flops = forward_flops(layout, tokens=tokens) * forwards
    floor = job_flops / (H100_TFLOPS * 1e12)
    result: dict[str, Any] = {
        "model": args.model,
        "device": str(device),
        "dtype": str(resolve_dtype(args.dtype, device)).removeprefix("torch."),
        "shape": f"{args.width}x{args.height}x{args.frames}",
        "steps": args.steps,
        "guidance": args.guidance,
        "tokens": tokens,
        "build_seconds": round(built, 2),
        "first_step_seconds": round(steps[0], 3),
        "seconds_per_step": round(statistics.median(steps), 3),
        "denoise_seconds": round(denoised, 2),
        "decode_seconds": round(total - denoised, 2),
        "total_seconds": round(total, 2),
        "peak_memory_gib": round(peak_memory_bytes(device) / 2**30, 2),
        "job_pflop": round(job_flops / 1e15, 3),
        "h100_floor_seconds": round(floor, 3),
        "ratio_to_floor": round(denoised / floor, 2),
        "effective_tflops": round(job_flops / denoised / 1e12, 2),
    }
    for key, value in result.items():
        print(f"{key:>20}: {value}")
    if args.json:
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
