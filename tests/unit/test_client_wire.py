"""The client writes what the server reads: `client_wire.create_body` of any typed request is
read back by the DashScope door (`api/dashscope/protocol.py`) as the same request, so the
client's copy of the field names cannot drift from the server's."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wanserve.api.dashscope.protocol import read_body
from wanserve.catalog import Size
from wanserve.client_wire import create_body, placement
from wanserve.engine.options import CachePreset
from wanserve.request import (
    ADAPTIVE,
    CONTROL_CONDITIONS,
    EXPAND_MODES,
    GUIDANCE_MAX,
    MASK_TYPES,
    RATIOS,
    SEED_MAX,
    STEPS_MAX,
    Edit,
    Extensions,
    Function,
    Inline,
    Media,
    MediaKind,
    MediaSource,
    Medium,
    SynthesisRequest,
    Upload,
    WebUrl,
)

texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)


def sources(name: str, media_type: str) -> st.SearchStrategy[MediaSource]:
    """References to a file of one medium (the server tells a reference video from an image
    in `reference_urls` by its file, so each medium has its own names)."""
    return st.one_of(
        st.builds(WebUrl, st.sampled_from([f"https://e.com/{name}", f"http://[::1]:8/{name}?y=1"])),
        st.builds(Upload, st.sampled_from([f"oss://dir/{name}", f"oss://k/b c {name}"])),
        st.builds(Inline, st.binary(max_size=12), st.just(media_type)),
    )


BY_MEDIUM = {
    Medium.IMAGE: sources("a.png", "image/png"),
    Medium.VIDEO: sources("v.mp4", "video/mp4"),
    Medium.AUDIO: sources("s.wav", "audio/wav"),
}
# The kinds a request may carry several of (lists: references; `input.media` carries the rest
# too, but the flat fields one each).
REFERENCES = (MediaKind.REFERENCE_IMAGE, MediaKind.REFERENCE_VIDEO, MediaKind.REFERENCE_AUDIO)
MODELS = (
    "wan2.1-t2v-turbo",
    "wanx2.1-kf2v-plus",
    "wan2.7-i2v",
    "wan3.0-video",
    "wan2.6-r2v",
    "wan2.1-vace-plus",
    "any-name",
)


@st.composite
def requests(draw: st.DrawFn) -> SynthesisRequest:
    """What a DashScope body can carry, each input named and ordered as the server reads it
    back (`placement`): any mix of kinds, one of each flat one, references repeated."""
    model = draw(st.sampled_from(MODELS))
    single = [k for k in MediaKind if k not in REFERENCES]
    kinds = draw(st.lists(st.sampled_from(single), unique=True, max_size=4))
    kinds += draw(st.lists(st.sampled_from(REFERENCES), max_size=4))
    kinds = draw(st.permutations(kinds))
    drawn = [draw(BY_MEDIUM[kind.medium]) for kind in kinds]
    media = tuple(Media(kinds[i], drawn[i], name) for i, name in placement(model, kinds))
    scale = optional(st.floats(1, 2))
    return draw(
        st.builds(
            SynthesisRequest,
            model=st.just(model),
            prompt=optional(texts),
            negative_prompt=optional(texts),
            media=st.just(media),
            size=optional(st.builds(Size, st.integers(1, 99999), st.integers(1, 99999))),
            resolution=optional(st.sampled_from(["480P", "720p"])),
            duration=optional(st.integers(-5, 30)),
            seed=optional(st.integers(0, SEED_MAX)),
            prompt_extend=optional(st.booleans()),
            watermark=optional(st.booleans()),
            shot_type=optional(st.sampled_from(["single", "multi"])),
            audio=optional(st.booleans()),
            ratio=optional(st.sampled_from([*RATIOS, ADAPTIVE])),
            edit=st.builds(
                Edit,
                function=optional(st.sampled_from(list(Function))),
                obj_or_bg=optional(st.lists(st.sampled_from(["obj", "bg"]), max_size=3).map(tuple)),
                control_condition=optional(st.sampled_from(CONTROL_CONDITIONS)),
                strength=optional(st.floats(0, 1)),
                mask_type=optional(st.sampled_from(MASK_TYPES)),
                expand_ratio=optional(st.floats(0, 1)),
                expand_mode=optional(st.sampled_from(EXPAND_MODES)),
                mask_frame_id=optional(st.integers(1, 10_000)),
                top_scale=scale,
                bottom_scale=scale,
                left_scale=scale,
                right_scale=scale,
            ),
            extensions=st.builds(
                Extensions,
                steps=optional(st.integers(1, STEPS_MAX)),
                guidance_scale=optional(st.floats(0, GUIDANCE_MAX)),
                lora=optional(st.sampled_from(["style-a", "b.v2"])),
                lora_scale=optional(st.floats(0, 2)),
                cache=optional(st.sampled_from(list(CachePreset))),
            ),
            callback_url=optional(st.just("https://hooks.example.com/x")),
        )
    )


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


@given(requests())
def test_the_server_reads_back_what_the_client_writes(request: SynthesisRequest) -> None:
    assert read_body(create_body(request)) == request


def test_each_model_gets_its_inputs_where_it_reads_them() -> None:
    kinds = [MediaKind.REFERENCE_IMAGE, MediaKind.FIRST_FRAME, MediaKind.REFERENCE_IMAGE]
    # wan2.7 and wan3.0: input.media, in the order given.
    assert placement("wan3.0-video", kinds) == [
        (0, "input.media[0]"),
        (1, "input.media[1]"),
        (2, "input.media[2]"),
    ]
    # The others: the flat fields first, then the reference list of the model's kind.
    assert placement("wan2.6-r2v", kinds) == [
        (1, "img_url"),
        (0, "reference_urls[0]"),
        (2, "reference_urls[1]"),
    ]
    assert placement("wan2.1-vace-plus", kinds) == [
        (1, "first_frame_url"),
        (0, "ref_images_url[0]"),
        (2, "ref_images_url[1]"),
    ]
    # Kinds input.media has no type for stay flat on a media[] model.
    assert placement("wan2.7-i2v", [MediaKind.MASK_IMAGE, MediaKind.VIDEO]) == [
        (0, "mask_image_url"),
        (1, "input.media[0]"),
    ]
    with pytest.raises(ValueError, match="video_url carries one input"):
        placement("wan2.1-vace-plus", [MediaKind.VIDEO, MediaKind.VIDEO])


def test_the_client_side_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, wanserve.client, wanserve.client_wire, wanserve.generate\n"
        "print(sorted(m for m in sys.modules if m.startswith('wanserve.api')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
