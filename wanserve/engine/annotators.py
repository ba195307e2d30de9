"""Annotators: the control videos VACE is steered by, drawn from a source video.

`DepthAnnotator` turns every frame of a clip into a depth map for VACE's depth control
(`video_repainting` with `control_condition: "depth"`). It runs a transformers depth model
(Depth Anything V2 Small by default: `DepthAnythingForDepthEstimation` with its
`DPTImageProcessor`), loaded on first use and kept resident.

Maps are drawn as VACE's depth annotators draw them: the model's relative depth (inverse
depth: larger is nearer) scaled min..max to 0..255, so near is white and far is black, grey
replicated to three channels. VACE scales each frame on its own; here the min and max are
taken over the whole clip, so one distance keeps one shade from frame to frame and the pass
sees no flicker of the depth scale.

Weights, by `EngineConfig.weights`:

    dummy    a tiny Depth Anything (a 4-layer DINOv2 backbone of width 8) with random weights
             from a fixed seed, built offline once under `dummy_root/depth-anything-v1` and
             loaded by the same `from_pretrained` code as real weights
    random   the real Depth Anything V2 Small architecture with random weights, built in
             memory (for timing on hosts without weights, like the Wan models)
    auto     `source`: a local directory, or a hub id (from the cache; downloaded only when
             `allow_download`)

Imports: `errors`, `request`, `weights`, `wan` (device and dtype rules) of the engine.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import transformers
from numpy.typing import NDArray
from transformers import (
    AutoImageProcessor,
    AutoModelForDepthEstimation,
    DepthAnythingConfig,
    DepthAnythingForDepthEstimation,
    Dinov2Config,
    is_torchvision_available,
)

from wanserve.engine.errors import BadInput, Canceled, OutOfMemory, WeightsUnavailable
from wanserve.engine.request import CancelFn, EngineConfig
from wanserve.engine.wan import resolve_device, resolve_dtype
from wanserve.engine.weights import local_checkpoint

log = logging.getLogger(__name__)

DEFAULT_DEPTH_MODEL = "depth-anything/Depth-Anything-V2-Small-hf"
# Bump when the dummy build below changes, so stale cached builds are not reused.
DUMMY_DEPTH_VERSION = 1
DUMMY_DEPTH_NAME = "depth-anything"
BATCH_FRAMES = 8

# Depth Anything's preprocessing (its published `preprocessor_config.json`): the short side
# scaled towards `side` (keeping the aspect ratio, each side a multiple of the 14-pixel
# patch), bicubic, ImageNet statistics.
_PATCH = 14
_MEAN = (0.485, 0.456, 0.406)
_STD = (0.229, 0.224, 0.225)
_REAL_SIDE = 518
_DUMMY_SIDE = 56
# Weight scale of the dummy model: the library's 0.02 makes the tiny net's depth ~1e-8 (zero
# in half precision); 0.2 keeps it near 1.
_DUMMY_INIT = 0.2


def depth_processor(side: int) -> Any:
    """Depth Anything's image processor, resizing towards `side` pixels (torchvision's backend
    where it is installed, else PIL's: the same numbers, saved under the same type)."""
    # By name: even importing `DPTImageProcessor` without torchvision logs a warning.
    name = "DPTImageProcessor" if is_torchvision_available() else "DPTImageProcessorPil"
    return getattr(transformers, name)(
        size={"height": side, "width": side},
        keep_aspect_ratio=True,
        ensure_multiple_of=_PATCH,
        do_pad=False,
        resample=3,  # bicubic
        image_mean=list(_MEAN),
        image_std=list(_STD),
    )


