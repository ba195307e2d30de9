"""Passes that make a video: one, chained segments, or shots; joined without repeated frames."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from tests.conftest import FakeRunner
from tests.requests import dashscope_request
from wanserve.catalog import Catalog, Family, Kind
from wanserve.engine.request import EngineProgress
from wanserve.spec import GenerationSpec, build_spec
from wanserve.workers.compose import native_frames, plan, render, shot_count
from wanserve.workers.inputs import Conditioning

CATALOG = Catalog.build(steps=2)


def spec(model: str = "wan2.6-t2v", **fields: Any) -> GenerationSpec:
    card = CATALOG.get(model)
    if card.kind is Kind.TEXT_TO_VIDEO:
        fields.setdefault("prompt", "a fox")
    else:
        fields.setdefault("img_url", "https://e.com/a.png")
    built = build_spec(dashscope_request(model, seed=10, **fields), card)
    return built if built.width is not None else built.with_image_size(640, 480)


@pytest.mark.parametrize(
    ("model", "duration", "frames"),
    [
        ("wan2.6-t2v", 5, [81]),
        ("wan2.6-t2v", 10, [81, 81]),  # 161 frames: 81 + 80 new
        ("wan2.6-t2v", 15, [81, 81, 81]),  # 241 frames
        ("wan2.6-t2v", 7, [81, 33]),  # 113 frames
        ("wan2.6-i2v-flash", 15, [121, 121, 121]),  # TI2V-5B: 121 frames a pass, 24 fps
        ("wan2.5-i2v-preview", 10, [81, 81]),
    ],
)
def test_long_videos_are_chained_segments(model: str, duration: int, frames: list[int]) -> None:
    s = spec(model, duration=duration)
    passes = plan(s)
    assert [p.spec.num_frames for p in passes] == frames
    assert sum(f - (1 if i else 0) for i, f in enumerate(frames)) == s.num_frames
    first, rest = passes[0], passes[1:]
    assert first.spec.kind is s.kind and not first.continues
    assert first.spec.seed == s.seed
    for p in rest:
        assert p.continues and p.spec.kind is Kind.IMAGE_TO_VIDEO and p.spec.prompt == s.prompt
    seeds = [p.spec.seed for p in passes]
    assert len(set(seeds)) == len(seeds)  # fresh noise for every segment, from one lineage
    if s.kind is Kind.TEXT_TO_VIDEO and rest:
        # wan2.6-t2v continues through the Wan2.2 I2V-A14B checkpoint with its own sampling.
        assert rest[0].spec.family is Family.WAN22_I2V_A14B
        assert rest[0].spec.checkpoint == "Wan-AI/Wan2.2-I2V-A14B-Diffusers"
        assert rest[0].spec.guidance_scale == 3.5


def test_an_edited_source_is_followed_window_by_window() -> None:
    """A video made from a source video stays a VACE pass throughout: each pass after the
    first takes the source from the frame it continues (the previous pass's last)."""
    from wanserve.request import SynthesisRequest, media_items

    request = SynthesisRequest(
        model="wan2.7-videoedit",
        prompt="claymation",
        media=media_items([{"type": "video", "url": "https://e.com/v.mp4"}]),
        duration=10,
        ratio="16:9",
    )
    s = build_spec(request, CATALOG.get("wan2.7-videoedit"))
    passes = plan(s)
    assert [p.spec.num_frames for p in passes] == [81, 81]
    assert [p.spec.kind for p in passes] == [Kind.COMPOSITE, Kind.COMPOSITE]
    assert [p.spec.source_offset for p in passes] == [0, 80]
    assert passes[1].continues and passes[1].spec.family is Family.WAN21_VACE


def test_models_without_a_continuation_generate_in_one_pass() -> None:
    s = dataclasses.replace(spec("wan2.2-t2v-plus"), num_frames=161)
    assert [p.spec.num_frames for p in plan(s)] == [161]


def test_shots() -> None:
    assert [shot_count(d) for d in (2, 5, 6, 9, 10, 15)] == [2, 2, 2, 3, 3, 5]
    s = spec("wan2.6-t2v", duration=10)
    passes = plan(s, ["shot one", "shot two", "shot three"])
    assert [p.spec.prompt for p in passes] == ["shot one", "shot two", "shot three"]
    assert [p.spec.seed for p in passes] == [10, 11, 12]  # one seed lineage
    assert [p.continues for p in passes] == [False, False, False]  # cuts


def test_chained_shots_start_from_the_previous_shot() -> None:
    s = spec("wan2.6-t2v", duration=10)
    passes = plan(s, ["one", "two", "three"], chain_shots=True)
    assert [p.spec.prompt for p in passes] == ["one", "two", "three"]
    assert [p.continues for p in passes] == [False, True, True]
    assert [p.spec.kind for p in passes][1:] == [Kind.IMAGE_TO_VIDEO] * 2
    made = sum(p.spec.num_frames - (1 if p.continues else 0) for p in passes)
    assert s.num_frames <= made <= s.num_frames + 3


@pytest.mark.parametrize("model", ["wan2.6-t2v", "wan2.6-i2v-flash"])
def test_shots_cover_every_duration_without_waste(model: str) -> None:
    for seconds in range(2, 16):
        s = spec(model, duration=seconds)
        shots = [f"shot {i}" for i in range(shot_count(seconds))]
        made = sum(p.spec.num_frames - (1 if p.continues else 0) for p in plan(s, shots))
        assert s.num_frames <= made <= s.num_frames + 3, (seconds, made, s.num_frames)


def test_render_joins_frames_and_conditions_each_segment_on_the_last_frame() -> None:
    runner = FakeRunner()
    events: list[EngineProgress] = []
    s = spec("wan2.6-t2v", duration=10)
    s = dataclasses.replace(s, gen_width=64, gen_height=48)
    clip = render(
        s,
        runner=runner,
        conditioning=Conditioning(),
        shots=None,
        on_progress=events.append,
        should_cancel=lambda: False,
    )
    assert clip.frames.shape[0] == 161 and clip.fps == 16
    assert [c.num_frames for c in runner.calls] == [81, 81]
    assert runner.calls[0].first_frame is None
    continued = np.asarray(runner.calls[1].first_frame)
    assert np.array_equal(continued, runner.outputs[0][-1])  # the first segment's last frame
    assert np.array_equal(clip.frames[81:], runner.outputs[1][1:])  # its duplicate is dropped
    denoise = [(e.step, e.total) for e in events if e.stage == "denoise"]
    assert denoise[-1] == (4, 4) and [s for s, _ in denoise] == sorted(s for s, _ in denoise)


@dataclasses.dataclass
class StreamingFake(FakeRunner):
    """The fake engine, handing its frames over the way the real one decodes them: one frame,
    then four at a time."""

    def stream(self, request: Any, *, on_progress: Any, should_cancel: Any, on_frames: Any) -> Any:
        clip = self.run(request, on_progress=on_progress, should_cancel=should_cancel)
        on_frames(clip.frames[:1])
        for start in range(1, len(clip.frames), 4):
            on_frames(clip.frames[start : start + 4])
        return dataclasses.replace(clip, frames=clip.frames[:0])


@pytest.mark.parametrize(
    ("model", "shots", "chain"),
    [
        ("wan2.6-t2v", None, False),  # chained segments: 81 + 80
        ("wan2.6-t2v", ["one", "two", "three"], False),  # cuts
        ("wan2.6-i2v-flash", ["one", "two"], True),  # shots continuing from the last frame
    ],
)
def test_streamed_passes_join_like_whole_ones(
    model: str, shots: list[str] | None, chain: bool
) -> None:
    s = dataclasses.replace(spec(model, duration=10), gen_width=64, gen_height=64)
    cond = Conditioning() if s.kind is Kind.TEXT_TO_VIDEO else Conditioning(image=picture())
    common: dict[str, Any] = {
        "conditioning": cond,
        "shots": shots,
        "on_progress": lambda _e: None,
        "should_cancel": lambda: False,
        "chain_shots": chain,
    }
    whole = render(s, runner=FakeRunner(), **common).frames
    streaming = StreamingFake()
    chunks: list[np.ndarray] = []
    clip = render(s, runner=streaming, on_frames=chunks.append, **common)
    assert len(clip.frames) == 0
    joined = np.concatenate(chunks)
    assert len(joined) == native_frames(s, shots, chain_shots=chain) == len(whole)
    assert np.array_equal(joined, whole)
    # Each continuing pass was conditioned on the last frame the pass before it made.
    for before, call in zip(streaming.outputs, streaming.calls[1:], strict=False):
        if call.first_frame is not None and call.kind is Kind.IMAGE_TO_VIDEO and chain:
            assert np.array_equal(np.asarray(call.first_frame), before[-1])


def picture() -> Any:
    from PIL import Image

    return Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8))


