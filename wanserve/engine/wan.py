"""diffusers adapters for the Wan families: loading checkpoints and running one generation.

The only module that imports torch and diffusers. One way to run every family
(`generate`), with the same argument names for text- and image-to-video.
"""

from __future__ import annotations

import logging
import types
from pathlib import Path
from typing import Any

import diffusers
import numpy as np
import torch
import transformers
from diffusers import (
    AutoencoderKLWan,
    WanImageToVideoPipeline,
    WanPipeline,
)
from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm
from transformers import CLIPVisionModel

from wanserve.catalog import Family, Kind
from wanserve.engine import dummy
from wanserve.engine.runner import (
    CancelFn,
    Conditioning,
    EngineConfig,
    EngineProgress,
    Frames,
    GenerationCancelled,
    ProgressFn,
)
from wanserve.errors import InternalError, ModelUnavailable
from wanserve.spec import GenerationSpec

log = logging.getLogger(__name__)

_IMAGE_FAMILIES = {Family.WAN21_I2V, Family.WAN22_I2V_A14B, Family.WAN21_FLF2V}
_CLIP_FAMILIES = {Family.WAN21_I2V, Family.WAN21_FLF2V}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def load_pipeline(source: str, family: Family, kind: Kind, *, config: EngineConfig) -> Any:
    """Load the pipeline serving `kind` requests from checkpoint `source` of `family`.

    `source` is a diffusers-format directory or a hub id (dummy mode ignores it and loads the
    tiny build of `family`). Fails with `ModelUnavailable` saying how to configure weights.
    """
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    device = resolve_device(config.device)
    # bf16 on accelerators; fp32 on CPU, which has no fast bf16 here (3.5x slower, measured).
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    if config.weights == "dummy":
        location: str | Path = dummy.ensure_checkpoint(family, config.dummy_root)
        local_only = True
    else:
        path = Path(source).expanduser()
        location = path if path.is_dir() else source
        local_only = path.is_dir() or not config.allow_download
    common: dict[str, Any] = {"local_files_only": local_only}
    if config.hf_cache_dir is not None:
        common["cache_dir"] = str(config.hf_cache_dir)
    cls = _pipeline_class(family, kind)
    try:
        # The Wan VAE and CLIP encoder stay in fp32 whatever the transformer runs in
        # (diffusers' Wan guidance: they lose quality in half precision).
        extra: dict[str, Any] = {
            "vae": AutoencoderKLWan.from_pretrained(
                location, subfolder="vae", dtype=torch.float32, **common
            )
        }
        if family in _CLIP_FAMILIES:
            extra["image_encoder"] = CLIPVisionModel.from_pretrained(
                location, subfolder="image_encoder", dtype=torch.float32, **common
            )
        pipe = cls.from_pretrained(location, dtype=dtype, **extra, **common)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ModelUnavailable(
            f"Weights for checkpoint {source!r} ({family.value}) could not be loaded: "
            f"{_first_line(exc)}. Point the model at a local diffusers-format directory with "
            'WANSERVE_MODELS=\'{"<model>": {"checkpoint": "/path/to/dir"}}\', allow '
            "downloads (WANSERVE_ALLOW_DOWNLOAD=true), or run with --weights dummy. "
            "See docs/models.md."
        ) from exc
    if family is Family.WAN22_TI2V_5B and not pipe.config.expand_timesteps:
        pipe.register_to_config(expand_timesteps=True)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    if device.type == "cpu":
        use_fast_cpu_norms(pipe.vae)
    log.info("loaded %s (%s, %s) on %s", source, family.value, kind.value, device)
    return pipe


