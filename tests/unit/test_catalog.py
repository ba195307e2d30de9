"""The catalogue: every model name of the seeds with its own limits and checkpoint."""

from __future__ import annotations

import pydantic
import pytest

from wanserve.catalog import (
    FAMILIES,
    TIER_SIZES,
    Catalog,
    Family,
    Generation,
    Kind,
    ModelOverride,
    Size,
    frames_for,
    generation_size,
    tier_of,
)
from wanserve.errors import InvalidParameter

SEED_MODELS = {
    "wan2.6-t2v",
    "wan2.5-t2v-preview",
    "wan2.2-t2v-plus",
    "wan2.1-t2v-turbo",
    "wanx2.1-t2v-turbo",
    "wan2.1-t2v-plus",
    "wanx2.1-t2v-plus",
    "wan2.6-i2v-flash",
    "wan2.6-i2v",
    "wan2.5-i2v-preview",
    "wan2.2-i2v-flash",
    "wan2.2-i2v-plus",
    "wanx2.1-i2v-plus",
    "wanx2.1-i2v-turbo",
}


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return Catalog.build()


# DashScope's models past the seeds (anchors-2026-12-07): key frames, the media[] protocol,
# reference-to-video and VACE editing.
LATER_MODELS = {
    "wanx2.1-kf2v-plus",
    "wan2.7-i2v",
    "wan3.0-video",
    "wan3.0-video-prime",
    "wan2.6-r2v",
    "wan2.6-r2v-flash",
    "wan2.7-r2v",
    "wan2.7-videoedit",
    "wan2.1-vace-plus",
    "wanx2.1-vace-plus",
}


def test_every_seed_model_is_served_plus_the_later_ones(catalog: Catalog) -> None:
    assert set(catalog.names()) == SEED_MODELS | LATER_MODELS


def test_routes_follow_the_inputs_and_overrides_reach_them() -> None:
    built = Catalog.build(
        {"wan3.0-video": ModelOverride(composite_checkpoint="/weights/vace", max_area=4096)},
        steps=3,
    )
    card = built.get("wan3.0-video")
    kinds = [(r.kind, r.checkpoint.family) for r in card.routes]
    assert kinds == [
        (Kind.TEXT_TO_VIDEO, Family.WAN22_T2V_A14B),
        (Kind.IMAGE_TO_VIDEO, Family.WAN22_I2V_A14B),
        (Kind.KEYFRAMES_TO_VIDEO, Family.WAN21_FLF2V),
        (Kind.COMPOSITE, Family.WAN21_VACE),
    ]
    assert card.routes[-1].checkpoint.source == "/weights/vace"
    assert all(r.sampling is not None and r.sampling.steps == 3 for r in card.routes)
    assert {r.checkpoint.max_area for r in card.routes} == {4096}
    assert card.routes[0].serves(frozenset()) and not card.routes[0].serves({"first_frame"})
    assert card.routes[2].serves(frozenset({"first_frame", "last_frame"}))
    # A model that runs VACE itself takes the override too (a 1.3B checkpoint, say).
    vace = Catalog.build({"wan2.7-videoedit": ModelOverride(composite_checkpoint="/w/1.3b")})
    assert [r.checkpoint.source for r in vace.get("wan2.7-videoedit").routes] == ["/w/1.3b"]


def test_first_and_last_frame_model(catalog: Catalog) -> None:
    card = catalog.get("wanx2.1-kf2v-plus")
    assert card.kind is Kind.KEYFRAMES_TO_VIDEO
    assert (card.tiers, card.default_tier, card.durations.allowed, card.fps) == (
        ("720P",),
        "720P",
        (5,),
        30,
    )
    assert card.checkpoint.family is Family.WAN21_FLF2V
    assert card.checkpoint.source == "Wan-AI/Wan2.1-FLF2V-14B-720P-Diffusers"


def test_unknown_model_names_the_available_ones(catalog: Catalog) -> None:
    with pytest.raises(InvalidParameter, match=r"Model not exist: 'wan9-t2v'.*wan2.1-t2v-turbo"):
        catalog.get("wan9-t2v")


