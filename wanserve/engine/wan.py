"""diffusers adapters for the Wan families: loading checkpoints and running one generation.

The only module (with `dummy.py`, `random_weights.py` and `dubbing.py`) that imports torch
and diffusers. One way to
run every family (`generate`), with the same argument names for text-, image- and
key-frame-to-video. It takes a `GenerationRequest` and raises `wanserve.engine.errors` only;
torch's own errors (out of memory) are translated here, where they are caught.

Imports: `manager` (the loader seam's types), `request`, `errors`, `families`, `weights`,
`dummy`, `random_weights`, `lora`; never `runner`, which imports this module lazily in
`build_runner`.
"""

from __future__ import annotations

import gc
import logging
import math
import types
from collections import OrderedDict
from typing import Any

import diffusers
import numpy as np
import torch
import transformers
from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline
from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from transformers import CLIPVisionModel

from wanserve.engine import dummy, random_weights
from wanserve.engine.errors import Canceled, OutOfMemory, WeightsUnavailable
from wanserve.engine.families import FAMILIES, Family, Kind, latent_frames
from wanserve.engine.lora import LoraLibrary
from wanserve.engine.manager import Leased, Prepared
from wanserve.engine.request import (
    CancelFn,
    EngineConfig,
    EngineProgress,
    Frames,
    GenerationRequest,
    ProgressFn,
    Stage,
)
from wanserve.engine.weights import local_checkpoint, weight_bytes

log = logging.getLogger(__name__)

_MAX_SEQUENCE_LENGTH = 512  # UMT5 context the Wan checkpoints were trained with
_PROMPT_CACHE_SIZE = 32
_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        # bf16 on accelerators; fp32 on CPU, which has no fast bf16 here (3.5x slower, measured).
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[name]


def check_config(config: EngineConfig) -> None:
    """Refuse engine settings this machine cannot honour, at start-up rather than per task."""
    device = resolve_device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {config.device!r} requested but CUDA is not available")
    if config.cpu_offload and device.type != "cuda":
        raise ValueError("cpu_offload moves models between a GPU and the CPU; it needs device cuda")
    if config.dtype not in ("auto", *_DTYPES):
        raise ValueError(f"unknown dtype {config.dtype!r}")
    if config.text_encoder_device not in ("auto", "cpu"):
        raise ValueError("text_encoder_device must be 'auto' or 'cpu'")


