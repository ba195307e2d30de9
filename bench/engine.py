"""Our runner against a plain diffusers call, side by side in one process, same weights.

The job: the Wan2.1-T2V-1.3B transformer layout (30 blocks, 128-wide heads, flow-matching
UniPC) at reduced width, 17 frames at 256*256, classifier-free guidance, random weights saved
once as a diffusers checkpoint. Three configurations load that directory:

* plain diffusers: `WanPipeline.from_pretrained(...)(...)`, stock;
* plain + CPU norm: the same, with the one CPU-only patch our engine applies to the VAE
  (`use_fast_cpu_norms`), so the runner's own overhead can be isolated from it;
* wanserve runner: `PipelineRunner.run` (cached prompt embeddings, progress and cancel hooks,
  uint8 conversion on the device).

Runs rotate through the three after one warm-up each; medians are reported, with two ratios:
runner / (plain + CPU norm) is the runner's overhead; (plain + CPU norm) / plain is the patch.

    python bench/engine.py [--steps 10] [--repeats 3] [--heads 2]
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import diffusers
import numpy as np
import torch
import transformers
from diffusers import AutoencoderKLWan, UniPCMultistepScheduler, WanPipeline, WanTransformer3DModel
from transformers import UMT5Config, UMT5EncoderModel

from wanserve.catalog import Catalog, Family
from wanserve.engine.dummy import build_tokenizer
from wanserve.engine.request import EngineConfig
from wanserve.engine.runner import build_runner
from wanserve.engine.wan import use_fast_cpu_norms
from wanserve.spec import SynthesisRequest, build_spec
from wanserve.workers.inputs import Conditioning
from wanserve.workers.translation import request_for


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
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--heads", type=int, default=2)
    args = parser.parse_args()

    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
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
            width=256,
            height=256,
            gen_width=256,
            gen_height=256,
            num_frames=17,
            duration=1,
        )

        def load_plain(patched: bool) -> WanPipeline:
            pipe = WanPipeline.from_pretrained(ckpt)
            pipe.set_progress_bar_config(disable=True)
            pipe.scheduler = UniPCMultistepScheduler.from_config(
                pipe.scheduler.config, flow_shift=spec.flow_shift
            )
            if patched:
                use_fast_cpu_norms(pipe.vae)
            return pipe

        plain, patched = load_plain(False), load_plain(True)
        runner = build_runner(
            EngineConfig(weights="auto", device="cpu", dummy_root=Path(tmp), allow_download=False)
        )

        def run_plain(pipe: WanPipeline) -> np.ndarray:
            with torch.inference_mode():
                video = pipe(
                    prompt=spec.prompt,
                    negative_prompt=spec.negative_prompt,
                    height=256,
                    width=256,
                    num_frames=17,
                    num_inference_steps=args.steps,
                    guidance_scale=spec.guidance_scale,
                    generator=torch.Generator("cpu").manual_seed(spec.seed),
                    output_type="np",
                ).frames[0]
            return np.asarray((video * 255).round(), dtype=np.uint8)

        def run_ours() -> np.ndarray:
            clip = runner.run(
                request_for(spec, conditioning=Conditioning()),
                on_progress=lambda e: None,
                should_cancel=lambda: False,
            )
            return clip.frames

        configs = {
            "plain diffusers": lambda: run_plain(plain),
            "plain + CPU norm": lambda: run_plain(patched),
            "wanserve runner": run_ours,
        }
        outputs = {name: fn() for name, fn in configs.items()}  # warm-up
        timings: dict[str, list[float]] = {name: [] for name in configs}
        for _ in range(args.repeats):
            for name, fn in configs.items():
                start = time.perf_counter()
                fn()
                timings[name].append(time.perf_counter() - start)

    diff = np.abs(outputs["plain diffusers"].astype(int) - outputs["wanserve runner"].astype(int))
    threads = torch.get_num_threads()
    print(f"job: 17 frames at 256*256, {args.steps} steps with CFG, CPU threads={threads}")
    for name, values in timings.items():
        runs = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:<16} median {statistics.median(values):7.2f} s  runs {runs}")
    median = {name: statistics.median(values) for name, values in timings.items()}
    overhead = median["wanserve runner"] / median["plain + CPU norm"]
    patch = median["plain + CPU norm"] / median["plain diffusers"]
    total = median["wanserve runner"] / median["plain diffusers"]
    for label, value in (
        ("runner overhead, wanserve / (plain + CPU norm)", overhead),
        ("CPU norm patch, (plain + CPU norm) / plain", patch),
        ("end to end, wanserve / plain diffusers", total),
    ):
        print(f"{label:<48} {value:.3f} ({(value - 1) * 100:+.1f}%)")
    print(f"output difference: max {diff.max()} levels, mean {diff.mean():.4f}")


if __name__ == "__main__":
    main()
