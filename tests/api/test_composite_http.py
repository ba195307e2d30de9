"""DashScope's newer models through HTTP on the real engine (tiny dummy checkpoints): the
`media[]` protocol (wan2.7, wan3.0), reference-to-video and the five VACE functions. Every
video is decoded and its size, frame rate and length checked; every refusal is a DashScope
error naming the field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.api.test_engine_http import SMALL, data_uri, video_of
from tests.conftest import Harness
from tests.video_files import video_data_uri
from wanserve.engine.runner import PipelineRunner

# What these tests check is each model's route and the delivered file's size, rate and
# length: x264's fastest preset encodes the 720P+ outputs in half the time.
FAST = {"models": SMALL, "steps": 1, "x264_preset": "ultrafast"}


@pytest.fixture
def engine(harness_factory: Callable[..., Harness], runner: PipelineRunner) -> Harness:
    return harness_factory(runner=runner, **FAST)


def media(kind: str, url: str) -> dict[str, str]:
    return {"type": kind, "url": url}


CLIP = video_data_uri(seconds=1.0, fps=12, width=96, height=64)
SOURCE = video_data_uri(seconds=2.0, fps=12, width=64, height=64)
LONG_SOURCE = video_data_uri(seconds=7.0, fps=8, width=64, height=48)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # wan3.0: text only, the model choosing the length (-1: its default 5 s), 30 fps.
        (
            {
                "model": "wan3.0-video",
                "input": {"prompt": "a cat"},
                "parameters": {"resolution": "480P", "ratio": "1:1", "duration": -1},
            },
            (624, 624, 30, 5.0),
        ),
        # wan3.0: a first frame; 7 s is two chained passes; adaptive ratio follows the image.
        (
            {
                "model": "wan3.0-video-prime",
                "input": {"prompt": "a cat", "media": [media("first_frame", data_uri(1))]},
                "parameters": {"resolution": "480P", "duration": 7},
            },
            (720, 544, 30, 7.0),
        ),
        # wan3.0: reference images (VACE), 4:3 at 720P.
        (
            {
                "model": "wan3.0-video",
                "input": {
                    "prompt": "Image 1 walks past Image 2",
                    "media": [
                        media("reference_image", data_uri(2)),
                        media("reference_image", data_uri(3, (80, 160))),
                    ],
                },
                "parameters": {"resolution": "720P", "ratio": "4:3", "duration": 2},
            },
            (1104, 832, 30, 2.0),
        ),
        # wan2.7-i2v: first and last frame (FLF2V), with the sound track sent.
        (
            {
                "model": "wan2.7-i2v",
                "input": {
                    "prompt": "waves",
                    "media": [
                        media("first_frame", data_uri(4)),
                        media("last_frame", data_uri(5)),
                    ],
                },
                "parameters": {"resolution": "720P", "duration": 3},
            },
            (1104, 816, 30, 3.0),
        ),
        # wan2.7-i2v: continue a clip (VACE extension); the size follows the clip (3:2).
        (
            {
                "model": "wan2.7-i2v",
                "input": {"prompt": "the car drives on", "media": [media("first_clip", CLIP)]},
                "parameters": {"resolution": "720P", "duration": 4},
            },
            (1168, 768, 30, 4.0),
        ),
        # wan2.6-r2v: a character from a reference image, at a legacy size, 24 fps.
        (
            {
                "model": "wan2.6-r2v",
                "input": {"prompt": "character1 waves", "reference_urls": [data_uri(6)]},
                "parameters": {"size": "1280*720", "duration": 2},
            },
            (1280, 720, 24, 2.0),
        ),
        # wan2.7-r2v: a first frame and a reference; the video follows the frame.
        (
            {
                "model": "wan2.7-r2v",
                "input": {
                    "prompt": "Image 1 enters",
                    "media": [
                        media("reference_image", data_uri(7)),
                        media("first_frame", data_uri(8, (120, 160))),
                    ],
                },
                "parameters": {"resolution": "720P", "duration": 2},
            },
            (816, 1104, 30, 2.0),
        ),
    ],
    ids=["wan3-t2v", "wan3-i2v-chained", "wan3-r2v", "wan27-kf", "wan27-clip", "r2v26", "r2v27"],
)
def test_media_models_generate(
    engine: Harness, body: dict[str, Any], expected: tuple[int, int, int, float]
) -> None:
    res = engine.create(body)
    assert res.status_code == 200, res.text
    assert video_of(engine, engine.wait(res.json()["output"]["task_id"])) == expected


def test_videoedit_follows_its_source_for_its_whole_length(engine: Harness) -> None:
    """wan2.7-videoedit: duration 0 (the default) is the source's length, 7 s here: two VACE
    passes, each over its own window of the source; the size follows the source (4:3)."""
    body = {
        "model": "wan2.7-videoedit",
        "input": {
            "prompt": "make it claymation",
            "media": [media("video", LONG_SOURCE), media("reference_image", data_uri(9))],
        },
        "parameters": {"resolution": "720P"},
    }
    res = engine.create(body)
    assert res.status_code == 200, res.text
    done = engine.wait(res.json()["output"]["task_id"])
    assert video_of(engine, done) == (1104, 816, 30, 7.0)
    assert done["usage"]["duration"] == 7.0


VACE = "wan2.1-vace-plus"


@pytest.mark.parametrize(
    ("inputs", "parameters"),
    [
        (
            {
                "function": "image_reference",
                "ref_images_url": [data_uri(1), data_uri(2, (200, 100))],
            },
            {"obj_or_bg": ["obj", "bg"]},
        ),
        (
            {"function": "video_extension", "first_clip_url": CLIP, "last_frame_url": data_uri(3)},
            {},
        ),
        (
            {"function": "video_outpainting", "video_url": SOURCE},
            {"left_scale": 1.5, "right_scale": 1.5},
        ),
        (
            {"function": "video_edit", "video_url": SOURCE, "mask_image_url": data_uri(4)},
            {"mask_type": "fixed", "expand_ratio": 0.1},
        ),
        (
            {"function": "video_repainting", "video_url": SOURCE},
            {"control_condition": "scribble", "strength": 0.5},
        ),
    ],
    ids=lambda v: v.get("function", "") if isinstance(v, dict) else "",
)
def test_every_vace_function_generates(
    engine: Harness, inputs: dict[str, Any], parameters: dict[str, Any]
) -> None:
    body = {
        "model": VACE,
        "input": {"prompt": "a fox in a trench coat", **inputs},
        "parameters": {"size": "960*960", **parameters},
    }
    res = engine.create(body)
    assert res.status_code == 200, res.text
    assert video_of(engine, engine.wait(res.json()["output"]["task_id"])) == (960, 960, 30, 5.0)


def test_the_sdk_puts_vace_videos_in_parameters_and_they_are_read_there(engine: Harness) -> None:
    body = {
        "model": "wanx2.1-vace-plus",
        "input": {"prompt": "p", "function": "video_outpainting", "extend_prompt": True},
        "parameters": {"video_url": SOURCE, "top_scale": 1.2},
    }
    res = engine.create(body)
    assert res.status_code == 200, res.text
    assert video_of(engine, engine.wait(res.json()["output"]["task_id"]))[2:] == (30, 5.0)


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (
            {"model": "wan3.0-video", "input": {"prompt": "p", "media": [{"type": "x"}]}},
            "media[0]",
            "input.media[0].type 'x' is not a media type",
        ),
        (
            {
                "model": "wan3.0-video",
                "input": {
                    "prompt": "p",
                    "media": [
                        media("first_frame", data_uri(1)),
                        media("reference_image", data_uri(2)),
                    ],
                },
            },
            "input.media[1]",
            "this request sends first_frame + reference_image",
        ),
        (
            {
                "model": "wan3.0-video",
                "input": {"prompt": "p", "media": [media("reference_video", CLIP)]},
            },
            "input.media[0]",
            "cannot take reference_video inputs",
        ),
        (
            {
                "model": "wan2.7-i2v",
                "input": {
                    "prompt": "p",
                    "media": [media("first_frame", data_uri(1)), media("first_frame", data_uri(2))],
                },
            },
            "input.media[1]",
            "takes at most 1 first_frame input",
        ),
        (
            {"model": "wan3.0-video", "input": {"prompt": "p", "negative_prompt": "n"}},
            "negative_prompt",
            "negative_prompt is not a parameter of wan3.0-video",
        ),
        (
            {"model": "wan3.0-video", "input": {"prompt": "p"}, "parameters": {"duration": 31}},
            "duration",
            "or -1 to let the model choose",
        ),
        (
            {
                "model": "wan2.7-i2v",
                "input": {"prompt": "p", "media": [media("first_frame", data_uri(1))]},
                "parameters": {"ratio": "16:9"},
            },
            "ratio",
            "ratio is not a parameter of wan2.7-i2v",
        ),
        (
            {"model": VACE, "input": {"prompt": "p", "ref_images_url": [data_uri(1)]}},
            "function",
            "input.function is required by wan2.1-vace-plus",
        ),
        (
            {
                "model": VACE,
                "input": {
                    "prompt": "p",
                    "function": "image_reference",
                    "ref_images_url": [data_uri(1)],
                },
                "parameters": {"obj_or_bg": ["obj", "bg"]},
            },
            "obj_or_bg",
            "ref_images_url and obj_or_bg must be the same length.",
        ),
        (
            {
                "model": VACE,
                "input": {"prompt": "p", "function": "video_repainting", "video_url": SOURCE},
                "parameters": {"control_condition": "depth"},
            },
            "control_condition",
            "needs a depth annotator model",
        ),
        (
            {
                "model": VACE,
                "input": {
                    "prompt": "p",
                    "function": "video_edit",
                    "video_url": SOURCE,
                    "mask_image_url": data_uri(1),
                },
            },
            "mask_type",
            "mask_type 'tracking' (the default)",
        ),
        (
            {
                "model": VACE,
                "input": {"prompt": "p", "function": "video_outpainting", "video_url": SOURCE},
                "parameters": {"left_scale": 2.5},
            },
            "left_scale",
            "left_scale 2.5 must be a number from 1 to 2",
        ),
        (
            {
                "model": "wan2.1-t2v-turbo",
                "input": {"prompt": "p", "ref_images_url": [data_uri(1)]},
            },
            "ref_images_url[0]",
            "is not an input of wan2.1-t2v-turbo",
        ),
    ],
)
def test_documented_refusals(
    engine: Harness, body: dict[str, Any], field: str, message: str
) -> None:
    res = engine.create(body)
    assert res.status_code == 400, res.text
    error = res.json()
    assert error["code"] == "InvalidParameter" and error["request_id"]
    assert message in error["message"], error["message"]
    del field  # the field is named in the message; kept in the table for the reader


def test_a_bad_video_fails_the_task_with_a_clear_error(engine: Harness) -> None:
    junk = "data:video/mp4;base64,AAAAIGZ0eXBpc29tAAACAGlzb21pc28y"  # an ftyp box, no movie
    body = {
        "model": VACE,
        "input": {"prompt": "p", "function": "video_outpainting", "video_url": junk},
        "parameters": {"size": "960*960"},
    }
    out = engine.wait(engine.create(body).json()["output"]["task_id"])["output"]
    assert (out["task_status"], out["code"]) == ("FAILED", "InvalidParameter"), out
    assert out["message"].startswith("video_url ")


def test_depth_control_with_a_depth_annotator_configured(
    harness_factory: Callable[..., Harness], runner: PipelineRunner
) -> None:
    """With `depth_annotator` set (a tiny random depth model in dummy mode), repainting
    takes depth control: the source's depth maps steer the pass."""
    h = harness_factory(runner=runner, **FAST, depth_annotator="depth-model")
    body = {
        "model": VACE,
        "input": {"prompt": "a fox", "function": "video_repainting", "video_url": SOURCE},
        "parameters": {"size": "960*960", "control_condition": "depth", "strength": 0.8},
    }
    res = h.create(body)
    assert res.status_code == 200, res.text
    assert video_of(h, h.wait(res.json()["output"]["task_id"])) == (960, 960, 30, 5.0)
