"""Every validation rule of the seeds, applied by `build_spec` (the only place they live)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.requests import dashscope_request
from wanserve.catalog import DEFAULT_NEGATIVE_PROMPT, Catalog, Kind
from wanserve.errors import EmptyModel, InvalidParameter, InvalidURL
from wanserve.request import SEED_MAX, Inline
from wanserve.spec import (
    Features,
    GenerationSpec,
    MediaRef,
    build_spec,
    image_driven_size,
    resolve_card,
)

CATALOG = Catalog.build()
IMG = "https://example.com/cat.png"


NO_FEATURES = Features()


def spec(
    model: str = "wan2.1-t2v-turbo", features: Features = NO_FEATURES, **fields: Any
) -> GenerationSpec:
    kind = CATALOG.get(model).kind
    if kind is Kind.IMAGE_TO_VIDEO:
        fields.setdefault("img_url", IMG)
    elif kind is Kind.TEXT_TO_VIDEO:
        fields.setdefault("prompt", "a cat")
    req = dashscope_request(model, **fields)
    return build_spec(req, resolve_card(req, CATALOG), features=features)


def rejects(match: str, **fields: Any) -> None:
    with pytest.raises(InvalidParameter, match=match):
        spec(**fields)


# -- model --


@pytest.mark.parametrize("model", [None, ""])
def test_missing_model(model: object) -> None:
    with pytest.raises(EmptyModel):
        dashscope_request(model, prompt="x")


def test_model_must_be_a_known_string() -> None:
    with pytest.raises(InvalidParameter, match="model must be a string"):
        dashscope_request(5)
    with pytest.raises(InvalidParameter, match="Model not exist"):
        resolve_card(dashscope_request("wan2.1-t2v-turb"), CATALOG)


# -- prompts --


@pytest.mark.parametrize("prompt", [None, "", "   "])
def test_text_to_video_needs_a_prompt(prompt: object) -> None:
    rejects("input.prompt is required", prompt=prompt)


def test_prompt_must_be_text() -> None:
    rejects("prompt must be a string", prompt=["a", "cat"])


def test_image_to_video_prompt_is_optional() -> None:
    s = spec("wan2.2-i2v-plus")
    assert s.prompt == "" and s.orig_prompt is None


@pytest.mark.parametrize(
    ("model", "limit"),
    [
        ("wan2.6-t2v", 1500),
        ("wan2.5-t2v-preview", 1500),
        ("wan2.2-t2v-plus", 800),
        ("wan2.1-t2v-turbo", 800),
        ("wan2.6-i2v-flash", 1500),
        ("wanx2.1-i2v-turbo", 800),
    ],
)
def test_long_prompts_are_truncated_not_rejected(model: str, limit: int) -> None:
    text = "猫" * (limit + 37)  # each Chinese character counts as one
    s = spec(model, prompt=text)
    assert s.prompt == "猫" * limit
    assert s.orig_prompt == text


def test_absurdly_long_text_is_refused() -> None:
    assert spec(prompt="x" * 20_000).orig_prompt == "x" * 20_000
    rejects("prompt has 20001 characters; more than 20000 are refused", prompt="x" * 20_001)
    rejects("negative_prompt has 20001 characters", negative_prompt="x" * 20_001)


def test_negative_prompt_truncated_to_500_or_defaulted() -> None:
    assert spec(negative_prompt="x" * 900).negative_prompt == "x" * 500
    assert spec(negative_prompt="flower").negative_prompt == "flower"
    assert spec().negative_prompt == DEFAULT_NEGATIVE_PROMPT
    rejects("negative_prompt must be a string", negative_prompt=3)


# -- size and resolution --


def test_size_default_per_model() -> None:
    assert (spec("wan2.1-t2v-turbo").width, spec("wan2.1-t2v-turbo").height) == (1280, 720)
    assert str(spec("wan2.6-t2v").size) == "1920*1080"
    assert str(spec("wan2.2-t2v-plus").size) == "1920*1080"


@pytest.mark.parametrize(
    ("model", "size", "ok"),
    [
        ("wan2.1-t2v-turbo", "832*480", True),
        ("wan2.1-t2v-turbo", "1088*832", True),
        ("wan2.1-t2v-turbo", "1920*1080", False),
        ("wan2.1-t2v-plus", "832*480", False),
        ("wan2.1-t2v-plus", "960*960", True),
        ("wan2.2-t2v-plus", "1280*720", False),
        ("wan2.2-t2v-plus", "624*624", True),
        ("wan2.2-t2v-plus", "1248*1632", True),
        ("wan2.6-t2v", "480*832", False),
        ("wan2.6-t2v", "720*1280", True),
        ("wan2.5-t2v-preview", "480*832", True),
        ("wan2.5-t2v-preview", "1440*1440", True),
    ],
)
def test_size_must_be_one_of_the_models_sizes(model: str, size: str, ok: bool) -> None:
    if ok:
        assert str(spec(model, size=size).size) == size
    else:
        with pytest.raises(InvalidParameter, match=re.escape(f"size '{size}' is not supported")):
            spec(model, size=size)


@pytest.mark.parametrize("size", ["720P", "16:9", "1280x720", 1280, "1280*", "*720"])
def test_malformed_size(size: object) -> None:
    rejects("size .* is malformed: write width\\*height", size=size)


def test_size_picks_the_tier_and_generation_size() -> None:
    s = spec(size="1280*720")  # 1.3B checkpoint: generated at its 480P budget, then scaled
    assert s.tier == "720P"
    assert (s.width, s.height) == (1280, 720)
    assert (s.gen_width, s.gen_height) == (832, 464)
    assert s.flow_shift == 3.0  # 480P-area generation uses the low-resolution shift


def test_resolution_is_for_image_to_video_only() -> None:
    rejects("resolution is not a parameter of text-to-video", resolution="720P")
    with pytest.raises(InvalidParameter, match="size is not a parameter of image-to-video"):
        spec("wan2.2-i2v-plus", size="832*480")


@pytest.mark.parametrize(
    ("model", "resolution", "ok"),
    [
        ("wan2.2-i2v-plus", "480P", True),
        ("wan2.2-i2v-plus", "720P", False),
        ("wan2.2-i2v-plus", "1080p", True),
        ("wanx2.1-i2v-plus", "480P", False),
        ("wan2.6-i2v", "480P", False),
        ("wan2.5-i2v-preview", "480P", True),
        ("wan2.2-i2v-flash", "4K", False),
    ],
)
def test_resolution_tiers(model: str, resolution: str, ok: bool) -> None:
    if ok:
        assert spec(model, resolution=resolution).tier == resolution.upper()
    else:
        with pytest.raises(InvalidParameter, match=r"resolution .* allowed"):
            spec(model, resolution=resolution)


def test_image_to_video_default_tier_and_unsized_spec() -> None:
    s = spec("wan2.2-i2v-flash")
    assert s.tier == "720P"
    assert s.width is None and s.gen_width is None
    with pytest.raises(ValueError, match="not known before the image"):
        _ = s.size


def test_seeds_example_750x1000_at_720p_gives_816x1104() -> None:
    sized = spec("wan2.5-i2v-preview", resolution="720P").with_image_size(750, 1000)
    assert (sized.width, sized.height) == (816, 1104)
    assert (sized.gen_width, sized.gen_height) == (816, 1104)  # A14B handles 720P natively


@pytest.mark.parametrize(
    ("image", "tier", "expected"),
    [
        ((1920, 1080), "480P", (832, 464)),
        ((1080, 1920), "720P", (720, 1280)),
        ((1000, 1000), "480P", (624, 624)),
        ((1000, 1000), "1080P", (1440, 1440)),
        ((1024, 768), "720P", (1104, 816)),
        ((3000, 1000), "720P", (1648, 544)),
    ],
)
def test_image_driven_sizes(image: tuple[int, int], tier: str, expected: tuple[int, int]) -> None:
    got = image_driven_size(*image, tier)
    assert (got.width, got.height) == expected
    assert got.width % 16 == 0 and got.height % 16 == 0
    assert abs(got.width / got.height - image[0] / image[1]) < 0.06


# -- duration --


@pytest.mark.parametrize(
    ("model", "duration", "ok"),
    [
        ("wan2.6-t2v", 2, True),
        ("wan2.6-t2v", 15, True),
        ("wan2.6-t2v", 1, False),
        ("wan2.6-t2v", 16, False),
        ("wan2.5-t2v-preview", 10, True),
        ("wan2.5-t2v-preview", 7, False),
        ("wan2.2-t2v-plus", 5, True),
        ("wan2.2-t2v-plus", 10, False),
        ("wan2.1-t2v-turbo", 3, False),
        ("wanx2.1-i2v-turbo", 3, True),
        ("wanx2.1-i2v-turbo", 4, True),
        ("wanx2.1-i2v-turbo", 6, False),
        ("wan2.6-i2v-flash", 12, True),
        ("wan2.1-t2v-turbo", 5.0, True),
    ],
)
def test_duration(model: str, duration: object, ok: bool) -> None:
    if ok:
        assert spec(model, duration=duration).duration == duration
    else:
        with pytest.raises(
            InvalidParameter, match=f"duration {duration!r} is not supported by {model}"
        ):
            spec(model, duration=duration)


@pytest.mark.parametrize("duration", ["5", 5.5, True, None])
def test_duration_type(duration: object) -> None:
    if duration is None:
        assert spec(duration=None).duration == 5
    else:
        rejects("duration .* must be a whole number of seconds", duration=duration)


def test_duration_sets_native_frames_and_output_fps() -> None:
    s = spec("wan2.6-t2v", duration=10, size="1280*720")
    assert (s.fps, s.native_fps, s.num_frames) == (24, 16, 161)
    t = spec("wan2.1-t2v-turbo", size="832*480")
    assert (t.fps, t.native_fps, t.num_frames) == (30, 16, 81)


# -- seed, flags --


@pytest.mark.parametrize("seed", [0, 12345, SEED_MAX])
def test_seed_bounds(seed: int) -> None:
    assert spec(seed=seed).seed == seed


@pytest.mark.parametrize("seed", [-1, SEED_MAX + 1, "42", 1.5, False])
def test_bad_seed(seed: object) -> None:
    rejects("seed .* must be an integer between 0 and 2147483647", seed=seed)


def test_missing_seed_is_drawn_and_kept() -> None:
    seeds = {spec().seed for _ in range(5)}
    assert all(0 <= s <= SEED_MAX for s in seeds) and len(seeds) > 1


@pytest.mark.parametrize("name", ["prompt_extend", "watermark"])
def test_boolean_flags(name: str) -> None:
    assert getattr(spec(**{name: True}), name) is True
    assert getattr(spec(**{name: False}), name) is False
    rejects(f"{name} must be true or false", **{name: "yes"})
    rejects(f"{name} must be true or false", **{name: 1})


def test_flag_defaults() -> None:
    s = spec()
    assert s.prompt_extend is True and s.watermark is False


# -- shot_type --


def test_shot_type() -> None:
    assert spec("wan2.6-t2v").shot_type == "single"
    assert spec("wan2.1-t2v-turbo", shot_type="single").shot_type == "single"
    rejects("shot_type 'panorama' must be 'single' or 'multi'", shot_type="panorama")
    rejects("shot_type 'multi' is not supported by wan2.1-t2v-turbo", shot_type="multi")
    # Without prompt extension, multi has no effect (the seeds' rule).
    assert spec("wan2.6-t2v", shot_type="multi", prompt_extend=False).shot_type == "single"
    with pytest.raises(InvalidParameter, match=r"none is configured"):
        spec("wan2.6-t2v", shot_type="multi")
    assert (
        spec("wan2.6-t2v", shot_type="multi", features=Features(multi_shot=True)).shot_type
        == "multi"
    )


# -- audio --


def test_audio_rules() -> None:
    # Silent models: asking for sound is refused, asking for silence is fine.
    rejects("audio is not supported by wan2.2-t2v-plus", model="wan2.2-t2v-plus", audio=True)
    assert spec("wan2.2-t2v-plus", audio=False).audio is False
    rejects("audio_url is not supported by wan2.1-t2v-turbo", audio_url="https://e.com/a.mp3")
    # Audio models without a dubbing backend: default falls back to silence, explicit is refused.
    assert spec("wan2.5-t2v-preview").audio is False
    rejects("automatic dubbing, which is not configured", model="wan2.5-t2v-preview", audio=True)
    # With a backend, dubbing is on by default and can be turned off.
    on = Features(audio_generation=True)
    assert spec("wan2.5-t2v-preview", features=on).audio is True
    assert spec("wan2.5-t2v-preview", features=on, audio=False).audio is False
    # audio_url wins over audio.
    s = spec("wan2.6-t2v", features=on, audio=True, audio_url="https://e.com/a.mp3")
    assert s.audio is False and s.audio_ref == MediaRef("audio_url", "https://e.com/a.mp3")
    rejects("audio must be true or false", model="wan2.5-t2v-preview", audio="on")


# -- media inputs --


def test_image_inputs() -> None:
    assert spec("wan2.2-i2v-plus").image == MediaRef("img_url", IMG)
    assert spec("wan2.2-i2v-plus", img_url=None, first_frame_url=IMG).image == MediaRef(
        "first_frame_url", IMG
    )
    with pytest.raises(InvalidParameter, match="img_url is required"):
        spec("wan2.2-i2v-plus", img_url=None)
    with pytest.raises(InvalidParameter, match="once"):
        spec("wan2.2-i2v-plus", first_frame_url=IMG)
    with pytest.raises(InvalidParameter, match="last_frame_url is not supported"):
        spec("wan2.2-i2v-plus", last_frame_url=IMG)
    rejects("img_url is not a parameter of text-to-video", img_url=IMG)


def test_key_frames_need_both_ends() -> None:
    s = spec("wanx2.1-kf2v-plus", first_frame_url=IMG, last_frame_url=IMG + "?2")
    assert s.image == MediaRef("first_frame_url", IMG)
    assert s.last_image == MediaRef("last_frame_url", IMG + "?2")
    assert s.kind is Kind.KEYFRAMES_TO_VIDEO and s.tier == "720P"
    for missing in ({"first_frame_url": IMG}, {"last_frame_url": IMG}):
        with pytest.raises(InvalidParameter, match=r"needs both input\.first_frame_url and"):
            spec("wanx2.1-kf2v-plus", **missing)
    sized = s.with_image_size(1280, 720)
    assert (sized.width, sized.height) == (1280, 720)


@pytest.mark.parametrize(
    "url",
    ["https://a.b/c.png", "http://a.b/c.png", "oss://bucket/x.png", "HTTPS://a.b/c.png"],
)
def test_accepted_image_references(url: str) -> None:
    stored = url.replace("HTTPS:", "https:")  # one spelling of the scheme
    assert spec("wan2.2-i2v-plus", img_url=url).image == MediaRef("img_url", stored)


def test_inline_images_are_decoded_and_never_stored_in_the_spec() -> None:
    made = spec("wan2.2-i2v-plus", img_url="data:image/png;base64,AAAA")
    assert made.image == MediaRef("img_url", "", inline=Inline(b"\0\0\0", "image/png"))
    # The task service moves inline bytes to the upload store before the spec is stored.
    with pytest.raises(ValueError, match="stored as an upload first"):
        made.to_json()


@pytest.mark.parametrize("url", ["file:///tmp/x.png", "/tmp/x.png", "ftp://a/b.png", "cat.png"])
def test_refused_image_references(url: str) -> None:
    with pytest.raises(InvalidURL, match="img_url"):
        spec("wan2.2-i2v-plus", img_url=url)


def test_spec_json_round_trip() -> None:
    s = spec("wan2.6-t2v", size="1280*720", audio_url="https://e.com/a.wav", seed=9)
    assert GenerationSpec.from_json(s.to_json()) == s
    i = spec("wan2.2-i2v-plus").with_image_size(640, 480)
    assert GenerationSpec.from_json(i.to_json()) == i


# -- per-request sampling (extension) --


def test_steps_and_guidance_default_to_the_models() -> None:
    card = CATALOG.get("wan2.2-t2v-plus")
    made = spec("wan2.2-t2v-plus")
    assert made.steps == card.sampling.steps
    assert (made.guidance_scale, made.guidance_scale_2) == (
        card.sampling.guidance_scale,
        card.sampling.guidance_scale_2,
    )


def test_steps_and_guidance_overrides() -> None:
    made = spec(steps=7, guidance_scale=3.5)
    assert (made.steps, made.guidance_scale, made.guidance_scale_2) == (7, 3.5, None)
    # A two-expert checkpoint: the scale applies to both, so 1.0 turns guidance off entirely.
    both = spec("wan2.2-t2v-plus", guidance_scale=1)
    assert (both.guidance_scale, both.guidance_scale_2) == (1.0, 1.0)
    assert spec(steps=100).steps == 100 and spec(steps=1.0).steps == 1


@pytest.mark.parametrize("steps", [0, 101, -1, 2.5, "4", True])
def test_steps_bounds(steps: object) -> None:
    with pytest.raises(InvalidParameter, match=r"steps .* between 1 and 100") as info:
        spec(steps=steps)
    assert info.value.field == "steps"


@pytest.mark.parametrize("scale", [-0.1, 20.01, float("nan"), float("inf"), "7", True])
def test_guidance_bounds(scale: object) -> None:
    with pytest.raises(InvalidParameter, match="guidance_scale") as info:
        spec(guidance_scale=scale)
    assert info.value.field == "guidance_scale"


# -- size naming a tier (the OpenAI door) --


def test_size_names_the_tier_of_an_image_driven_model() -> None:
    made = spec("wan2.2-i2v-flash", size="832*480", size_names_tier=True)
    assert made.tier == "480P" and made.width is None  # the image still decides the aspect
    assert spec("wan2.2-i2v-flash", size="1080*1920", size_names_tier=True).tier == "1080P"
    with pytest.raises(InvalidParameter, match=r"not supported by wanx2\.1-i2v-plus") as info:
        spec("wanx2.1-i2v-plus", size="832*480", size_names_tier=True)  # 720P only
    assert info.value.field == "size"
    with pytest.raises(InvalidParameter, match="not both"):
        spec("wan2.2-i2v-flash", size="832*480", resolution="480P", size_names_tier=True)
    # Without the flag (the DashScope door) size stays refused for image-driven models.
    rejects("size is not a parameter", model="wan2.2-i2v-flash", size="832*480")
    # Text-to-video sizes are unchanged by it.
    assert spec(size="832*480", size_names_tier=True).size.width == 832


def test_a_request_may_choose_its_block_cache_preset() -> None:
    assert spec().cache == "off"  # the model's own (no override)
    for preset in ("off", "fast", "faster"):
        assert spec(cache=preset).cache == preset
    for bad in ("fastest", "", 1, True, ["fast"]):
        rejects("cache", cache=bad)


def test_a_composite_spec_survives_the_store() -> None:
    from wanserve.api.dashscope.protocol import read_body

    request = read_body(
        {
            "model": "wan2.1-vace-plus",
            "input": {
                "prompt": "p",
                "function": "image_reference",
                "ref_images_url": ["https://e.com/a.png", "https://e.com/b.png"],
            },
            "parameters": {"obj_or_bg": ["obj", "bg"]},
        }
    )
    built = build_spec(request, Catalog.build().get("wan2.1-vace-plus"))
    assert built.edit is not None and built.edit.roles == ("obj", "bg")
    assert [ref.kind for ref in built.inputs] == ["reference_image", "reference_image"]
    assert GenerationSpec.from_json(built.to_json()) == built


def test_depth_control_needs_the_depth_annotator_setting() -> None:
    from wanserve.api.dashscope.protocol import read_body

    request = read_body(
        {
            "model": "wan2.1-vace-plus",
            "input": {
                "prompt": "p",
                "function": "video_repainting",
                "video_url": "https://e.com/v.mp4",
            },
            "parameters": {"control_condition": "depth", "strength": 0.7},
        }
    )
    card = Catalog.build().get("wan2.1-vace-plus")
    with pytest.raises(InvalidParameter, match="sets depth_annotator") as info:
        build_spec(request, card)
    assert info.value.field == "control_condition"
    built = build_spec(request, card, features=Features(annotators=frozenset({"depth"})))
    assert built.edit is not None and (built.edit.control, built.edit.strength) == ("depth", 0.7)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            {
                "model": "wan2.7-i2v",
                "input": {
                    "prompt": "p",
                    "media": [
                        {"type": "first_clip", "url": "https://e.com/c.mp4"},
                        {"type": "last_frame", "url": "https://e.com/l.png"},
                    ],
                },
                "parameters": {"duration": 15},
            },
            "input.media[1]",
            "ends on a given frame or clip is one pass",
        ),
        (
            {
                "model": "wan2.1-vace-plus",
                "input": {
                    "prompt": "p",
                    "function": "video_edit",
                    "video_url": "https://e.com/v.mp4",
                    "mask_image_url": "https://e.com/m.png",
                },
                "parameters": {"mask_type": "fixed", "mask_frame_id": 82},
            },
            "mask_frame_id",
            "past the video's 81 frames",
        ),
    ],
)
def test_composite_requests_a_pass_cannot_make_are_refused_at_once(
    body: dict[str, Any], field: str, message: str
) -> None:
    from wanserve.api.dashscope.protocol import read_body

    request = read_body(body)
    with pytest.raises(InvalidParameter, match=message) as info:
        build_spec(request, Catalog.build().get(request.model))
    assert info.value.field == field


def test_a_door_naming_sizes_picks_the_tier_and_ratio_of_a_ratio_model() -> None:
    from wanserve.catalog import Size
    from wanserve.request import SynthesisRequest

    card = Catalog.build().get("wan3.0-video")
    tall = SynthesisRequest(
        model="wan3.0-video", prompt="p", size=Size(720, 1280), size_names_tier=True
    )
    assert build_spec(tall, card).size == Size(720, 1280)
    legacy = SynthesisRequest(
        model="wan3.0-video", prompt="p", size=Size(1088, 832), size_names_tier=True
    )
    with pytest.raises(InvalidParameter, match="1104\\*832"):
        build_spec(legacy, card)