class WanLoader:
    """`CheckpointLoader` for Wan checkpoints in diffusers format (or their dummy builds)."""

    def __init__(self, config: EngineConfig) -> None:
        check_config(config)
        self.config = config
        self.device = resolve_device(config.device)
        self.dtype = resolve_dtype(config.dtype, self.device)

    def budget_bytes(self) -> int | None:
        """The configured model memory budget, or 90% of the GPU's memory; none on a CPU."""
        if self.config.memory_budget_bytes is not None:
            return self.config.memory_budget_bytes
        if self.device.type == "cuda":
            _free, total = torch.cuda.mem_get_info(self.device)
            return int(total * 0.9)
        return None

    def prepare(self, source: str, family: Family) -> Prepared:
        if self.config.weights == "random":
            try:
                layout = random_weights.layout_for(source, family)
            except ValueError as exc:
                raise self._unavailable(source, family, exc) from exc
            nbytes = random_weights.parameter_bytes(layout, dtype=self.dtype)
            return Prepared(location=layout, nbytes=nbytes)
        try:
            directory = local_checkpoint(
                self.config, source, dummy=lambda root: dummy.ensure_checkpoint(family, root)
            )
        except (OSError, ValueError) as exc:
            raise self._unavailable(source, family, exc) from exc
        # A text encoder kept on the CPU does not count against device memory.
        skip = ["text_encoder"] if self.config.text_encoder_device == "cpu" else []
        return Prepared(location=directory, nbytes=weight_bytes(directory, skip=skip))

    def load(self, prepared: Prepared, family: Family) -> Any:
        """Load a prepared checkpoint of `family`, or fail with `WeightsUnavailable` (weights
        unreadable) or `OutOfMemory` (the device ran out of memory)."""
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        location = prepared.location
        if isinstance(location, random_weights.Layout):
            return self._load_random(location)
        profile = FAMILIES[family]
        cls = WanImageToVideoPipeline if profile.image_pipeline else WanPipeline
        common: dict[str, Any] = {"local_files_only": True}
        try:
            # The Wan VAE and CLIP encoder stay in fp32 whatever the transformer runs in
            # (diffusers' Wan guidance: they lose quality in half precision).
            extra: dict[str, Any] = {
                "vae": AutoencoderKLWan.from_pretrained(
                    location, subfolder="vae", dtype=torch.float32, **common
                )
            }
            if profile.clip:
                extra["image_encoder"] = CLIPVisionModel.from_pretrained(
                    location, subfolder="image_encoder", dtype=torch.float32, **common
                )
            pipe = cls.from_pretrained(location, dtype=self.dtype, **extra, **common)
            self._repair_config(pipe, family)
            self._place(pipe)
        except torch.OutOfMemoryError as exc:
            raise OutOfMemory(
                f"The device ran out of memory loading {location} ({family.value}).",
                while_loading=True,
            ) from exc
        except (OSError, ValueError, RuntimeError) as exc:
            raise self._unavailable(str(location), family, exc) from exc
        log.info("loaded %s (%s) on %s as %s", location, family.value, self.device, self.dtype)
        return pipe

    def _load_random(self, layout: random_weights.Layout) -> Any:
        """A full-size pipeline of `layout` with random weights, made on the device."""
        try:
            pipe = random_weights.build_pipeline(layout, device=self.device, dtype=self.dtype)
            self._place(pipe)
        except torch.OutOfMemoryError as exc:
            raise OutOfMemory(
                f"The device ran out of memory building {layout.family.value} with random weights.",
                while_loading=True,
            ) from exc
        log.info("built %s with random weights on %s as %s", layout, self.device, self.dtype)
        return pipe

    def _unavailable(self, source: str, family: Family, exc: BaseException) -> WeightsUnavailable:
        return WeightsUnavailable(
            f"Weights for checkpoint {source!r} ({family.value}) could not be loaded: "
            f"{_first_line(exc)}. Point the model at a local diffusers-format directory "
            'with WANSERVE_MODELS=\'{"<model>": {"checkpoint": "/path/to/dir"}}\', '
            "allow downloads (WANSERVE_ALLOW_DOWNLOAD=true), or run with --weights dummy. "
            "See docs/models.md."
        )

    def _repair_config(self, pipe: Any, family: Family) -> None:
        """Pipeline settings a checkpoint's model_index.json may lack for its family."""
        if family is Family.WAN22_TI2V_5B and not pipe.config.expand_timesteps:
            pipe.register_to_config(expand_timesteps=True)
        boundary = FAMILIES[family].boundary_ratio
        if boundary is not None and pipe.config.boundary_ratio is None:
            # Without it the second expert (transformer_2) would silently never run.
            pipe.register_to_config(boundary_ratio=boundary)

    def _place(self, pipe: Any) -> None:
        pipe.set_progress_bar_config(disable=True)
        if self.config.cpu_offload:
            # Each model moves to the GPU only while it runs (diffusers' model offload).
            pipe.enable_model_cpu_offload(device=self.device)
        elif self.config.text_encoder_device == "cpu":
            # UMT5-XXL is ~11 GB in bf16 and runs once per prompt (its embeddings are cached):
            # it stays in host memory and never visits the GPU, not even while loading.
            for name, component in pipe.components.items():
                if isinstance(component, torch.nn.Module) and name != "text_encoder":
                    component.to(self.device)
        else:
            pipe.to(self.device)
        if self.config.vae_tiling:
            pipe.vae.enable_tiling()
        if self.device.type == "cpu":
            use_fast_cpu_norms(pipe.vae)

    def view(self, base: Any, family: Family, kind: Kind) -> Any:
        if family is Family.WAN22_TI2V_5B and kind is not Kind.TEXT_TO_VIDEO:
            # TI2V-5B serves both kinds from one set of weights; only the pipeline differs.
            parts = {k: v for k, v in base.components.items() if k != "transformer_2"}
            view: Any = WanImageToVideoPipeline(
                **(parts | {"image_encoder": None, "image_processor": None}),
                transformer_2=None,
                boundary_ratio=None,
                expand_timesteps=True,
            )
            view.set_progress_bar_config(disable=True)
            return view
        return base

    def nbytes(self, base: Any) -> int:
        """Bytes of weights on this loader's device (a text encoder kept on the CPU, or
        models offloaded between runs, do not count)."""
        total = 0
        for component in base.components.values():
            if isinstance(component, torch.nn.Module):
                for tensor in (*component.parameters(), *component.buffers()):
                    if tensor.device.type == self.device.type:
                        total += tensor.numel() * tensor.element_size()
        return total

    def release(self) -> None:
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


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


