"""Decode then encode, or encode while decoding: time and peak memory of the last stage of a
generation, from latents to the finished MP4.

Runs one wan2.1-t2v-turbo video (832*480, 81 native frames at 16 fps, 150 encoded at 30 fps,
watermarked) on the dummy checkpoint twice, each in a fresh process, the model loaded first:

- `whole`: what the worker did before: the VAE decodes the whole video (a float tensor),
  it becomes one uint8 array, and only then is the MP4 written (`runner.run`, then
  `output_frames` and `encode_mp4`);
- `stream`: what it does now: frames go from each decoded latent frame through the timeline
  to the encoder (`render(..., on_frames=...)` into `Timeline` and `Mp4Writer`, as
  `workers/execute.py` does).

For each it prints the wall time of the generation (denoising included: 1 step by default,
so decoding and encoding dominate), the peak resident memory above the loaded model (sampled
every 5 ms from /proc), and the MP4's SHA-256: the two must be the same bytes.

    python bench/decode_encode.py [--steps N] [--size 832*480]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--size", default="832*480")
    parser.add_argument("--mode", choices=["whole", "stream"], help=argparse.SUPPRESS)
    parser.add_argument("--dummy-root", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(_measure(args.mode, args.steps, args.size, Path(args.dummy_root))))
        return 0
    print(f"wan2.1-t2v-turbo {args.size}, 5 s, {args.steps} step(s), dummy weights, CPU")
    with tempfile.TemporaryDirectory() as root:
        results = {}
        for mode in ("whole", "stream"):
            command = [sys.executable, __file__, "--mode", mode, "--steps", str(args.steps)]
            out = subprocess.run(
                [*command, "--size", args.size, "--dummy-root", root],
                check=True,
                capture_output=True,
                text=True,
                timeout=1800,
            ).stdout
            results[mode] = json.loads(out.strip().splitlines()[-1])
            r = results[mode]
            print(
                f"  {mode:6}: {r['seconds']:6.1f} s   peak RSS above the loaded model "
                f"{r['peak_mib']:6.0f} MiB   {r['frames']} frames   sha256 {r['sha256'][:16]}"
            )
    same = results["whole"]["sha256"] == results["stream"]["sha256"]
    print(f"  same MP4 bytes: {'yes' if same else 'NO'}")
    return 0 if same else 1


def _measure(mode: str, steps: int, size: str, dummy_root: Path) -> dict[str, object]:
    from wanserve import request as read
    from wanserve.catalog import Catalog
    from wanserve.engine.request import EngineConfig
    from wanserve.engine.runner import build_runner
    from wanserve.media.video import (
        EncodeSettings,
        Mp4Writer,
        Timeline,
        encode_mp4,
        output_frames,
    )
    from wanserve.media.watermark import Watermark
    from wanserve.request import SynthesisRequest
    from wanserve.spec import build_spec
    from wanserve.workers.compose import native_frames, render
    from wanserve.workers.inputs import Conditioning
    from wanserve.workers.translation import request_for

    card = Catalog.build(steps=steps).get("wan2.1-t2v-turbo")
    spec = build_spec(
        SynthesisRequest(
            model=card.name, prompt="a cat", seed=5, size=read.size(size), watermark=True
        ),
        card,
    )
    spec = dataclasses.replace(spec, steps=steps)
    runner = build_runner(EngineConfig(weights="dummy", device="cpu", dummy_root=dummy_root))
    with runner.manager.lease(spec.checkpoint, spec.family, spec.kind):
        pass  # loaded (built on first use) before anything is measured
    width, height = spec.size.width, spec.size.height
    settings = EncodeSettings()
    sampler = _PeakRss()
    path = dummy_root / f"{mode}.mp4"
    started = time.monotonic()
    with sampler:
        if mode == "whole":
            clip = runner.run(
                request_for(spec, conditioning=Conditioning()),
                on_progress=lambda _e: None,
                should_cancel=lambda: False,
            )
            frames = output_frames(
                clip.frames,
                source_fps=clip.fps,
                width=width,
                height=height,
                fps=spec.fps,
                duration=spec.duration,
                decorate=Watermark(width, height),
            )
            written = encode_mp4(
                frames, path, width=width, height=height, fps=spec.fps, settings=settings
            )
        else:
            timeline = Timeline(
                native_frames(spec),
                source_fps=spec.native_fps,
                width=width,
                height=height,
                fps=spec.fps,
                duration=spec.duration,
                decorate=Watermark(width, height),
            )
            with Mp4Writer(
                path, width=width, height=height, fps=spec.fps, settings=settings
            ) as writer:
                render(
                    spec,
                    runner=runner,
                    conditioning=Conditioning(),
                    shots=None,
                    on_progress=lambda _e: None,
                    should_cancel=lambda: False,
                    on_frames=lambda chunk: writer.write(timeline.feed(chunk)),
                )
            written = writer.written
    return {
        "seconds": time.monotonic() - started,
        "peak_mib": (sampler.peak - sampler.base) / 2**20,
        "frames": written,
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }


class _PeakRss:
    """The highest resident set size seen while the block runs, and the size at its start."""

    def __init__(self) -> None:
        self.base = self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> _PeakRss:
        self.base = self.peak = _rss()
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss())

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss())


def _rss() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


if __name__ == "__main__":
    sys.exit(main())
