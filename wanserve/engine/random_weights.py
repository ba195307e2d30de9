"""Full-size Wan architectures with random weights, built in memory (`--weights random`).

For timing on a host that has no weights: the transformer(s) and VAE have the published
checkpoints' real shapes, so every denoising step costs what it costs with real weights. The
videos are noise. Shapes are written down from the published `config.json` files of the
Wan-AI diffusers repositories (and agree with diffusers' own conversion script and the
official Wan configs, `wan/configs/*.py`):

    checkpoint (hub id)                 dim   layers heads ffn    in/out  VAE
    Wan2.1-T2V-1.3B-Diffusers           1536  30     12    8960   16/16   2.1 (z 16)
    Wan2.1-T2V-14B-Diffusers            5120  40     40    13824  16/16   2.1 (z 16)
    Wan2.2-TI2V-5B-Diffusers            3072  30     24    14336  48/48   2.2 (z 48)
    Wan2.2-T2V-A14B-Diffusers           two 14B experts, 16/16          2.1 (z 16)
    Wan2.2-I2V-A14B-Diffusers           two 14B experts, 36/16          2.1 (z 16)

(dim = heads x 128; every one: patch 1x2x2, text_dim 4096, freq_dim 256, cross-attention norm,
RMS norm across heads, eps 1e-6, rope_max_seq_len 1024.) The Wan2.1 image-to-video and
first-last-frame checkpoints need a full CLIP ViT-H image encoder as well; they are not built
here.

The UMT5-XXL text encoder (5.7 B parameters) is replaced by a one-layer UMT5 of the real width
(d_model 4096) over the dummy tokenizer: prompts still become (1, 512, 4096) embeddings through
the pipeline's own encode path, at no cost worth measuring (UMT5 runs once per prompt and its
embeddings are cached). The VAE latent statistics (`latents_mean`/`latents_std`) are 0 and 1:
with random weights they scale noise.

Parameters are created on the meta device and then materialised one at a time directly on the
target device in the target dtype, so no full-precision copy is ever held on the CPU (the
modules diffusers keeps in fp32, `_keep_in_fp32_modules`, are kept in fp32 here too).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from accelerate import init_empty_weights
from accelerate.utils import set_module_tensor_to_device
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
)
from transformers import UMT5Config, UMT5EncoderModel

from wanserve.engine import dummy
from wanserve.engine.families import CHECKPOINTS, FAMILIES, Family

_COMMON: Mapping[str, Any] = {
    "patch_size": (1, 2, 2),
    "attention_head_dim": 128,
    "text_dim": 4096,
    "freq_dim": 256,
    "cross_attn_norm": True,
    "qk_norm": "rms_norm_across_heads",
    "eps": 1e-6,
    "rope_max_seq_len": 1024,
}
TEXT_DIM = 4096  # UMT5-XXL d_model
# Wan2.2's VAE (Wan-AI/Wan2.2-TI2V-5B-Diffusers vae/config.json); the Wan2.1 VAE is
# AutoencoderKLWan's defaults (base_dim 96, z_dim 16, dim_mult [1, 2, 4, 4], 2 res blocks).
_VAE_22: Mapping[str, Any] = {
    "base_dim": 160,
    "decoder_base_dim": 256,
    "z_dim": 48,
    "in_channels": 12,
    "out_channels": 12,
    "is_residual": True,
    "patch_size": 2,
    "scale_factor_spatial": 16,
    "scale_factor_temporal": 4,
}


@dataclass(frozen=True, kw_only=True)
class Layout:
    """The shapes of one published checkpoint."""

    family: Family
    heads: int
    layers: int
    ffn: int
    in_channels: int = 16
    out_channels: int = 16
    experts: int = 1  # Wan2.2 A14B: a high-noise and a low-noise transformer
    vae_22: bool = False

    @property
    def dim(self) -> int:
        return self.heads * int(_COMMON["attention_head_dim"])

    def transformer_config(self) -> dict[str, Any]:
        return dict(_COMMON) | {
            "num_attention_heads": self.heads,
            "num_layers": self.layers,
            "ffn_dim": self.ffn,
            "in_channels": self.in_channels,
            "out_channels": self.out_channels,
        }

    def vae_config(self) -> dict[str, Any]:
        if not self.vae_22:
            return {"latents_mean": [0.0] * 16, "latents_std": [1.0] * 16}
        return dict(_VAE_22) | {"latents_mean": [0.0] * 48, "latents_std": [1.0] * 48}


_HEADS_14B, _LAYERS_14B, _FFN_14B = 40, 40, 13824
LAYOUTS: Mapping[str, Layout] = {
    CHECKPOINTS["t2v-1.3b"].source: Layout(family=Family.WAN21_T2V, heads=12, layers=30, ffn=8960),
    CHECKPOINTS["t2v-14b"].source: Layout(
        family=Family.WAN21_T2V, heads=_HEADS_14B, layers=_LAYERS_14B, ffn=_FFN_14B
    ),
    CHECKPOINTS["ti2v-5b"].source: Layout(
        family=Family.WAN22_TI2V_5B,
        heads=24,
        layers=30,
        ffn=14336,
        in_channels=48,
        out_channels=48,
        vae_22=True,
    ),
    CHECKPOINTS["t2v-a14b"].source: Layout(
        family=Family.WAN22_T2V_A14B, heads=_HEADS_14B, layers=_LAYERS_14B, ffn=_FFN_14B, experts=2
    ),
    CHECKPOINTS["i2v-a14b"].source: Layout(
        family=Family.WAN22_I2V_A14B,
        heads=_HEADS_14B,
        layers=_LAYERS_14B,
        ffn=_FFN_14B,
        in_channels=36,
        experts=2,
    ),
}


def layout_for(source: str, family: Family) -> Layout:
    """The layout of `source` (a published hub id), or ValueError naming those known."""
    layout = LAYOUTS.get(source)
    if layout is None or layout.family is not family:
        known = ", ".join(sorted(LAYOUTS))
        raise ValueError(
            f"random weights are built for the published layouts only ({known}); "
            f"{source!r} ({family.value}) is not one of them"
        )
    return layout


def parameter_bytes(layout: Layout, *, dtype: torch.dtype) -> int:
    """Bytes the transformer(s), VAE and text encoder take in `dtype` (VAE in fp32), counted
    on the meta device: nothing is allocated."""
    item = torch.empty((), dtype=dtype).element_size()
    transformer: torch.nn.Module = _empty(WanTransformer3DModel, layout.transformer_config())
    vae: torch.nn.Module = _empty(AutoencoderKLWan, layout.vae_config())
    encoder: torch.nn.Module = _empty(UMT5EncoderModel, {"config": _text_encoder_config()})
    dense = _count(transformer) * layout.experts + _count(encoder)
    return dense * item + _count(vae) * 4


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def build_pipeline(layout: Layout, *, device: torch.device, dtype: torch.dtype) -> Any:
    """The pipeline of `layout` with random weights, created on `device` in `dtype`."""
    profile = FAMILIES[layout.family]
    tokenizer = dummy.build_tokenizer()
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(0)
        transformers = [
            _materialise(
                _empty(WanTransformer3DModel, layout.transformer_config()),
                device=device,
                dtype=dtype,
                keep_fp32=WanTransformer3DModel._keep_in_fp32_modules,
            )
            for _ in range(layout.experts)
        ]
        vae = _materialise(
            _empty(AutoencoderKLWan, layout.vae_config()), device=device, dtype=torch.float32
        )
        encoder = _empty(UMT5EncoderModel, {"config": _text_encoder_config(len(tokenizer))})
        text_encoder = _materialise(encoder, device=device, dtype=dtype)
    scheduler = UniPCMultistepScheduler(
        prediction_type="flow_prediction",
        use_flow_sigmas=True,
        num_train_timesteps=1000,
        flow_shift=profile.sampling.flow_shift,
    )
    parts: dict[str, Any] = {
        "tokenizer": tokenizer,
        "text_encoder": text_encoder,
        "vae": vae,
        "scheduler": scheduler,
        "transformer": transformers[0],
        "transformer_2": transformers[1] if layout.experts == 2 else None,
        "boundary_ratio": profile.boundary_ratio,
    }
    if profile.image_pipeline:
        return WanImageToVideoPipeline(image_encoder=None, image_processor=None, **parts)
    return WanPipeline(expand_timesteps=layout.family is Family.WAN22_TI2V_5B, **parts)


def _text_encoder_config(vocab_size: int = 320) -> UMT5Config:
    # The real width, one layer, one small head: right-shaped embeddings for almost nothing.
    return UMT5Config(
        vocab_size=vocab_size, d_model=TEXT_DIM, d_kv=64, d_ff=256, num_layers=1, num_heads=1
    )


def _empty(cls: type[Any], config: Mapping[str, Any]) -> Any:
    with init_empty_weights():  # parameters on the meta device; buffers (rope tables) real
        return cls(**config)


def _materialise(
    module: torch.nn.Module,
    *,
    device: torch.device,
    dtype: torch.dtype,
    keep_fp32: list[str] | None = None,
) -> Any:
    """Give every meta parameter real random values on `device`, one tensor at a time.

    Matrices and kernels are drawn N(0, 1/fan_in) (activations keep their scale through the
    blocks, so no step overflows half precision), one-dimensional weights (norm scales) are 1,
    biases 0."""
    keep = set(keep_fp32 or ())
    for name, param in list(module.named_parameters()):
        parts = name.split(".")
        target = torch.float32 if keep.intersection(parts) else dtype
        value = torch.empty(param.shape, device=device, dtype=target)
        if parts[-1] == "bias":
            value.zero_()
        elif param.ndim == 1:
            value.fill_(1.0)
        else:
            fan_in = max(1, param.numel() // param.shape[0])
            value.normal_(0.0, 1.0 / math.sqrt(fan_in))
        set_module_tensor_to_device(module, name, device, value=value, dtype=target)
    module.to(device)  # buffers (rope frequencies) were built on the CPU
    module.eval()
    return module
