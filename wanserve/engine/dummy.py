"""Tiny, randomly initialised Wan checkpoints of every family, built offline.

`--weights dummy` runs each model on components of its real architecture (UMT5 text encoder,
Wan VAE, Wan transformer(s), CLIP image encoder where the family has one, UniPC flow
scheduler) shrunk to a few thousand parameters. They are written once as diffusers-format
directories and then loaded by the same `from_pretrained` code as real weights, so dummy mode
exercises the real loading path. The videos are noise; everything else is real.

Weights are drawn from a fixed seed and the tokenizer is trained deterministically, so two
builds are identical.

LoRA adapters for these transformers are built the same way (`ensure_adapters`): low-rank A/B
matrices (and bias deltas) for every attention and feed-forward linear layer of each block,
the time projection and the output head, under the real module names, saved once in diffusers'
key format and once in the lightx2v/Kijai format (`diffusion_model.blocks.N.self_attn.q.
lora_down.weight`, `.alpha`, `.diff_b`), so the real loader and its format conversion run.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import sentencepiece as spm
import torch
from diffusers import (
    AutoencoderKLWan,
    UniPCMultistepScheduler,
    WanImageToVideoPipeline,
    WanPipeline,
    WanTransformer3DModel,
    WanVACEPipeline,
    WanVACETransformer3DModel,
)
from safetensors.torch import save_file
from transformers import (
    CLIPImageProcessor,
    CLIPVisionConfig,
    CLIPVisionModel,
    T5Tokenizer,
    UMT5Config,
    UMT5EncoderModel,
)

from wanserve.engine.families import FAMILIES, Family

# Bump when the layout below changes, so stale cached builds are not reused.
DUMMY_VERSION = 1

_CORPUS = (
    "a cat runs in the moonlight",
    "a dog plays on the grass in the park",
    "the city at night with neon lights and rain",
    "a boy sings a song under a railway bridge",
    "waves crash on the shore at sunset",
    "low resolution, error, worst quality, low quality, deformed, extra fingers",
    "shot from a low angle, in a medium close-up, with warm tones and mixed lighting",
    "the camera slowly pans to the right across a mountain landscape",
    "a street musician plays guitar in a retro subway station",
    "a fox in a trench coat turns the pages of an old case file",
)
_TEXT_DIM = 32
_HEADS, _HEAD_DIM = 2, 12
_CLIP = {"hidden_size": 4, "image_size": 32, "patch_size": 2}  # 16x16 patches + 1 = 257 tokens


def build_tokenizer() -> T5Tokenizer:
    """A real SentencePiece Unigram tokenizer, trained in memory on a fixed corpus."""
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_CORPUS * 3),
        model_writer=model,
        vocab_size=320,
        model_type="unigram",
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        hard_vocab_limit=False,
        minloglevel=2,
        num_threads=1,
    )
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = [(sp.id_to_piece(i), sp.get_score(i)) for i in range(sp.get_piece_size())]
    return T5Tokenizer(vocab=vocab, extra_ids=0)


def _transformer(cls: type[Any] = WanTransformer3DModel, **overrides: Any) -> Any:
    config: dict[str, Any] = {
        "patch_size": (1, 2, 2),
        "num_attention_heads": _HEADS,
        "attention_head_dim": _HEAD_DIM,
        "in_channels": 16,
        "out_channels": 16,
        "text_dim": _TEXT_DIM,
        "freq_dim": 256,
        "ffn_dim": 32,
        "num_layers": 2,
        "cross_attn_norm": True,
        "qk_norm": "rms_norm_across_heads",
        "rope_max_seq_len": 1024,
    }
    return cls(**(config | overrides))


def _vae(family: Family) -> AutoencoderKLWan:
    if family is Family.WAN22_TI2V_5B:
        return AutoencoderKLWan(
            base_dim=3,
            z_dim=48,
            in_channels=12,
            out_channels=12,
            is_residual=True,
            patch_size=2,
            latents_mean=[0.0] * 48,
            latents_std=[1.0] * 48,
            dim_mult=[1, 1, 1, 1],
            num_res_blocks=1,
            scale_factor_spatial=16,
            scale_factor_temporal=4,
            temperal_downsample=[False, True, True],
        )
    return AutoencoderKLWan(
        base_dim=3,
        z_dim=16,
        dim_mult=[1, 1, 1, 1],
        num_res_blocks=1,
        temperal_downsample=[False, True, True],
    )


def build_pipeline(family: Family) -> Any:
    """The tiny pipeline of `family`, in memory, deterministic."""
    profile = FAMILIES[family]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tokenizer = build_tokenizer()
        text_encoder = UMT5EncoderModel(
            UMT5Config(
                vocab_size=len(tokenizer),
                d_model=_TEXT_DIM,
                d_kv=8,
                d_ff=64,
                num_layers=2,
                num_heads=4,
            )
        )
        vae = _vae(family)
        scheduler = UniPCMultistepScheduler(
            prediction_type="flow_prediction",
            use_flow_sigmas=True,
            num_train_timesteps=1000,
            flow_shift=profile.sampling.flow_shift,
        )
        common: dict[str, Any] = {
            "tokenizer": tokenizer,
            "text_encoder": text_encoder,
            "vae": vae,
            "scheduler": scheduler,
        }
        if family is Family.WAN21_T2V:
            return WanPipeline(transformer=_transformer(), **common)
        if family is Family.WAN22_T2V_A14B:
            return WanPipeline(
                transformer=_transformer(),
                transformer_2=_transformer(),
                boundary_ratio=profile.boundary_ratio,
                **common,
            )
        if family is Family.WAN21_VACE:
            # Context blocks beside block 0; their input is the source video's inactive and
            # reactive latents (16 + 16 channels) and the mask folded to 8x8 = 64 channels.
            vace = _transformer(WanVACETransformer3DModel, vace_layers=[0], vace_in_channels=96)
            return WanVACEPipeline(transformer=vace, **common)
        if family is Family.WAN22_TI2V_5B:
            return WanPipeline(
                transformer=_transformer(in_channels=48, out_channels=48),
                expand_timesteps=True,
                **common,
            )
        if family is Family.WAN22_I2V_A14B:
            return WanImageToVideoPipeline(
                transformer=_transformer(in_channels=36),
                transformer_2=_transformer(in_channels=36),
                boundary_ratio=profile.boundary_ratio,
                image_encoder=None,
                image_processor=None,
                **common,
            )
        # Wan2.1 image-to-video and first-last-frame: CLIP image tokens feed a second
        # cross-attention (added K/V projections), as in the 14B checkpoints.
        clip_tokens = (_CLIP["image_size"] // _CLIP["patch_size"]) ** 2 + 1
        image_encoder = CLIPVisionModel(
            CLIPVisionConfig(
                hidden_size=_CLIP["hidden_size"],
                projection_dim=_CLIP["hidden_size"],
                num_hidden_layers=2,
                num_attention_heads=2,
                image_size=_CLIP["image_size"],
                intermediate_size=16,
                patch_size=_CLIP["patch_size"],
            )
        )
        extra: dict[str, Any] = {}
        if family is Family.WAN21_FLF2V:
            extra["pos_embed_seq_len"] = 2 * clip_tokens
        return WanImageToVideoPipeline(
            transformer=_transformer(
                in_channels=36,
                image_dim=_CLIP["hidden_size"],
                added_kv_proj_dim=_HEADS * _HEAD_DIM,
                **extra,
            ),
            image_encoder=image_encoder,
            image_processor=CLIPImageProcessor(
                crop_size=_CLIP["image_size"], size=_CLIP["image_size"]
            ),
            **common,
        )


def ensure_checkpoint(family: Family, root: Path) -> Path:
    """A diffusers-format directory holding the tiny `family` pipeline, built on first use."""
    return _built_once(root / f"{family.value}-v{DUMMY_VERSION}", lambda: build_pipeline(family))


def _built_once(target: Path, build: Callable[[], Any]) -> Path:
    """`target`, saving `build()` there first if it is not built yet. Concurrent builders
    each stage their own copy; the first rename wins and the others discard theirs."""
    if (target / "model_index.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        build().save_pretrained(staging)
        try:
            staging.rename(target)
        except OSError:
            if not (target / "model_index.json").exists():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def build_audio_pipeline() -> Any:
    """A tiny Stable Audio Open pipeline: T5 text encoder, DiT, Oobleck VAE at 44.1 kHz
    stereo with the real 2048x downsampling, so the track it makes has the real shape."""
    from diffusers import (
        AutoencoderOobleck,
        EDMDPMSolverMultistepScheduler,
        StableAudioDiTModel,
        StableAudioPipeline,
        StableAudioProjectionModel,
    )
    from transformers import T5Config, T5EncoderModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        tokenizer = build_tokenizer()
        tokenizer.model_max_length = 128
        text_encoder = T5EncoderModel(
            T5Config(
                vocab_size=len(tokenizer), d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4
            )
        )
        return StableAudioPipeline(
            tokenizer=tokenizer,
            text_encoder=text_encoder,
            projection_model=StableAudioProjectionModel(
                text_encoder_dim=32, conditioning_dim=32, min_value=0, max_value=512
            ),
            transformer=StableAudioDiTModel(
                sample_size=1024,
                in_channels=8,
                num_layers=2,
                attention_head_dim=8,
                num_attention_heads=2,
                num_key_value_attention_heads=1,
                out_channels=8,
                cross_attention_dim=16,
                time_proj_dim=16,
                global_states_input_dim=64,
                cross_attention_input_dim=32,
            ),
            vae=AutoencoderOobleck(
                encoder_hidden_size=4,
                downsampling_ratios=[2, 4, 4, 8, 8],
                decoder_channels=4,
                decoder_input_channels=8,
                audio_channels=2,
                channel_multiples=[1, 2, 2, 2, 2],
                sampling_rate=44100,
            ),
            scheduler=EDMDPMSolverMultistepScheduler(
                solver_order=2,
                prediction_type="v_prediction",
                sigma_data=1.0,
                sigma_schedule="exponential",
            ),
        )


# The adapters `ensure_adapters` provides in dummy mode: one per key format.
STYLE_ADAPTER = "dummy-style"  # diffusers format
DISTILL_ADAPTER = "dummy-lightx2v"  # lightx2v/Kijai format, converted by diffusers on load
_ADAPTER_RANK = 4
_INNER = _HEADS * _HEAD_DIM
_FFN = 32  # the dummy transformer's ffn_dim
# diffusers module name -> (in, out) features, per block; then the modules outside the blocks.
_BLOCK_LINEARS = {
    **{f"attn{a}.{p}": (_INNER, _INNER) for a in (1, 2) for p in ("to_q", "to_k", "to_v")},
    "attn1.to_out.0": (_INNER, _INNER),
    "attn2.to_out.0": (_INNER, _INNER),
    "ffn.net.0.proj": (_INNER, _FFN),
    "ffn.net.2": (_FFN, _INNER),
}
_OTHER_LINEARS = {"condition_embedder.time_proj": (_INNER, 6 * _INNER)}
_BLOCKS = 2  # the dummy transformer's num_layers
# diffusers name -> the original Wan (lightx2v/Kijai) name of the same layer.
_WAN_NAMES = {
    "attn1.to_q": "self_attn.q",
    "attn1.to_k": "self_attn.k",
    "attn1.to_v": "self_attn.v",
    "attn1.to_out.0": "self_attn.o",
    "attn2.to_q": "cross_attn.q",
    "attn2.to_k": "cross_attn.k",
    "attn2.to_v": "cross_attn.v",
    "attn2.to_out.0": "cross_attn.o",
    "ffn.net.0.proj": "ffn.0",
    "ffn.net.2": "ffn.2",
    "condition_embedder.time_proj": "time_projection.1",
}


def adapter_tensors(seed: int, *, std: float = 0.2) -> dict[str, torch.Tensor]:
    """Random LoRA weights for the dummy transformers, keyed in diffusers' format (without
    the `transformer.` prefix): `<module>.lora_A.weight` (rank x in), `.lora_B.weight`
    (out x rank) and `.lora_B.bias` (out)."""
    generator = torch.Generator().manual_seed(seed)
    tensors: dict[str, torch.Tensor] = {}
    modules = [
        (f"blocks.{i}.{m}", shape) for i in range(_BLOCKS) for m, shape in _BLOCK_LINEARS.items()
    ]
    modules += list(_OTHER_LINEARS.items())
    for module, (fan_in, fan_out) in modules:
        a = torch.randn(_ADAPTER_RANK, fan_in, generator=generator) * std
        b = torch.randn(fan_out, _ADAPTER_RANK, generator=generator) * std
        tensors[f"{module}.lora_A.weight"] = a
        tensors[f"{module}.lora_B.weight"] = b
        # A bias delta on every layer: PEFT's `lora_bias` applies to all layers of an adapter
        # once any has one (real lightx2v files carry `diff_b` on every layer too).
        tensors[f"{module}.lora_B.bias"] = torch.randn(fan_out, generator=generator) * std
    return tensors


def save_diffusers_adapter(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """`tensors` (from `adapter_tensors`) as a diffusers LoRA file."""
    _save_atomically({f"transformer.{k}": v.contiguous() for k, v in tensors.items()}, path)


def save_wan_adapter(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """The same adapter in the original Wan key format lightx2v and Kijai publish: lora_down /
    lora_up, an `alpha` per layer (here the rank: scale 1, the same numbers as the diffusers
    file), `diff_b` bias deltas, and a norm `diff` the converter drops (as in real files)."""
    out: dict[str, torch.Tensor] = {}
    for key, value in tensors.items():
        module, _, kind = key.partition(".lora_")
        block, wan = _wan_module(module)
        prefix = f"diffusion_model.{block}{wan}"
        if kind == "A.weight":
            out[f"{prefix}.lora_down.weight"] = value
            if block:  # the converter reads alphas in blocks only
                out[f"{prefix}.alpha"] = torch.tensor(float(_ADAPTER_RANK))
        elif kind == "B.weight":
            out[f"{prefix}.lora_up.weight"] = value
        else:
            out[f"{prefix}.diff_b"] = value
    out["diffusion_model.blocks.0.norm3.diff"] = torch.zeros(_INNER)
    _save_atomically({k: v.contiguous() for k, v in out.items()}, path)


def _wan_module(module: str) -> tuple[str, str]:
    if module.startswith("blocks."):
        _, index, rest = module.split(".", 2)
        return f"blocks.{index}.", _WAN_NAMES[rest]
    return "", _WAN_NAMES[module]


def ensure_adapters(root: Path) -> Path:
    """A directory holding the dummy adapters (`STYLE_ADAPTER`, `DISTILL_ADAPTER`), built on
    first use; it is what `lora_dir` defaults to in dummy mode."""
    root.mkdir(parents=True, exist_ok=True)
    style = root / f"{STYLE_ADAPTER}.safetensors"
    if not style.exists():
        save_diffusers_adapter(adapter_tensors(1), style)
    distill = root / f"{DISTILL_ADAPTER}.safetensors"
    if not distill.exists():
        save_wan_adapter(adapter_tensors(2), distill)
    return root


def _save_atomically(tensors: dict[str, torch.Tensor], path: Path) -> None:
    # A reader (the API listing adapters, another worker) never sees half a file.
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    os.close(fd)
    try:
        save_file(tensors, staging)
        os.replace(staging, path)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)


def ensure_audio_checkpoint(root: Path) -> Path:
    """The tiny Stable Audio pipeline as a diffusers directory, built on first use."""
    return _built_once(root / f"stable-audio-v{DUMMY_VERSION}", build_audio_pipeline)