def build_dummy_depth_model() -> tuple[Any, Any]:
    """A tiny Depth Anything model and its processor, in memory, deterministic."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        dinov2: dict[str, Any] = {
            "hidden_size": 8,
            "num_hidden_layers": 4,
            "num_attention_heads": 2,
            "mlp_ratio": 2,
            "image_size": _DUMMY_SIDE,
            "patch_size": _PATCH,
            "out_indices": [1, 2, 3, 4],  # one feature map per layer, for the 4 neck stages
            "reshape_hidden_states": False,
            "initializer_range": _DUMMY_INIT,
        }
        backbone = Dinov2Config(**dinov2)
        config = DepthAnythingConfig(
            backbone_config=backbone,
            patch_size=_PATCH,
            reassemble_hidden_size=8,
            neck_hidden_sizes=[4, 4, 8, 8],
            fusion_hidden_size=8,
            head_hidden_size=4,
            initializer_range=_DUMMY_INIT,
        )
        return DepthAnythingForDepthEstimation(config), depth_processor(_DUMMY_SIDE)


def ensure_dummy_depth_model(root: Path) -> Path:
    """A transformers directory holding the tiny depth model, built on first use. Concurrent
    builders each stage their own copy; the first rename wins and the others discard theirs."""
    target = root / f"{DUMMY_DEPTH_NAME}-v{DUMMY_DEPTH_VERSION}"
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        model, processor = build_dummy_depth_model()
        model.save_pretrained(staging)
        processor.save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "config.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


class DepthAnnotator:
    """Depth maps of video frames, for VACE's depth control (white near, black far, as VACE's
    depth annotator draws them; normalised over the whole clip so the pass sees consistent
    depth). Loads its model on the first call; one call at a time."""

    def __init__(
        self,
        config: EngineConfig,
        source: str = DEFAULT_DEPTH_MODEL,
        *,
        batch_frames: int = BATCH_FRAMES,
    ) -> None:
        if batch_frames < 1:
            raise ValueError("batch_frames must be at least 1")
        self.config = config
        self.source = source
        self.batch_frames = batch_frames
        self.device = resolve_device(config.device)
        # fp32 on a CPU whatever the setting: no fast half precision there.
        self.dtype = (
            torch.float32 if self.device.type == "cpu" else resolve_dtype(config.dtype, self.device)
        )
        self._lock = threading.Lock()
        self._model: Any = None
        self._processor: Any = None

    def __call__(
        self, frames: NDArray[np.uint8], *, should_cancel: CancelFn = lambda: False
    ) -> NDArray[np.uint8]:
        """(n, h, w, 3) uint8 RGB -> (n, h, w, 3) uint8 depth maps (grey in three channels) at
        the same size. Polls `should_cancel` before each batch of frames (raising `Canceled`).
        A clip of one depth throughout (nothing to tell near from far) comes out black."""
        if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
            raise BadInput(f"depth needs (frames, height, width, 3) uint8 RGB, not {frames.shape}")
        n, h, w, _ = frames.shape
        if n == 0:
            return np.zeros_like(frames)
        with self._lock:
            model, processor = self._loaded()
            depth = np.empty((n, h, w), dtype=np.float32)
            try:
                with torch.inference_mode():
                    for start in range(0, n, self.batch_frames):
                        if should_cancel():
                            raise Canceled()
                        batch = frames[start : start + self.batch_frames]
                        pixels = processor(images=list(batch), return_tensors="pt")["pixel_values"]
                        predicted = model(
                            pixel_values=pixels.to(self.device, self.dtype)
                        ).predicted_depth
                        resized = F.interpolate(
                            predicted[:, None].float(),
                            size=(h, w),
                            mode="bilinear",
                            align_corners=False,
                        )[:, 0]
                        depth[start : start + len(batch)] = resized.cpu().numpy()
            except torch.OutOfMemoryError as exc:
                raise OutOfMemory(
                    f"The device ran out of memory estimating depth for {n} frames at {w}x{h}",
                    while_loading=False,
                ) from exc
        gray = _to_gray(depth)
        return np.ascontiguousarray(np.broadcast_to(gray[..., None], (n, h, w, 3)))

    def _loaded(self) -> tuple[Any, Any]:
        if self._model is None:
            self._model, self._processor = self._load()
        return self._model, self._processor

    def _load(self) -> tuple[Any, Any]:
        transformers.utils.logging.disable_progress_bar()
        model: Any
        try:
            if self.config.weights == "random":
                with torch.random.fork_rng(devices=[]):
                    torch.manual_seed(0)
                    model = DepthAnythingForDepthEstimation(DepthAnythingConfig())
                processor = depth_processor(_REAL_SIDE)
                where = "random weights (Depth Anything V2 Small architecture)"
            else:
                location = local_checkpoint(
                    self.config, self.source, dummy=ensure_dummy_depth_model
                )
                model = AutoModelForDepthEstimation.from_pretrained(
                    location, local_files_only=True, dtype=self.dtype
                )
                processor = AutoImageProcessor.from_pretrained(location, local_files_only=True)
                where = str(location)
            model = model.to(self.device, self.dtype).eval()
        except torch.OutOfMemoryError as exc:
            raise OutOfMemory(
                f"The device ran out of memory loading the depth annotator {self.source!r}.",
                while_loading=True,
            ) from exc
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise WeightsUnavailable(
                f"The depth annotator {self.source!r} could not be loaded: {_first_line(exc)}. "
                "Set depth_annotator (WANSERVE_DEPTH_ANNOTATOR) to a local directory of a "
                "transformers depth model, or allow downloads (WANSERVE_ALLOW_DOWNLOAD=true)."
            ) from exc
        log.info("loaded depth annotator %s on %s as %s", where, self.device, self.dtype)
        return model, processor


def _to_gray(depth: NDArray[np.float32]) -> NDArray[np.uint8]:
    """Relative depth (larger: nearer) scaled over the whole clip to 0 (far) .. 255 (near)."""
    low, high = float(depth.min()), float(depth.max())
    if not (np.isfinite(low) and np.isfinite(high) and high > low):  # flat, or broken
        return np.zeros(depth.shape, dtype=np.uint8)
    scaled = (depth - low) * (255.0 / (high - low))
    gray: NDArray[np.uint8] = np.rint(scaled).clip(0, 255).astype(np.uint8)
    return gray


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