def _pipeline_class(family: Family, kind: Kind) -> Any:
    if family in _IMAGE_FAMILIES or (
        family is Family.WAN22_TI2V_5B and kind is not Kind.TEXT_TO_VIDEO
    ):
        return WanImageToVideoPipeline
    return WanPipeline


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def use_fast_cpu_norms(vae: torch.nn.Module) -> int:
    """Swap the VAE's channel RMS norm for the same arithmetic without `F.normalize`.

    On CPU, `F.normalize(x, dim=1)` over channels-first video tensors is a pathological
    reduction (0.23 s against 0.006 s for x / ||x|| written out, at 3x482x834x3; measured):
    it was half of the tiny VAE's decode time. The result equals F.normalize's up to float
    rounding (checked by the fidelity test). Returns how many layers were changed.
    """
    changed = 0
    for module in vae.modules():
        if isinstance(module, WanRMS_norm) and module.channel_first:
            module.forward = types.MethodType(_rms_norm_channels_first, module)  # type: ignore[method-assign]
            changed += 1
    return changed


def _rms_norm_channels_first(self: WanRMS_norm, x: torch.Tensor) -> torch.Tensor:
    xf = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
    norm = xf.pow(2).sum(dim=1, keepdim=True).sqrt_().clamp_min_(1e-12)
    normalized = (xf / norm).to(x.dtype)
    return normalized * self.scale * self.gamma + self.bias  # type: ignore[no-any-return]


def generate(
    pipe: Any,
    spec: GenerationSpec,
    *,
    conditioning: Conditioning,
    on_progress: ProgressFn,
    should_cancel: CancelFn,
) -> Frames:
    """Run one generation on `pipe`; return uint8 frames (F, H, W, 3) at the denoising size."""
    if spec.gen_width is None or spec.gen_height is None:
        raise ValueError("spec has no size yet (image-to-video specs are sized by the worker)")
    _set_flow_shift(pipe, spec.flow_shift)
    steps = spec.steps

    def on_step_end(_pipe: Any, i: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
        on_progress(EngineProgress("denoise", i + 1, steps))
        if should_cancel():
            raise GenerationCancelled()
        return {}

    latent_frames = (spec.num_frames - 1) // 4 + 1
    decoded = 0

    def on_decode_frame(_module: Any, _args: Any) -> None:
        nonlocal decoded
        if should_cancel():
            raise GenerationCancelled()
        decoded += 1
        on_progress(EngineProgress("decode", decoded, latent_frames))

    kwargs: dict[str, Any] = {
        "prompt": spec.prompt,
        "negative_prompt": spec.negative_prompt,
        "height": spec.gen_height,
        "width": spec.gen_width,
        "num_frames": spec.num_frames,
        "num_inference_steps": steps,
        "guidance_scale": spec.guidance_scale,
        # Latents are drawn on the CPU so a seed gives the same video on any device.
        "generator": torch.Generator("cpu").manual_seed(spec.seed),
        "output_type": "np",
        "callback_on_step_end": on_step_end,
    }
    if pipe.config.boundary_ratio is not None and spec.guidance_scale_2 is not None:
        kwargs["guidance_scale_2"] = spec.guidance_scale_2
    if isinstance(pipe, WanImageToVideoPipeline):
        if conditioning.image is None:
            raise InternalError(f"{spec.model} needs a first-frame image and none was resolved")
        kwargs["image"] = conditioning.image
        if conditioning.last_image is not None:
            kwargs["last_image"] = conditioning.last_image
    hook = pipe.vae.decoder.register_forward_pre_hook(on_decode_frame)
    try:
        with torch.inference_mode():
            video = pipe(**kwargs).frames[0]
    except torch.OutOfMemoryError as exc:
        raise InternalError(
            f"The device ran out of memory generating {spec.num_frames} frames at "
            f"{spec.gen_width}x{spec.gen_height}. Try a shorter duration or a lower "
            "resolution; operators can enable CPU offload or VAE tiling."
        ) from exc
    finally:
        hook.remove()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return np.asarray((video * 255).round().clip(0, 255), dtype=np.uint8)


def _set_flow_shift(pipe: Any, shift: float | None) -> None:
    if shift is None:
        return
    config = pipe.scheduler.config
    key = "flow_shift" if "flow_shift" in config else "shift" if "shift" in config else None
    if key is None or config[key] == shift:
        return
    pipe.scheduler = type(pipe.scheduler).from_config(config, **{key: shift})