def encode_prompt(leased: Leased, text: str) -> torch.Tensor:
    """UMT5 embeddings of `text` on the text encoder's device, cached per checkpoint (the
    default negative prompt is the same for most requests)."""
    cache: OrderedDict[str, torch.Tensor] = leased.cache.setdefault("prompts", OrderedDict())
    hit = cache.get(text)
    if hit is not None:
        cache.move_to_end(text)
        return hit
    pipe = leased.pipeline
    # The pipeline pads every prompt to 512 tokens and then zeroes the embeddings past the
    # prompt's own tokens; running UMT5 over the prompt's tokens only and zero-padding after
    # gives the same embeddings (padding is masked out of attention) for a fraction of the
    # work: 60 ms against 5 ms per new prompt with the dummy encoder on this machine's CPU,
    # most of the warm path to the first step (docs/performance.md).
    tokens = len(
        pipe.tokenizer(
            prompt_clean(text), max_length=_MAX_SEQUENCE_LENGTH, truncation=True
        ).input_ids
    )
    own = pipe._get_t5_prompt_embeds(
        prompt=text, max_sequence_length=tokens, device=pipe.text_encoder.device
    )
    embeds = torch.nn.functional.pad(own, (0, 0, 0, _MAX_SEQUENCE_LENGTH - own.shape[1]))
    cache[text] = embeds
    while len(cache) > _PROMPT_CACHE_SIZE:
        cache.popitem(last=False)
    return embeds


