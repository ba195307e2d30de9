"""Plain diffusers against wanserve's engine with each speed-up alone and together, side by
side in one process, same weights.

The job: the Wan2.1-T2V-1.3B transformer layout (30 blocks, 128-wide heads, flow-matching
UniPC) at reduced width, a short clip at a small size with classifier-free guidance, random
weights saved once as a diffusers checkpoint. Configurations (all load that directory):

* plain diffusers: `WanPipeline.from_pretrained(...)(...)`, stock;
* wanserve, cfg_batch off: the runner as it was before the speed settings;
* wanserve default: the default settings (cfg_batch auto, which batches on a CPU);
* compile: regional `torch.compile`, warmed at load (the load is not timed);
* lossless, all: cfg_batch on + compile (attention stays `native`: the only fast CPU one);
* cache fast / cache faster: the block-cache presets (MagCache with the published 1.3B ratios);
* all: lossless + cache faster.

Runs rotate through the configurations after one warm-up each; medians are reported with
time ratios against plain diffusers, transformer block evaluations (counted with hooks) and
the largest pixel difference from plain diffusers. Block counts of the presets are also taken
at the official 50 steps (the MagCache skip schedule depends on the step count and the
published ratios, not on the weights), and the 4-step, guidance-off configuration of the
coming distilled preset is counted without its LoRA (the count does not depend on it).

    python bench/engine.py [--steps 10] [--repeats 2] [--size 128] [--frames 9] [--json]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from wanserve.catalog import Catalog, Family
from wanserve.engine.dummy import build_tokenizer
from wanserve.engine.options import BlockCount, CachePreset, CfgBatch, CheckpointSpeed, CompileMode
from wanserve.engine.request import EngineConfig, GenerationRequest
from wanserve.engine.runner import PipelineRunner, build_runner
from wanserve.spec import SynthesisRequest, build_spec
from wanserve.workers.inputs import Conditioning
from wanserve.workers.translation import request_for

LAYERS = 30


def build_checkpoint(path: Path, heads: int) -> None:
    torch.manual_seed(0)
    tokenizer = build_tokenizer()
    text_encoder = UMT5EncoderModel(
        UMT5Config(
            vocab_size=len(tokenizer), d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4
        )
    )
    transformer = WanTransformer3DModel(
        patch_size=(1, 2, 2),
        num_attention_heads=heads,  # 1.3B: 12 heads of 128
        attention_head_dim=128,
        in_channels=16,
        out_channels=16,
        text_dim=64,
        freq_dim=256,
        ffn_dim=heads * 128 * 35 // 6,  # the 1.3B's 8960/1536 ratio
        num_layers=30,
        cross_attn_norm=True,
        qk_norm="rms_norm_across_heads",
    )
    vae = AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=3.0
    )
    WanPipeline(
        tokenizer=tokenizer,
        text_encoder=text_encoder,
        vae=vae,
        transformer=transformer,
        scheduler=scheduler,
    ).save_pretrained(path)
    params = sum(p.numel() for p in transformer.parameters())
    print(f"transformer: 30 blocks x {heads} heads x 128 = {params / 1e6:.0f} M parameters")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--heads", type=int, default=2)
    parser.add_argument("--size", type=int, default=128, help="width and height (multiple of 16)")
    parser.add_argument("--frames", type=int, default=9, help="4n+1")
    parser.add_argument("--json", action="store_true", help="end with one JSON object")
    args = parser.parse_args()

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    size, frames = args.size, args.frames
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "wan-1.3b-layout"
        build_checkpoint(ckpt, args.heads)
        card = Catalog.build().get("wan2.1-t2v-turbo")
        spec = build_spec(
            SynthesisRequest(model=card.name, prompt="a cat runs in the moonlight", seed=1), card
        )
        spec = dataclasses.replace(
            spec,
            checkpoint=str(ckpt),
            family=Family.WAN21_T2V,
            steps=args.steps,
            width=size,
            height=size,
            gen_width=size,
            gen_height=size,
            num_frames=frames,
            duration=1,
        )
        request = request_for(spec, conditioning=Conditioning())

        plain = WanPipeline.from_pretrained(ckpt)
        plain.set_progress_bar_config(disable=True)
        plain.scheduler = UniPCMultistepScheduler.from_config(
            plain.scheduler.config, flow_shift=spec.flow_shift
        )
        plain_calls = [0]
        plain.transformer.register_forward_pre_hook(
            lambda _m, _a, kw: plain_calls.__setitem__(
                0, plain_calls[0] + kw["hidden_states"].shape[0] * LAYERS
            ),
            with_kwargs=True,
        )

        def run_plain() -> tuple[np.ndarray, BlockCount]:
            plain_calls[0] = 0
            with torch.inference_mode():
                video = plain(
                    prompt=spec.prompt,
                    negative_prompt=spec.negative_prompt,
                    height=size,
                    width=size,
                    num_frames=frames,
                    num_inference_steps=args.steps,
                    guidance_scale=spec.guidance_scale,
                    generator=torch.Generator("cpu").manual_seed(spec.seed),
                    output_type="np",
                ).frames[0]
            counted = BlockCount(computed=plain_calls[0], skipped=0)
            return np.asarray((video * 255).round(), dtype=np.uint8), counted

        def runner(**settings: object) -> PipelineRunner:
            config = EngineConfig(
                weights="auto",
                device="cpu",
                dummy_root=Path(tmp),
                allow_download=False,
                speed={str(ckpt): CheckpointSpeed(**settings)},  # type: ignore[arg-type]
            )
            built = build_runner(config)
            with built.manager.lease(str(ckpt), Family.WAN21_T2V, request.kind):
                pass  # load (and compile) outside the timed runs
            return built

        def ours(r: PipelineRunner, req: GenerationRequest) -> Callable[[], tuple]:
            def run() -> tuple[np.ndarray, BlockCount]:
                clip = r.run(req, on_progress=lambda e: None, should_cancel=lambda: False)
                assert clip.blocks is not None
                return clip.frames, clip.blocks

            return run

        started = time.perf_counter()
        unbatched = runner(cfg_batch=CfgBatch.OFF)
        default = runner()
        compiled = runner(cfg_batch=CfgBatch.OFF, compile=CompileMode.REGIONAL)
        lossless = runner(cfg_batch=CfgBatch.ON, compile=CompileMode.REGIONAL)
        print(f"loads (with two regional compiles): {time.perf_counter() - started:.1f} s")
        fast = dataclasses.replace(request, cache=CachePreset.FAST)
        faster = dataclasses.replace(request, cache=CachePreset.FASTER)
        configs: dict[str, Callable[[], tuple]] = {
            "plain diffusers": run_plain,
            "wanserve, cfg_batch off": ours(unbatched, request),
            "wanserve default": ours(default, request),
            "cfg_batch on": ours(default, request),
            "compile regional": ours(compiled, request),
            "lossless, all": ours(lossless, request),
            "cache fast": ours(unbatched, fast),
            "cache faster": ours(unbatched, faster),
            "all (lossless + faster)": ours(lossless, faster),
        }
        # auto batches on a CPU, so "default" and "cfg_batch on" are the same runner: both
        # rows are kept so the default path is shown next to plain diffusers on its own.
        outputs = {name: fn() for name, fn in configs.items()}  # warm-up
        timings: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.repeats):
            for name, fn in configs.items():
                start = time.perf_counter()
                fn()
                timings[name].append(time.perf_counter() - start)

        # Block counts at the official 50 steps, and the distilled configuration (4 steps,
        # guidance off; its LoRA does not change the count), at a minimal size.
        tiny = dataclasses.replace(spec, steps=50, width=32, height=32, gen_width=32, gen_height=32)
        tiny_request = request_for(tiny, conditioning=Conditioning())
        counts = {
            preset: ours(default, dataclasses.replace(tiny_request, cache=preset))()[1]
            for preset in CachePreset
        }
        distilled_spec = dataclasses.replace(tiny, steps=4, guidance_scale=1.0)
        distilled = ours(default, request_for(distilled_spec, conditioning=Conditioning()))()[1]

    base_frames = outputs["plain diffusers"][0]
    median = {name: statistics.median(values) for name, values in timings.items()}
    print(
        f"job: {frames} frames at {size}*{size}, {args.steps} steps with CFG, "
        f"CPU threads={torch.get_num_threads()}"
    )
    print(f"{'configuration':<26} {'median s':>9} {'x plain':>8} {'blocks':>13} {'max diff':>8}")
    diffs = {}
    for name in configs:
        frames_out, blocks = outputs[name]
        diffs[name] = int(np.abs(frames_out.astype(int) - base_frames.astype(int)).max())
        total = blocks.computed + blocks.skipped
        print(
            f"{name:<26} {median[name]:9.2f} {median['plain diffusers'] / median[name]:8.2f} "
            f"{blocks.computed:>6}/{total:<6} {diffs[name]:8d}"
        )
    full = counts[CachePreset.OFF].computed
    print("block evaluations at 50 steps (computed/scheduled):")
    for preset, blocks in counts.items():
        scheduled = blocks.computed + blocks.skipped
        ratio = full / blocks.computed
        print(f"  cache {preset.value:<7} {blocks.computed:>5}/{scheduled:<5} x{ratio:.2f} fewer")
    print(f"  distilled slot (4 steps, guidance off, no LoRA): {distilled.computed}")
    lossless_names = ("wanserve default", "cfg_batch on", "compile regional", "lossless, all")
    summary = {
        "lossless_speedup": round(median["plain diffusers"] / median["lossless, all"], 3),
        "default_speedup": round(median["plain diffusers"] / median["wanserve default"], 3),
        "max_pixel_diff_lossless": max(diffs[n] for n in lossless_names),
        "cache_block_eval_ratio": round(full / counts[CachePreset.FAST].computed, 3),
        "cache_faster_block_eval_ratio": round(full / counts[CachePreset.FASTER].computed, 3),
        "distilled_eval_ratio": round(full / distilled.computed, 3),
        "medians_s": {name: round(value, 3) for name, value in median.items()},
    }
    if args.json:
        print(json.dumps(summary))


if __name__ == "__main__":
    main()
