"""diffusers adapters for the Wan families: loading checkpoints and running one generation.

The only module (with `dummy.py`, `random_weights.py` and `dubbing.py`) that imports torch
and diffusers. One way to
run every family (`generate`), with the same argument names for text-, image- and
key-frame-to-video. It takes a `GenerationRequest` and raises `wanserve.engine.errors` only;
torch's own errors (out of memory) are translated here, where they are caught.

Imports: `manager` (the loader seam's types), `request`, `errors`, `families`, `weights`,
`dummy`, `random_weights`, `lora`, `speed` (CFG batching, compilation, attention backend,
caches); never `runner`, which imports this module lazily in `build_runner`.
"""

from __future__ import annotations

import gc
import logging
import math
import types
from collections import OrderedDict
from contextlib import ExitStack
from typing import Any

import diffusers
import numpy as np
import torch
import transformers
from diffusers import AutoencoderKLWan, WanImageToVideoPipeline, WanPipeline, WanVACEPipeline
from diffusers.models.autoencoders.autoencoder_kl_wan import WanRMS_norm, unpatchify
from diffusers.pipelines.wan.pipeline_wan import prompt_clean
from PIL import Image
from transformers import CLIPVisionModel

from wanserve.engine import dummy, random_weights, speed
from wanserve.engine.errors import Canceled, OutOfMemory, WeightsUnavailable
from wanserve.engine.families import FAMILIES, Family, Kind, latent_frames
from wanserve.engine.lora import LoraLibrary
from wanserve.engine.manager import Leased, Prepared
from wanserve.engine.request import (
    CancelFn,
    Clip,
    EngineConfig,
    EngineProgress,
    Frames,
    FrameSink,
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
    for source, settings in config.speed.items():
        if settings.attention is not None:
            try:
                speed.check_attention_backend(settings.attention, device_type=device.type)
            except ValueError as exc:
                raise ValueError(f"checkpoint {source}: {exc}") from exc


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
        # Building dummy weights saves models, which draws tqdm bars on stderr otherwise.
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        if self.config.weights == "random":
            try:
                layout = random_weights.layout_for(source, family)
            except ValueError as exc:
                raise self._unavailable(source, family, exc) from exc
            nbytes = random_weights.parameter_bytes(layout, dtype=self.dtype)
            return Prepared(location=layout, nbytes=nbytes, source=source)
        try:
            directory = local_checkpoint(
                self.config, source, dummy=lambda root: dummy.ensure_checkpoint(family, root)
            )
        except (OSError, ValueError) as exc:
            raise self._unavailable(source, family, exc) from exc
        # A text encoder kept on the CPU does not count against device memory.
        skip = ["text_encoder"] if self.config.text_encoder_device == "cpu" else []
        return Prepared(
            location=directory, nbytes=weight_bytes(directory, skip=skip), source=source
        )

    def load(self, prepared: Prepared, family: Family) -> Any:
        """Load a prepared checkpoint of `family`, or fail with `WeightsUnavailable` (weights
        unreadable) or `OutOfMemory` (the device ran out of memory)."""
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()
        location = prepared.location
        if isinstance(location, random_weights.Layout):
            return self._load_random(location, settings=self.config.speed_for(prepared.source))
        profile = FAMILIES[family]
        cls = (
            WanVACEPipeline
            if profile.composite
            else WanImageToVideoPipeline
            if profile.image_pipeline
            else WanPipeline
        )
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
            settings = self.config.speed_for(prepared.source)
            # Batch 1 serves unguided runs and unbatched CFG; batch 2 the batched CFG.
            warm = (1,) if settings.cfg_batch is speed.CfgBatch.OFF else (1, 2)
            speed.prepare_at_load(pipe, settings, warm_batches=warm)
        except torch.OutOfMemoryError as exc:
            raise OutOfMemory(
                f"The device ran out of memory loading {location} ({family.value}).",
                while_loading=True,
            ) from exc
        except (OSError, ValueError, RuntimeError) as exc:
            raise self._unavailable(str(location), family, exc) from exc
        log.info("loaded %s (%s) on %s as %s", location, family.value, self.device, self.dtype)
        return pipe

    def _load_random(
        self, layout: random_weights.Layout, *, settings: speed.CheckpointSpeed
    ) -> Any:
        """A full-size pipeline of `layout` with random weights, made on the device, with the
        checkpoint's speed-ups applied as for real weights (the reference job times them)."""
        try:
            pipe = random_weights.build_pipeline(layout, device=self.device, dtype=self.dtype)
            self._place(pipe)
            warm = (1,) if settings.cfg_batch is speed.CfgBatch.OFF else (1, 2)
            speed.prepare_at_load(pipe, settings, warm_batches=warm)
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
    on_frames: FrameSink | None = None,
    settings: speed.CheckpointSpeed | None = None,
    lora: LoraLibrary | None = None,
) -> Clip:
    """Run one generation; return uint8 frames (F, H, W, 3) at the denoising size, with the
    transformer block evaluations it took, or, with `on_frames`, hand the frames there as
    each latent frame is decoded and return a clip holding none.

    Streaming decodes the latents here, chunk by chunk, exactly as the VAE's own `decode`
    does (same causal feature cache, same calls, same post-processing), so the frames are
    the same bytes; only the whole float video and the whole uint8 video are never held.
    Where the decode cannot be split in time (spatial tiling decodes each tile over all
    frames; model offload moves the VAE only inside `decode`), the frames go to `on_frames`
    at once after a normal decode.

    `lora` loads and activates the request's adapters (and switches off those of earlier
    runs); without it, a request naming adapters fails with `WeightsUnavailable`.

    Progress: one `DENOISE` event after each step, then one `DECODE` event after each decoder
    call (a latent frame, or one tile of it when tiling): on small GPUs and in dummy mode the
    VAE decode takes minutes, and a bar that stopped at the end of denoising looks hung.
    `should_cancel` is polled after each step and before each decoder call.

    `settings`: the checkpoint's lossless speed-ups (`PipelineRunner` passes the configured
    ones); the request's `cache` preset applies to this run only."""
    pipe = leased.pipeline
    settings = settings or speed.CheckpointSpeed()
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
    transformers = speed.transformers_of(pipe)
    counter = speed.BlockCounter()
    try:
        with torch.inference_mode(), ExitStack() as stack:
            device = pipe._execution_device
            dtype = transformers[0].dtype
            kwargs: dict[str, Any] = {
                # In the transformer's dtype already, so the pipeline's own cast returns these
                # very tensors (batched CFG recognises the passes by them).
                "prompt_embeds": encode_prompt(leased, request.prompt).to(device, dtype),
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
                negative = encode_prompt(leased, request.negative_prompt).to(device, dtype)
                kwargs["negative_prompt_embeds"] = negative
                if _batch_cfg(pipe, request, settings.cfg_batch, device):
                    stack.enter_context(speed.batched_cfg(transformers, negative=negative))
            if pipe.config.boundary_ratio is not None and request.guidance_scale_2 is not None:
                kwargs["guidance_scale_2"] = request.guidance_scale_2
            if isinstance(pipe, WanImageToVideoPipeline):
                # The request checked at construction that its kind has its frames.
                kwargs["image"] = request.first_frame
                if request.last_frame is not None:
                    kwargs["last_image"] = request.last_frame
            if isinstance(pipe, WanVACEPipeline):
                kwargs |= _composite_inputs(request)
            stack.enter_context(
                speed.block_cache(
                    transformers,
                    request.cache,
                    family=request.family,
                    steps=steps,
                    area=request.width * request.height,
                )
            )
            stack.enter_context(
                counter.counting(transformers, per_block=request.cache is not speed.CachePreset.OFF)
            )
            if on_frames is not None and _decodes_in_time(pipe.vae, request):
                latents = pipe(**(kwargs | {"output_type": "latent"})).frames
                # VACE denoises each reference image as a latent frame ahead of the video, and
                # drops them only when it decodes itself.
                latents = latents[:, :, len(request.reference_images) :]
                _decode_streaming(pipe, latents, on_frames)
                result = np.empty((0, request.height, request.width, 3), dtype=np.uint8)
            else:
                video = pipe(**kwargs).frames[0]  # (frames, channels, height, width) in [0, 1]
                result = _to_uint8(video)
                if on_frames is not None:
                    on_frames(np.ascontiguousarray(result))
                    result = result[:0]
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
    return Clip(frames=np.ascontiguousarray(result), fps=request.fps, blocks=counter.result())


def _composite_inputs(request: GenerationRequest) -> dict[str, Any]:
    """VACE's inputs as `WanVACEPipeline` takes them: frames and masks as PIL images (its video
    processor's common form), references as a list; absent ones left out (the pipeline then
    conditions on a blank video and an all-generate mask)."""
    inputs: dict[str, Any] = {"conditioning_scale": request.conditioning_scale}
    if request.video is not None:
        inputs["video"] = [Image.fromarray(frame) for frame in request.video]
    if request.mask is not None:
        inputs["mask"] = [Image.fromarray(frame, mode="L") for frame in request.mask]
    if request.reference_images:
        inputs["reference_images"] = list(request.reference_images)
    return inputs


def _batch_cfg(
    pipe: Any, request: GenerationRequest, mode: speed.CfgBatch, device: torch.device
) -> bool:
    if mode is speed.CfgBatch.OFF or isinstance(pipe, WanVACEPipeline):
        # VACE's context (`control_hidden_states`) would need batching too: not done yet.
        return False
    if mode is speed.CfgBatch.ON:
        return True
    transformer = speed.transformers_of(pipe)[0]
    patch = transformer.config.patch_size
    ratio = int(pipe.vae_scale_factor_spatial)
    tokens = (
        latent_frames(request.num_frames)
        * (request.height // (ratio * patch[1]))
        * (request.width // (ratio * patch[2]))
    )
    return speed.batched_cfg_fits(transformer, tokens=tokens, device=device)


def _to_uint8(video: torch.Tensor) -> Frames:
    """(frames, channels, height, width) in [0, 1] -> uint8 (frames, height, width, 3), the
    rounding done on the device so no float copy reaches the host."""
    frames = video.mul(255).round_().clamp_(0, 255).to(torch.uint8)
    return frames.permute(0, 2, 3, 1).cpu().numpy()


def _decodes_in_time(vae: Any, request: GenerationRequest) -> bool:
    """Whether this decode can run latent frame by latent frame here (see `generate`)."""
    tiled = _decoder_calls(vae, 1, request.height, request.width) > 1
    offloaded = hasattr(vae, "_hf_hook")  # accelerate moves it to the GPU inside `decode`
    return not tiled and not offloaded


def _decode_streaming(pipe: Any, latents: torch.Tensor, on_frames: FrameSink) -> None:
    """The pipeline's latent -> video step (`WanPipeline.__call__` after denoising, and
    `AutoencoderKLWan._decode`), one latent frame at a time: the VAE's decoder is causal and
    carries its state between calls in `_feat_map`, so each call yields that latent frame's
    video frames (1 for the first, then 4) and nothing decoded later changes them."""
    vae = pipe.vae
    config = vae.config
    latents = latents.to(vae.device, dtype=vae.dtype)
    shape = (1, config.z_dim, 1, 1, 1)
    mean = torch.tensor(config.latents_mean).view(shape).to(latents.device, latents.dtype)
    std = 1.0 / torch.tensor(config.latents_std).view(shape).to(latents.device, latents.dtype)
    latents = latents / std + mean
    vae.clear_cache()
    try:
        x = vae.post_quant_conv(latents)
        for i in range(x.shape[2]):
            vae._conv_idx = [0]
            chunk = vae.decoder(
                x[:, :, i : i + 1],
                feat_cache=vae._feat_map,
                feat_idx=vae._conv_idx,
                first_chunk=i == 0,
            )
            if config.patch_size is not None:
                chunk = unpatchify(chunk, patch_size=config.patch_size)
            chunk = torch.clamp(chunk, min=-1.0, max=1.0)
            video = pipe.video_processor.postprocess_video(chunk, output_type="pt")[0]
            on_frames(np.ascontiguousarray(_to_uint8(video)))
    finally:
        vae.clear_cache()


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