def generate(
    leased: Leased,
    request: GenerationRequest,
    *,
    on_progress: ProgressFn,
    should_cancel: CancelFn,
    lora: LoraLibrary | None = None,
) -> Frames:
    """Run one generation; return uint8 frames (F, H, W, 3) at the denoising size.

    `lora` loads and activates the request's adapters (and switches off those of earlier
    runs); without it, a request naming adapters fails with `WeightsUnavailable`.

    Progress: one `DENOISE` event after each step, then one `DECODE` event after each decoder
    call (a latent frame, or one tile of it when tiling): on small GPUs and in dummy mode the
    VAE decode takes minutes, and a bar that stopped at the end of denoising looks hung.
    `should_cancel` is polled after each step and before each decoder call."""
    pipe = leased.pipeline
    if lora is not None:
        lora.apply(leased, request.adapters)
    elif request.adapters:
        raise WeightsUnavailable("LoRA adapters are not configured on this worker (lora_dir).")
    _set_flow_shift(pipe, request.flow_shift)
    steps = request.steps
    decoder_calls = _decoder_calls(
        pipe.vae, latent_frames(request.num_frames), request.height, request.width
    )
    decoded = 0

    def on_step_end(_pipe: Any, i: int, _t: Any, _kwargs: dict[str, Any]) -> dict[str, Any]:
        on_progress(EngineProgress(Stage.DENOISE, i + 1, steps))
        if should_cancel():
            raise Canceled()
        return {}

    def before_decoder_call(_module: Any, _args: Any) -> None:
        if should_cancel():
            raise Canceled()

    def after_decoder_call(_module: Any, _args: Any, _output: Any) -> None:
        # Reported once the chunk is decoded, so "k of n" means k chunks are done.
        nonlocal decoded
        decoded += 1
        on_progress(EngineProgress(Stage.DECODE, min(decoded, decoder_calls), decoder_calls))

    hooks = [
        pipe.vae.decoder.register_forward_pre_hook(before_decoder_call),
        pipe.vae.decoder.register_forward_hook(after_decoder_call),
    ]
    try:
        with torch.inference_mode():
            device = pipe._execution_device
            kwargs: dict[str, Any] = {
                "prompt_embeds": encode_prompt(leased, request.prompt).to(device),
                "height": request.height,
                "width": request.width,
                "num_frames": request.num_frames,
                "num_inference_steps": steps,
                "guidance_scale": request.guidance_scale,
                # Latents are drawn on the CPU so a seed gives the same video on any device.
                "generator": torch.Generator("cpu").manual_seed(request.seed),
                "max_sequence_length": _MAX_SEQUENCE_LENGTH,
                "output_type": "pt",  # converted to uint8 on the device: no float copy on host
                "callback_on_step_end": on_step_end,
            }
            if request.guidance_scale > 1.0:
                kwargs["negative_prompt_embeds"] = encode_prompt(
                    leased, request.negative_prompt
                ).to(device)
            if pipe.config.boundary_ratio is not None and request.guidance_scale_2 is not None:
                kwargs["guidance_scale_2"] = request.guidance_scale_2
            if isinstance(pipe, WanImageToVideoPipeline):
                # The request checked at construction that its kind has its frames.
                kwargs["image"] = request.first_frame
                if request.last_frame is not None:
                    kwargs["last_image"] = request.last_frame
            video = pipe(**kwargs).frames[0]  # (frames, channels, height, width) in [0, 1]
            frames = video.mul(255).round_().clamp_(0, 255).to(torch.uint8)
            result = frames.permute(0, 2, 3, 1).cpu().numpy()
    except torch.OutOfMemoryError as exc:
        raise OutOfMemory(
            f"The device ran out of memory generating {request.num_frames} frames at "
            f"{request.width}x{request.height}",
            while_loading=False,
        ) from exc
    finally:
        for hook in hooks:
            hook.remove()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return np.ascontiguousarray(result)


def _decoder_calls(vae: Any, latent_frames: int, height: int, width: int) -> int:
    """How many times the VAE decoder runs: once per latent frame, per tile when tiling."""
    ratio = int(vae.spatial_compression_ratio)
    lat_h, lat_w = height // ratio, width // ratio
    tiled = bool(vae.use_tiling) and (
        lat_h > vae.tile_sample_min_height // ratio or lat_w > vae.tile_sample_min_width // ratio
    )
    if not tiled:
        return latent_frames
    stride_h = int(vae.tile_sample_stride_height) // ratio
    stride_w = int(vae.tile_sample_stride_width) // ratio
    return math.ceil(lat_h / stride_h) * math.ceil(lat_w / stride_w) * latent_frames


def _set_flow_shift(pipe: Any, shift: float | None) -> None:
    if shift is None:
        return
    config = pipe.scheduler.config
    key = "flow_shift" if "flow_shift" in config else "shift" if "shift" in config else None
    if key is None or config[key] == shift:
        return
    pipe.scheduler = type(pipe.scheduler).from_config(config, **{key: shift})
