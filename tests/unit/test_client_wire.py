"""The client writes what the server reads: `client_wire.create_body` of any typed request is
read back by the DashScope door (`api/dashscope/protocol.py`) as the same request, so the
client's copy of the field names cannot drift from the server's."""

from __future__ import annotations

import subprocess
import sys

from hypothesis import given
from hypothesis import strategies as st

from wanserve.api.dashscope.protocol import read_body
from wanserve.catalog import Size
from wanserve.client_wire import create_body
from wanserve.engine.options import CachePreset
from wanserve.request import (
    GUIDANCE_MAX,
    SEED_MAX,
    STEPS_MAX,
    Extensions,
    Inline,
    Media,
    MediaKind,
    SynthesisRequest,
    Upload,
    WebUrl,
)

texts = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=20)
sources = st.one_of(
    st.builds(WebUrl, st.sampled_from(["https://e.com/a.png", "http://[::1]:8/x?y=1"])),
    st.builds(Upload, st.sampled_from(["oss://dir/a.png", "oss://k/b c.wav"])),
    st.builds(Inline, st.binary(max_size=12), st.sampled_from(["image/png", "audio/wav"])),
)


@st.composite
def media(draw: st.DrawFn) -> tuple[Media, ...]:
    """What a DashScope body can carry: a first frame (with a last one: key frames), audio."""
    found: list[Media] = []
    last = draw(st.booleans())
    if draw(st.booleans()) or last:
        field = "first_frame_url" if last else "img_url"
        found.append(Media(MediaKind.FIRST_FRAME, draw(sources), field))
    if last:
        found.append(Media(MediaKind.LAST_FRAME, draw(sources), "last_frame_url"))
    if draw(st.booleans()):
        found.append(Media(MediaKind.DRIVING_AUDIO, draw(sources), "audio_url"))
    return tuple(found)


def optional(strategy: st.SearchStrategy[object]) -> st.SearchStrategy[object]:
    return st.none() | strategy


requests = st.builds(
    SynthesisRequest,
    model=st.sampled_from(["wan2.1-t2v-turbo", "any-name"]),
    prompt=optional(texts),
    negative_prompt=optional(texts),
    media=media(),
    size=optional(st.builds(Size, st.integers(1, 99999), st.integers(1, 99999))),
    resolution=optional(st.sampled_from(["480P", "720p"])),
    duration=optional(st.integers(-5, 30)),
    seed=optional(st.integers(0, SEED_MAX)),
    prompt_extend=optional(st.booleans()),
    watermark=optional(st.booleans()),
    shot_type=optional(st.sampled_from(["single", "multi"])),
    audio=optional(st.booleans()),
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


@given(requests)
def test_the_server_reads_back_what_the_client_writes(request: SynthesisRequest) -> None:
    assert read_body(create_body(request)) == request


def test_the_client_side_imports_nothing_of_the_server() -> None:
    code = (
        "import sys, wanserve.client, wanserve.client_wire, wanserve.generate\n"
        "print(sorted(m for m in sys.modules if m.startswith('wanserve.api')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