def test_each_window_of_an_edited_source_starts_from_the_last_frame_made() -> None:
    from wanserve.catalog import ModelOverride
    from wanserve.request import SynthesisRequest, media_items
    from wanserve.workers.inputs import Sources

    catalog = Catalog.build({"wan2.7-videoedit": ModelOverride(max_area=64 * 48)}, steps=1)
    request = SynthesisRequest(
        model="wan2.7-videoedit",
        prompt="claymation",
        media=media_items([{"type": "video", "url": "https://e.com/v.mp4"}]),
        duration=7,
        ratio="4:3",
    )
    s = build_spec(request, catalog.get("wan2.7-videoedit"))
    assert (s.gen_width, s.gen_height) == (64, 48)
    source = np.random.default_rng(0).integers(0, 256, (s.num_frames, 48, 64, 3), dtype=np.uint8)
    runner = FakeRunner()
    render(
        s,
        runner=runner,
        conditioning=Conditioning(sources=Sources(video=source)),
        shots=None,
        on_progress=lambda _: None,
        should_cancel=lambda: False,
    )
    first, second = runner.calls
    assert first.video is not None and second.video is not None and second.mask is not None
    assert first.first_frame is None and second.first_frame is None
    assert np.array_equal(second.video[0], runner.outputs[0][-1])  # the last frame made
    assert second.mask[0].max() == 0 and second.mask[1:].min() == 255  # kept, then generated
    # Both are edges of their own window of the source: the second starts at frame 80.
    from wanserve.workers.composite import edges

    assert np.array_equal(second.video[1:], edges(source[81 : 81 + 32]))
