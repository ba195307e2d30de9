"""`--weights random`: the published architectures at full size, random weights, built in
memory. Full-size layouts are checked on the meta device (no memory); the building itself
runs on a shrunken layout of the same code path."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from accelerate import init_empty_weights
from diffusers import AutoencoderKLWan, WanTransformer3DModel

from wanserve.engine import random_weights, wan
from wanserve.engine.errors import WeightsUnavailable
from wanserve.engine.families import CHECKPOINTS, Family
from wanserve.engine.request import EngineConfig


def parameters(layout: random_weights.Layout) -> tuple[int, int]:
    """(transformer parameters, all experts; VAE parameters), counted on the meta device."""
    with init_empty_weights():
        transformer = WanTransformer3DModel(**layout.transformer_config())
        vae = AutoencoderKLWan(**layout.vae_config())
    count = sum(p.numel() for p in transformer.parameters()) * layout.experts
    return count, sum(p.numel() for p in vae.parameters())


@pytest.mark.parametrize(
    ("checkpoint", "billions"),
    [
        # 1.419 B measured on a real-size build (engine-feasibility.md); the others nominal.
        ("t2v-1.3b", 1.419),
        ("t2v-14b", 14.0),
        ("ti2v-5b", 5.0),
        ("t2v-a14b", 28.0),
        ("i2v-a14b", 28.0),
    ],
)
def test_layouts_have_the_published_sizes(checkpoint: str, billions: float) -> None:
    layout = random_weights.LAYOUTS[CHECKPOINTS[checkpoint].source]
    count, vae = parameters(layout)
    assert count == pytest.approx(billions * 1e9, rel=0.025)
    # The Wan2.1 VAE has 127 M parameters; Wan2.2's (z 48, 16x spatial) is several times more.
    assert vae == pytest.approx(127e6, rel=0.01) if not layout.vae_22 else vae > 500e6


def test_unknown_checkpoints_are_refused_by_the_loader(tmp_path: Path) -> None:
    loader = wan.WanLoader(EngineConfig(weights="random", device="cpu", dummy_root=tmp_path))
    with pytest.raises(WeightsUnavailable, match="published layouts only"):
        loader.prepare("/models/my-finetune", Family.WAN21_T2V)
    with pytest.raises(WeightsUnavailable):  # a known id under the wrong family
        loader.prepare(CHECKPOINTS["t2v-1.3b"].source, Family.WAN22_TI2V_5B)
    prepared = loader.prepare(CHECKPOINTS["t2v-1.3b"].source, Family.WAN21_T2V)
    assert prepared.nbytes == pytest.approx(4 * (1.419e9 + 127e6), rel=0.02)  # fp32 on a CPU


def test_built_weights_are_real_random_and_in_the_asked_dtype() -> None:
    # The 1.3B layout shrunk to one block of one head: the same building code, 30x smaller.
    layout = dataclasses.replace(
        random_weights.LAYOUTS[CHECKPOINTS["t2v-1.3b"].source], heads=1, layers=1, ffn=64
    )
    pipe = random_weights.build_pipeline(layout, device=torch.device("cpu"), dtype=torch.bfloat16)
    transformer = pipe.transformer
    for name, param in transformer.named_parameters():
        assert param.device.type == "cpu", name
        kept = set(name.split(".")) & set(WanTransformer3DModel._keep_in_fp32_modules)
        assert param.dtype == (torch.float32 if kept else torch.bfloat16), name
    weight = transformer.blocks[0].attn1.to_q.weight.float()
    assert weight.std().item() == pytest.approx(1 / 128**0.5, rel=0.1)  # N(0, 1/fan_in)
    assert all(p.dtype == torch.float32 for p in pipe.vae.parameters())
    assert pipe.text_encoder.config.d_model == random_weights.TEXT_DIM
    assert not transformer.training and not pipe.text_encoder.training
    with torch.inference_mode():
        embeds, _ = pipe.encode_prompt(
            prompt="a cat", do_classifier_free_guidance=False, max_sequence_length=512
        )
        out = pipe(
            prompt_embeds=embeds,
            height=32,
            width=32,
            num_frames=1,
            num_inference_steps=1,
            guidance_scale=1.0,
            output_type="latent",
        ).frames
    assert embeds.shape == (1, 512, random_weights.TEXT_DIM)
    assert out.shape == (1, 16, 1, 4, 4) and torch.isfinite(out).all()