# (model, kind, tiers, default size or tier, durations, default duration, fps, prompt limit, audio)
TABLE = [
    ("wan2.6-t2v", "t2v", ("720P", "1080P"), "1920*1080", range(2, 16), 5, 24, 1500, True),
    (
        "wan2.5-t2v-preview",
        "t2v",
        ("480P", "720P", "1080P"),
        "1920*1080",
        (5, 10),
        5,
        24,
        1500,
        True,
    ),
    ("wan2.2-t2v-plus", "t2v", ("480P", "1080P"), "1920*1080", (5,), 5, 30, 800, False),
    ("wan2.1-t2v-turbo", "t2v", ("480P", "720P"), "1280*720", (5,), 5, 30, 800, False),
    ("wan2.1-t2v-plus", "t2v", ("720P",), "1280*720", (5,), 5, 30, 800, False),
    ("wan2.6-i2v-flash", "i2v", ("720P", "1080P"), "1080P", range(2, 16), 5, 24, 1500, True),
    ("wan2.6-i2v", "i2v", ("720P", "1080P"), "1080P", range(2, 16), 5, 24, 1500, True),
    ("wan2.5-i2v-preview", "i2v", ("480P", "720P", "1080P"), "1080P", (5, 10), 5, 24, 1500, True),
    ("wan2.2-i2v-flash", "i2v", ("480P", "720P", "1080P"), "720P", (5,), 5, 30, 800, False),
    ("wan2.2-i2v-plus", "i2v", ("480P", "1080P"), "1080P", (5,), 5, 30, 800, False),
    ("wanx2.1-i2v-plus", "i2v", ("720P",), "720P", (5,), 5, 30, 800, False),
    ("wanx2.1-i2v-turbo", "i2v", ("480P", "720P"), "720P", (3, 4, 5), 5, 30, 800, False),
]


@pytest.mark.parametrize(
    ("name", "kind", "tiers", "default", "durations", "default_duration", "fps", "limit", "audio"),
    TABLE,
)
def test_model_card(
    catalog: Catalog,
    name: str,
    kind: str,
    tiers: tuple[str, ...],
    default: str,
    durations: range | tuple[int, ...],
    default_duration: int,
    fps: int,
    limit: int,
    audio: bool,
) -> None:
    card = catalog.get(name)
    assert card.kind is Kind(kind)
    assert card.tiers == tiers
    if card.kind is Kind.TEXT_TO_VIDEO:
        assert str(card.default_size) == default
        assert card.sizes == tuple(s for t in tiers for s in TIER_SIZES[t])
    else:
        assert card.default_tier == default
    assert card.durations.allowed == tuple(durations)
    assert card.durations.default == default_duration
    assert card.fps == fps
    assert card.prompt_limit == limit
    assert card.negative_prompt_limit == 500
    assert card.audio is audio
    assert card.multi_shot is name.startswith("wan2.6")
    assert card.generation.returns_actual_prompt is not name.startswith("wan2.6")


def test_wanx_aliases_share_their_twins_rules(catalog: Catalog) -> None:
    for alias, twin in (
        ("wanx2.1-t2v-turbo", "wan2.1-t2v-turbo"),
        ("wanx2.1-t2v-plus", "wan2.1-t2v-plus"),
    ):
        a, b = catalog.get(alias), catalog.get(twin)
        assert a.name == alias
        assert (a.sizes, a.durations, a.fps, a.checkpoint) == (
            b.sizes,
            b.durations,
            b.fps,
            b.checkpoint,
        )


def test_default_checkpoints_are_the_open_wan_weights(catalog: Catalog) -> None:
    turbo = catalog.get("wan2.1-t2v-turbo").checkpoint
    assert turbo.source == "Wan-AI/Wan2.1-T2V-1.3B-Diffusers"
    assert turbo.family is Family.WAN21_T2V
    assert turbo.max_area == 832 * 480
    assert catalog.get("wan2.2-t2v-plus").checkpoint.family is Family.WAN22_T2V_A14B
    assert catalog.get("wan2.2-i2v-flash").checkpoint.family is Family.WAN22_TI2V_5B
    assert catalog.get("wanx2.1-i2v-plus").checkpoint.source.endswith("I2V-14B-720P-Diffusers")


def test_generations(catalog: Catalog) -> None:
    assert catalog.get("wan2.6-t2v").generation is Generation.WAN26
    assert catalog.get("wan2.5-i2v-preview").generation is Generation.WAN25
    assert catalog.get("wanx2.1-i2v-turbo").generation is Generation.WAN21


def test_family_defaults_are_official() -> None:
    assert FAMILIES[Family.WAN21_T2V].sampling.steps == 50
    assert FAMILIES[Family.WAN21_T2V].native_fps == 16
    assert FAMILIES[Family.WAN22_T2V_A14B].boundary_ratio == 0.875
    assert FAMILIES[Family.WAN22_I2V_A14B].boundary_ratio == 0.9
    assert FAMILIES[Family.WAN22_T2V_A14B].sampling.guidance_scale_2 == 3.0
    assert FAMILIES[Family.WAN22_TI2V_5B].native_fps == 24
    assert FAMILIES[Family.WAN22_TI2V_5B].size_multiple == 32
    assert FAMILIES[Family.WAN21_T2V].sampling.flow_shift_for(832 * 480) == 3.0
    assert FAMILIES[Family.WAN21_T2V].sampling.flow_shift_for(1280 * 720) == 5.0


