"""Speed machinery for the Wan transformer: batched classifier-free guidance, regional
compilation, the attention backend, block caches, and the block-evaluation count.

Two kinds of settings, per model (the catalogue's `ModelOverride`) and, for the cache, per
request:

* lossless (`CheckpointSpeed`, fixed when a checkpoint loads): `cfg_batch` runs the
  conditional and unconditional passes as one batch-2 forward; `compile` compiles the repeated
  transformer block with `torch.compile` at load; `attention` picks diffusers' attention
  backend. Output equals plain diffusers' within float rounding (one 8-bit level: the fidelity
  tests in tests/engine/test_speed.py).
* lossy (`CachePreset`, per run): diffusers' MagCache where published per-checkpoint magnitude
  ratios exist (Wan2.1 T2V-1.3B/14B, I2V-14B 480P/720P layouts), FirstBlockCache elsewhere.
  Why these two, and their quality evidence: docs/performance.md.

The option values themselves live in the torch-free `engine/options.py` (the catalogue and
the spec name them) and are re-exported here. Importing this module does not import torch
either: the functions that touch models import torch and diffusers locally; only `wan` calls
them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from wanserve.engine.families import Family, is_low_resolution
from wanserve.engine.options import BlockCount as BlockCount
from wanserve.engine.options import CachePreset as CachePreset
from wanserve.engine.options import CfgBatch as CfgBatch
from wanserve.engine.options import CheckpointSpeed as CheckpointSpeed
from wanserve.engine.options import CompileMode as CompileMode

log = logging.getLogger(__name__)


# Backends that run on a CPU; every other diffusers backend needs CUDA (or an NPU/TPU).
CPU_ATTENTION_BACKENDS = frozenset({"native", "_native_math", "_native_efficient", "flex"})


@dataclass(frozen=True)
class MagPreset:
    threshold: float
    max_skip_steps: int
    retention_ratio: float


# MagCache's published settings (Zehong-Ma/MagCache, MagCache4Wan2.1/README.md): E012K2R02
# took Wan2.1 T2V-1.3B 480P from ~189 s to ~87 s, E012K4R02 to ~68 s (A800).
MAG_PRESETS: Mapping[CachePreset, MagPreset] = {
    CachePreset.FAST: MagPreset(threshold=0.12, max_skip_steps=2, retention_ratio=0.2),
    CachePreset.FASTER: MagPreset(threshold=0.12, max_skip_steps=4, retention_ratio=0.2),
}
# FirstBlockCache thresholds: diffusers' default (0.05) and twice it. No Wan-specific quality
# figures are published for them; they serve checkpoints MagCache has no calibration for.
FBC_THRESHOLDS: Mapping[CachePreset, float] = {CachePreset.FAST: 0.05, CachePreset.FASTER: 0.1}

# Magnitude ratios of the conditional pass per step (50 steps, UniPC), calibrated by the
# MagCache authors on the official checkpoints (MagCache4Wan2.1/magcache_generate.py; the
# leading 1.0 is their padding for the first step). Keyed by (family, transformer layers,
# large-area, i.e. above 480P: `families.is_low_resolution`): the ratios belong to a
# checkpoint, which the layout identifies among the published ones; I2V has one set per
# resolution.
_T2V_1_3B = (
    1.0, 1.0124, 1.00166, 0.99791, 0.99682, 0.99634, 0.99567, 0.99416, 0.99578, 0.9957,
    0.99511, 0.99535, 0.99552, 0.99541, 0.9954, 0.99489, 0.99518, 0.99484, 0.99481, 0.99415,
    0.99419, 0.99396, 0.99388, 0.99349, 0.99309, 0.9927, 0.99228, 0.99171, 0.99137, 0.99068,
    0.99005, 0.98944, 0.98849, 0.98758, 0.98644, 0.98504, 0.9836, 0.98202, 0.97977, 0.97717,
    0.9741, 0.97003, 0.96538, 0.9593, 0.95086, 0.94013, 0.92402, 0.90241, 0.86821, 0.81838,
)  # fmt: skip
_T2V_14B = (
    1.0, 1.02504, 1.00025, 0.9985, 0.99779, 0.9966, 0.99482, 0.99467, 0.99664, 0.99434,
    0.99533, 0.99468, 0.99438, 0.99516, 0.99384, 0.99404, 0.99517, 0.99409, 0.99428, 0.99347,
    0.99418, 0.99271, 0.99313, 0.99215, 0.99218, 0.99216, 0.99163, 0.99138, 0.98982, 0.98996,
    0.9887, 0.98772, 0.98767, 0.98573, 0.98501, 0.9838, 0.98177, 0.98037, 0.97678, 0.97546,
    0.97184, 0.96711, 0.96349, 0.95629, 0.94926, 0.93964, 0.92511, 0.90693, 0.8796, 0.86111,
)  # fmt: skip
_I2V_480P = (
    1.0, 0.98783, 0.97559, 0.98311, 0.98202, 0.9888, 0.98762, 0.98957, 0.99052, 0.99383,
    0.98857, 0.99065, 0.98845, 0.99057, 0.98957, 0.98601, 0.98823, 0.98756, 0.98808, 0.98721,
    0.98571, 0.98543, 0.98157, 0.98411, 0.97952, 0.98149, 0.9774, 0.97825, 0.97355, 0.97085,
    0.97056, 0.96588, 0.96113, 0.9567, 0.94961, 0.93973, 0.93217, 0.91878, 0.90955, 0.92617,
)  # fmt: skip
_I2V_720P = (
    1.0, 0.99428, 0.98588, 0.98273, 0.99018, 0.98911, 0.98646, 0.99454, 0.9891, 0.99124,
    0.99102, 0.99215, 0.99515, 0.99576, 0.99068, 0.99097, 0.99166, 0.99041, 0.99201, 0.99101,
    0.98599, 0.98845, 0.98848, 0.98862, 0.98718, 0.98497, 0.98264, 0.98389, 0.97938, 0.97535,
    0.97498, 0.973, 0.96827, 0.96261, 0.95335, 0.94649, 0.93397, 0.91636, 0.89088, 0.8679,
)  # fmt: skip
MAG_RATIOS: Mapping[tuple[Family, int, bool], tuple[float, ...]] = {
    (Family.WAN21_T2V, 30, False): _T2V_1_3B,
    (Family.WAN21_T2V, 30, True): _T2V_1_3B,
    (Family.WAN21_T2V, 40, False): _T2V_14B,
    (Family.WAN21_T2V, 40, True): _T2V_14B,
    (Family.WAN21_I2V, 40, False): _I2V_480P,
    (Family.WAN21_I2V, 40, True): _I2V_720P,
}


def mag_ratios_for(family: Family, *, layers: int, area: int) -> tuple[float, ...] | None:
    """Published MagCache ratios for a checkpoint of `family` with `layers` blocks generating
    `area` pixels, or None (FirstBlockCache is used then)."""
    return MAG_RATIOS.get((family, layers, not is_low_resolution(area)))


def check_attention_backend(name: str, *, device_type: str) -> None:
    """Refuse an attention backend this process cannot run, at start-up (ValueError)."""
    from diffusers.models.attention_dispatch import (
        AttentionBackendName,
        _check_attention_backend_requirements,
    )

    known = {b.value for b in AttentionBackendName}
    if name not in known:
        raise ValueError(
            f"unknown attention backend {name!r}; diffusers knows: {', '.join(sorted(known))}"
        )
    if device_type == "cpu" and name not in CPU_ATTENTION_BACKENDS:
        raise ValueError(
            f"attention backend {name!r} needs a GPU; on a CPU use one of "
            f"{', '.join(sorted(CPU_ATTENTION_BACKENDS))} (native is the fastest, measured)"
        )
    try:
        _check_attention_backend_requirements(AttentionBackendName(name))
    except (RuntimeError, ImportError) as exc:
        raise ValueError(f"attention backend {name!r} is unavailable: {exc}") from exc


def transformers_of(pipe: Any) -> list[Any]:
    """The pipeline's denoisers: `transformer`, and Wan2.2's second expert when present."""
    return [m for m in (pipe.transformer, getattr(pipe, "transformer_2", None)) if m is not None]


def prepare_at_load(pipe: Any, speed: CheckpointSpeed, *, warm_batches: Sequence[int]) -> None:
    """Apply the load-time settings: attention backend, then regional compilation, warmed by
    one tiny forward per batch size in `warm_batches` so the first task does not compile."""
    for transformer in transformers_of(pipe):
        if speed.attention is not None:
            transformer.set_attention_backend(speed.attention)
        if speed.compile is CompileMode.REGIONAL:
            # dynamic: one compiled block serves every token count (sizes and frame counts
            # vary per task); batch sizes 1 and 2 are specialised, hence one warm-up each.
            transformer.compile_repeated_blocks(dynamic=True)
            for batch in warm_batches:
                _warm(pipe, transformer, batch=batch)


def _warm(pipe: Any, transformer: Any, *, batch: int) -> None:
    """One forward at a small shape shaped like the pipeline's calls (timestep per token for
    TI2V, image embeddings for CLIP image-to-video), which compiles the blocks."""
    import torch

    config = transformer.config
    device, dtype = transformer.device, transformer.dtype
    frames, height, width = 2, 4 * config.patch_size[1], 4 * config.patch_size[2]
    tokens = frames * 4 * 4
    hidden = torch.zeros(batch, config.in_channels, frames, height, width, dtype=dtype)
    if getattr(pipe.config, "expand_timesteps", False):
        timestep = torch.full((batch, tokens), 500.0)
    else:
        timestep = torch.full((batch,), 500.0)
    kwargs: dict[str, Any] = {
        "hidden_states": hidden.to(device),
        "timestep": timestep.to(device),
        "encoder_hidden_states": torch.zeros(batch, 512, config.text_dim, dtype=dtype).to(device),
        "return_dict": False,
    }
    if config.image_dim is not None:
        kwargs["encoder_hidden_states_image"] = torch.zeros(
            batch, 257, config.image_dim, dtype=dtype
        ).to(device)
    with torch.inference_mode():
        transformer(**kwargs)


def batched_cfg_fits(transformer: Any, *, tokens: int, device: Any) -> bool:
    """Whether a second sample's activations fit on `device` (`auto`). On a CPU always: the
    batch-2 forward was faster there (bench/engine.py), and host memory is not the limit.
    On a GPU: the largest transient of one block for one more sample (FFN hidden state plus
    q, k, v, attention output and residuals: ffn_dim + 6 * dim values per token), twice over
    for allocator slack, must fit in the free memory."""
    import torch

    if device.type != "cuda":
        return True
    config = transformer.config
    dim = config.num_attention_heads * config.attention_head_dim
    per_token = (config.ffn_dim + 6 * dim) * transformer.dtype.itemsize
    free, _total = torch.cuda.mem_get_info(device)
    return bool(2 * tokens * per_token < free)


# The batched-CFG hook's name in each transformer's diffusers `HookRegistry`.
BATCHED_CFG_HOOK = "wanserve_batched_cfg"


@contextmanager
def batched_cfg(transformers: Sequence[Any], *, negative: Any) -> Iterator[None]:
    """Run each conditional transformer call of the pipeline as one batch-2 forward with
    `negative` (the unconditional prompt embeddings), and answer the unconditional call that
    follows from that result. Everything outside the transformer (the scheduler, guidance,
    every other numeric step) stays diffusers' own.

    A call is batched only when it is recognisably the pipeline's conditional one (keyword
    arguments, embeddings shaped like `negative`), and the stored half is handed out only to
    the unconditional call of the same step (same latent and timestep objects, `negative` as
    embeddings); anything else runs unchanged.

    The mechanism is a diffusers `ModelHook` registered under `BATCHED_CFG_HOOK` in each
    transformer's `HookRegistry` for the run, and removed after it. It wraps the forward the
    transformer had when it was registered (an offload hook's, say); the block caches' hooks
    sit on the blocks, inside that forward, so they see the batch-2 call."""
    from diffusers.hooks.hooks import HookRegistry

    hook = _batched_cfg_hook()
    registries: list[Any] = []
    try:
        for transformer in transformers:
            registry = HookRegistry.check_if_exists_or_initialize(transformer)
            registry.register_hook(hook(negative), BATCHED_CFG_HOOK)
            registries.append(registry)
        yield
    finally:
        for registry in reversed(registries):
            registry.remove_hook(BATCHED_CFG_HOOK, recurse=False)


@functools.cache
def _batched_cfg_hook() -> type[Any]:
    """The hook class, defined on first use: importing this module must not import torch."""
    import torch
    from diffusers.hooks.hooks import ModelHook

    class BatchedCfgHook(ModelHook):
        # Stateful: the unconditional half waits between two calls of a step; diffusers resets
        # it at the end of each pipeline call (`maybe_free_model_hooks`).
        _is_stateful = True

        def __init__(self, negative: Any) -> None:
            super().__init__()
            self.negative = negative
            self.held: tuple[Any, Any, Any] | None = None  # latent, timestep, uncond output

        def new_forward(self, module: Any, *args: Any, **kwargs: Any) -> Any:
            forward: Any = self.fn_ref.original_forward
            hidden: Any = kwargs.get("hidden_states")
            timestep: Any = kwargs.get("timestep")
            embeds: Any = kwargs.get("encoder_hidden_states")
            return_dict = kwargs.get("return_dict", True)
            negative = self.negative
            if embeds is negative:
                held, self.held = self.held, None
                if held is not None and held[0] is hidden and held[1] is timestep:
                    return _output(held[2], return_dict=return_dict)
                return forward(*args, **kwargs)
            if args or embeds is None or hidden is None or embeds.shape != negative.shape:
                return forward(*args, **kwargs)
            image = kwargs.get("encoder_hidden_states_image")
            both = kwargs | {
                "hidden_states": torch.cat([hidden, hidden]),
                "timestep": torch.cat([timestep, timestep]),
                "encoder_hidden_states": torch.cat([embeds, negative]),
                "return_dict": False,
            }
            if image is not None:
                both["encoder_hidden_states_image"] = torch.cat([image, image])
            cond, uncond = forward(**both)[0].chunk(2)
            self.held = (hidden, timestep, uncond)
            return _output(cond, return_dict=return_dict)

        def reset_state(self, module: Any) -> Any:
            self.held = None
            return module

    return BatchedCfgHook


def _output(sample: Any, *, return_dict: bool) -> Any:
    if not return_dict:
        return (sample,)
    from diffusers.models.modeling_outputs import Transformer2DModelOutput

    return Transformer2DModelOutput(sample=sample)


@contextmanager
def block_cache(
    transformers: Sequence[Any], preset: CachePreset, *, family: Family, steps: int, area: int
) -> Iterator[None]:
    """Enable `preset` on each transformer for one run, freshly (no state survives a run) and
    removed afterwards, so consecutive runs with other presets start clean."""
    if preset is CachePreset.OFF:
        yield
        return
    from diffusers import FirstBlockCacheConfig, MagCacheConfig

    enabled: list[Any] = []
    try:
        for transformer in transformers:
            ratios = mag_ratios_for(family, layers=len(transformer.blocks), area=area)
            config: Any
            if ratios is not None and len(transformers) == 1:
                mag = MAG_PRESETS[preset]
                config = MagCacheConfig(
                    threshold=mag.threshold,
                    max_skip_steps=mag.max_skip_steps,
                    retention_ratio=mag.retention_ratio,
                    num_inference_steps=steps,
                    mag_ratios=list(ratios),
                )
            else:
                config = FirstBlockCacheConfig(threshold=FBC_THRESHOLDS[preset])
            transformer.enable_cache(config)
            enabled.append(transformer)
        yield
    finally:
        for transformer in enabled:
            transformer.disable_cache()


class BlockCounter:
    """Counts block evaluations of one run (see `BlockCount`). Scheduled evaluations are
    counted where the pipeline calls a transformer (batch x blocks per call); computed ones,
    when a cache is on, where a block's feed-forward actually runs (a skipped block never
    reaches it). Without a cache every scheduled block runs, and no per-block hook is added
    (hooks inside compiled blocks would cost a graph break)."""

    def __init__(self) -> None:
        self.scheduled = 0
        self.computed = 0
        self.per_block = False

    def result(self) -> BlockCount:
        computed = self.computed if self.per_block else self.scheduled
        return BlockCount(computed=computed, skipped=self.scheduled - computed)

    @contextmanager
    def counting(self, transformers: Sequence[Any], *, per_block: bool) -> Iterator[None]:
        self.per_block = per_block
        handles = []

        def on_call(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
            hidden: Any = kwargs.get("hidden_states", args[0] if args else None)
            self.scheduled += int(hidden.shape[0]) * len(module.blocks)

        def on_ffn(_module: Any, args: Any) -> None:
            self.computed += int(args[0].shape[0])

        try:
            for transformer in transformers:
                handles.append(transformer.register_forward_pre_hook(on_call, with_kwargs=True))
                if per_block:
                    handles.extend(
                        b.ffn.register_forward_pre_hook(on_ffn) for b in transformer.blocks
                    )
            yield
        finally:
            for handle in handles:
                handle.remove()