def test_operator_overrides_checkpoint_and_sampling() -> None:
    catalog = Catalog.build(
        {
            "wan2.2-t2v-plus": ModelOverride(
                checkpoint="/models/wan13b", family=Family.WAN21_T2V, steps=8, flow_shift=7.0
            )
        },
        steps=20,
    )
    card = catalog.get("wan2.2-t2v-plus")
    assert card.checkpoint.source == "/models/wan13b"
    assert card.checkpoint.family is Family.WAN21_T2V
    assert card.sampling.steps == 8  # per-model beats global
    assert card.sampling.flow_shift_for(832 * 480) == 7.0  # explicit shift at every size
    assert catalog.get("wan2.1-t2v-turbo").sampling.steps == 20  # global step override


def test_continuations_must_be_image_to_video_at_the_same_frame_rate() -> None:
    with pytest.raises(ValueError, match="runs at 24 fps"):
        Catalog.build({"wan2.6-t2v": ModelOverride(continuation_family=Family.WAN22_TI2V_5B)})
    with pytest.raises(ValueError, match="must be an image-to-video"):
        Catalog.build({"wan2.6-t2v": ModelOverride(continuation_family=Family.WAN21_T2V)})
    ok = Catalog.build({"wan2.6-t2v": ModelOverride(continuation_checkpoint="/m/i2v")})
    assert ok.get("wan2.6-t2v").continued_by.source == "/m/i2v"  # type: ignore[union-attr]


def test_override_of_unknown_model_or_wrong_family_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown models"):
        Catalog.build({"nope": ModelOverride()})
    with pytest.raises(ValueError, match="cannot run on"):
        Catalog.build({"wan2.1-t2v-turbo": ModelOverride(family=Family.WAN22_I2V_A14B)})


@pytest.mark.parametrize(
    ("seconds", "fps", "frames"),
    [(5, 16, 81), (2, 16, 33), (15, 16, 241), (10, 16, 161), (5, 24, 121), (3, 16, 49)],
)
def test_frames_are_4n_plus_1_covering_the_duration(seconds: int, fps: int, frames: int) -> None:
    assert frames_for(seconds, fps) == frames
    assert (frames - 1) % 4 == 0 and frames - 1 >= seconds * fps


@pytest.mark.parametrize(
    ("size", "max_area", "multiple", "expected"),
    [
        (Size(832, 480), 832 * 480, 16, Size(832, 480)),  # native
        (Size(624, 624), 832 * 480, 16, Size(624, 624)),
        (Size(1920, 1080), 1280 * 720, 16, Size(1280, 720)),  # scaled to the checkpoint
        (Size(1280, 720), 832 * 480, 16, Size(832, 464)),  # nearest aspect within budget
        (Size(624, 624), 1280 * 704, 32, Size(640, 640)),  # TI2V VAE needs multiples of 32
        (Size(1088, 832), 832 * 480, 16, Size(720, 544)),
    ],
)
def test_generation_size(size: Size, max_area: int, multiple: int, expected: Size) -> None:
    got = generation_size(size, max_area=max_area, multiple=multiple)
    assert got == expected
    assert got.width % multiple == 0 and got.height % multiple == 0
    assert got.area <= max(max_area, size.area)


def test_tiers_of_sizes() -> None:
    assert tier_of(Size(832, 480)) == "480P"
    assert tier_of(Size(1088, 832)) == "720P"
    assert tier_of(Size(1248, 1632)) == "1080P"
    assert tier_of(Size(816, 1104)) == "720P"  # image-driven: nearest budget


def test_the_distilled_preset_and_its_adapter() -> None:
    turbo = ModelOverride(preset="distilled", lora="turbo4")
    card = Catalog.build({"wan2.1-t2v-turbo": turbo}, steps=2).get("wan2.1-t2v-turbo")
    assert (card.sampling.steps, card.sampling.guidance_scale) == (4, 1.0)
    assert card.sampling.flow_shift_for(832 * 480) == 5.0  # at every resolution
    assert (card.adapter, card.adapter_scale) == ("turbo4", 1.0)
    # Two experts: guidance off for both; explicit fields beat the preset's.
    a14b = ModelOverride(preset="distilled", lora="x", steps=6, lora_scale=0.5)
    plus = Catalog.build({"wan2.6-t2v": a14b}).get("wan2.6-t2v")
    assert (plus.sampling.steps, plus.sampling.guidance_scale_2, plus.adapter_scale) == (
        6,
        1.0,
        0.5,
    )
    for bad in (
        {"preset": "distilled"},
        {"lora": "../x"},
        {"lora_scale": 1.0},
        {"lora": "x", "lora_scale": 3},
    ):
        with pytest.raises(pydantic.ValidationError):
            ModelOverride(**bad)
