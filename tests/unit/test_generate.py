"""`wanserve generate`'s pure parts: options -> request, local files vs URLs, the progress
text, and the SSE reader of the remote client."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from wanserve.catalog import Size
from wanserve.client import StreamEvent, parse_events
from wanserve.client_wire import create_body
from wanserve.errors import InvalidParameter
from wanserve.generate import (
    GenerateOptions,
    Update,
    UsageError,
    build_request,
    default_model,
    describe,
    local_file,
)
from wanserve.request import Edit, Function, Media, MediaKind, MediaSource, WebUrl
from wanserve.tasks.models import Progress, TaskStage, TaskStatus


def test_frames_go_to_the_fields_of_the_model_kind() -> None:
    def mark(value: str, field: str, kind: MediaKind) -> MediaSource:
        return WebUrl(f"https://x/{field}/{value}")

    i2v = GenerateOptions(prompt="p", output=Path("o.mp4"), image="a.png", size="832x480")
    assert default_model(i2v) == "wanx2.1-i2v-turbo"
    req = build_request(i2v, model="wanx2.1-i2v-turbo", reference=mark)
    assert req.media == (
        Media(MediaKind.FIRST_FRAME, WebUrl("https://x/img_url/a.png"), "img_url"),
    )
    assert req.size == Size(832, 480)
    kf = GenerateOptions(prompt="p", output=Path("o.mp4"), image="a.png", last_frame="b.png")
    assert default_model(kf) == "wanx2.1-kf2v-plus"
    req = build_request(kf, model="wanx2.1-kf2v-plus", reference=mark)
    assert [(m.kind, m.field) for m in req.media] == [
        (MediaKind.FIRST_FRAME, "first_frame_url"),
        (MediaKind.LAST_FRAME, "last_frame_url"),
    ]
    # The remote client writes the same fields back: the key frames' first is first_frame_url.
    body = create_body(req)
    assert body["input"] == {
        "prompt": "p",
        "first_frame_url": "https://x/first_frame_url/a.png",
        "last_frame_url": "https://x/last_frame_url/b.png",
    }


def test_options_are_read_as_every_door_reads_them() -> None:
    def mark(value: str, field: str, kind: MediaKind) -> MediaSource:
        raise AssertionError("no input")

    bad = GenerateOptions(prompt="p", output=Path("o.mp4"), size="16:9")
    with pytest.raises(InvalidParameter, match="size '16:9' is malformed"):
        build_request(bad, model="wan2.1-t2v-turbo", reference=mark)
    with pytest.raises(InvalidParameter, match="seed -1 must be an integer between"):
        build_request(
            GenerateOptions(prompt="p", output=Path("o.mp4"), seed=-1),
            model="wan2.1-t2v-turbo",
            reference=mark,
        )


def url(value: str, field: str, kind: MediaKind) -> MediaSource:
    return WebUrl(f"https://x/{value}")


def body_of(options: GenerateOptions) -> dict[str, Any]:
    """The create body `wanserve generate --server` sends for these options."""
    model = options.model or default_model(options)
    return create_body(build_request(options, model=model, reference=url))


def opts(**kw: Any) -> GenerateOptions:
    return GenerateOptions(prompt="p", output=Path("o.mp4"), **kw)


def test_vace_functions_send_the_flat_fields_and_their_parameters() -> None:
    outpaint = opts(function="video_outpainting", video="src.mp4", scale="1, 1,1.5,1.5")
    assert default_model(outpaint) == "wan2.1-vace-plus"
    assert body_of(outpaint) == {
        "model": "wan2.1-vace-plus",
        "input": {
            "prompt": "p",
            "video_url": "https://x/src.mp4",
            "function": "video_outpainting",
        },
        "parameters": {
            "top_scale": 1.0,
            "bottom_scale": 1.0,
            "left_scale": 1.5,
            "right_scale": 1.5,
        },
    }
    edit = opts(
        model="wanx2.1-vace-plus",
        function="video_edit",
        video="src.mp4",
        mask="m.png",
        ref_images=("a.png",),
        mask_type="fixed",
        expand_ratio=0.1,
        expand_mode="bbox",
        mask_frame_id=3,
    )
    assert body_of(edit) == {
        "model": "wanx2.1-vace-plus",
        "input": {
            "prompt": "p",
            "video_url": "https://x/src.mp4",
            "mask_image_url": "https://x/m.png",
            "ref_images_url": ["https://x/a.png"],
            "function": "video_edit",
        },
        "parameters": {
            "mask_type": "fixed",
            "expand_ratio": 0.1,
            "expand_mode": "bbox",
            "mask_frame_id": 3,
        },
    }
    # A mask video (by its type) goes as mask_video_url; the frames of video_extension as
    # first_frame_url (the VACE model's name for it), first_clip_url.
    masked = body_of(opts(function="video_edit", video="s.mp4", mask="m.MOV"))
    assert masked["input"]["mask_video_url"] == "https://x/m.MOV"
    extend = body_of(opts(function="video_extension", image="f.png", clip="c.mp4"))
    assert extend["input"] == {
        "prompt": "p",
        "first_frame_url": "https://x/f.png",
        "first_clip_url": "https://x/c.mp4",
        "function": "video_extension",
    }
    refs = opts(
        function="image_reference",
        ref_images=("a.png", "b.png"),
        obj_or_bg="obj,bg",
        control_condition="scribble",
        strength=0.5,
    )
    body = body_of(refs)
    assert body["input"]["ref_images_url"] == ["https://x/a.png", "https://x/b.png"]
    assert body["parameters"] == {
        "obj_or_bg": ["obj", "bg"],
        "control_condition": "scribble",
        "strength": 0.5,
    }
    assert build_request(refs, model="wan2.1-vace-plus", reference=url).edit == Edit(
        function=Function.IMAGE_REFERENCE,
        obj_or_bg=("obj", "bg"),
        control_condition="scribble",
        strength=0.5,
    )


def test_wan27_and_wan30_models_take_their_inputs_as_media() -> None:
    clip = opts(clip="c.mp4", audio="a.wav", last_frame="l.png", resolution="720P")
    assert default_model(clip) == "wan2.7-i2v"
    req = build_request(clip, model="wan2.7-i2v", reference=url)
    assert [(m.kind, m.field) for m in req.media] == [
        (MediaKind.LAST_FRAME, "input.media[0]"),
        (MediaKind.DRIVING_AUDIO, "input.media[1]"),
        (MediaKind.FIRST_CLIP, "input.media[2]"),
    ]
    assert create_body(req)["input"] == {
        "prompt": "p",
        "media": [
            {"type": "last_frame", "url": "https://x/l.png"},
            {"type": "driving_audio", "url": "https://x/a.wav"},
            {"type": "first_clip", "url": "https://x/c.mp4"},
        ],
    }
    wan3 = opts(model="wan3.0-video", ref_images=("a.png", "b.png"), ratio="4:3", duration=-1)
    assert body_of(wan3) == {
        "model": "wan3.0-video",
        "input": {
            "prompt": "p",
            "media": [
                {"type": "reference_image", "url": "https://x/a.png"},
                {"type": "reference_image", "url": "https://x/b.png"},
            ],
        },
        "parameters": {"ratio": "4:3", "duration": -1},
    }
    r27 = body_of(opts(model="wan2.7-r2v", image="f.png", ref_images=("a.png",)))
    assert [m["type"] for m in r27["input"]["media"]] == ["first_frame", "reference_image"]


def test_reference_to_video_models_take_reference_urls() -> None:
    r2v = opts(ref_images=("a.png", "https://e.com/b.jpg"), size="1280x720")
    assert default_model(r2v) == "wan2.6-r2v"
    assert body_of(r2v) == {
        "model": "wan2.6-r2v",
        "input": {
            "prompt": "p",
            "reference_urls": ["https://x/a.png", "https://x/https://e.com/b.jpg"],
        },
        "parameters": {"size": "1280*720"},
    }


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (opts(function="video-synthesis"), "function 'video-synthesis' must be one of"),
        (opts(scale="1.5,1.5"), "scale '1.5,1.5' must be four numbers"),
        (opts(scale="1,1,x,1"), "scale '1,1,x,1' must be four numbers"),
        (opts(scale="1,1,3,1"), "left_scale 3.0 must be a number from 1 to 2"),
        (opts(strength=1.5), "strength 1.5 must be a number from 0 to 1"),
        (opts(expand_ratio=-0.1), "expand_ratio -0.1 must be a number from 0 to 1"),
        (opts(obj_or_bg="obj,fg"), "obj_or_bg entries must be 'obj' or 'bg', not 'fg'"),
        (opts(ratio="2:1"), "ratio '2:1' must be one of"),
        (opts(mask_type="auto"), "mask_type 'auto' must be one of tracking, fixed"),
        (opts(mask_frame_id=0), "mask_frame_id 0 must be an integer between 1 and"),
    ],
)
def test_editing_options_are_read_as_the_dashscope_door_reads_them(
    options: GenerateOptions, message: str
) -> None:
    with pytest.raises(InvalidParameter, match=message):
        build_request(options, model="wan2.1-vace-plus", reference=url)


def test_the_command_line_reaches_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    from wanserve import cli, generate

    seen: list[GenerateOptions] = []

    def run(options: GenerateOptions, settings: object) -> int:
        seen.append(options)
        return 0

    monkeypatch.setattr(generate, "run", run)
    argv = ["generate", "a fox", "-o", "fox.mp4", "--video", "v.mp4", "--ref-image", "a.png"]
    argv += ["--ref-image", "b.png", "--function", "video_repainting", "--obj-or-bg", "obj,bg"]
    argv += ["--control-condition", "scribble", "--strength", "0.5", "--scale", "1,1,1,2"]
    argv += ["--mask", "m.png", "--mask-type", "fixed", "--expand-ratio", "0.2"]
    argv += ["--expand-mode", "hull", "--mask-frame-id", "2", "--clip", "c.mp4", "--ratio", "1:1"]
    assert cli.main(argv) == 0
    assert seen == [
        GenerateOptions(
            prompt="a fox",
            output=Path("fox.mp4"),
            video="v.mp4",
            ref_images=("a.png", "b.png"),
            function="video_repainting",
            obj_or_bg="obj,bg",
            control_condition="scribble",
            strength=0.5,
            scale="1,1,1,2",
            mask="m.png",
            mask_type="fixed",
            expand_ratio=0.2,
            expand_mode="hull",
            mask_frame_id=2,
            clip="c.mp4",
            ratio="1:1",
        )
    ]


def test_urls_pass_through_and_local_files_are_checked(tmp_path: Path) -> None:
    for url in ("https://x/a.png", "oss://dir/a.png", "data:image/png;base64,AA", "ftp://x/a"):
        assert local_file(url, "img_url", max_bytes=10) is None
    small = tmp_path / "a.png"
    small.write_bytes(b"12345")
    assert local_file(f"file://{small}", "img_url", max_bytes=10) == small
    with pytest.raises(UsageError, match="larger than"):
        local_file(str(small), "img_url", max_bytes=4)
    with pytest.raises(UsageError, match="no such file"):
        local_file(str(tmp_path / "missing.png"), "img_url", max_bytes=10)


def test_progress_text() -> None:
    def at(stage: TaskStage, step: int = 0) -> str:
        return describe(Update(TaskStatus.RUNNING, None, Progress(stage, step, 50, 10)))

    assert describe(Update(TaskStatus.PENDING, 2, None)) == "queued (2 ahead)"
    assert describe(Update(TaskStatus.PENDING, 0, None)) == "queued"
    assert at(TaskStage.LOADING) == "loading model"
    assert at(TaskStage.DENOISING, 3) == "denoising step 3 of 50"
    assert at(TaskStage.DECODING) == "decoding"


def test_sse_reader_skips_comments_and_keeps_ids() -> None:
    lines = [
        "id: 7",
        "event: status",
        'data: {"task_status": "PENDING"}',
        "",
        ": keep-alive",
        "",
        "event: done",
        'data: {"output": {}}',
        "",
    ]
    assert list(parse_events(iter(lines))) == [
        StreamEvent("status", "7", {"task_status": "PENDING"}),
        StreamEvent("done", "7", {"output": {}}),
    ]


def test_models_lists_what_each_model_takes(capsys: pytest.CaptureFixture[str]) -> None:
    """`wanserve models`' last column: the inputs a create body sends each model."""
    from wanserve import cli

    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[-1] == "INPUTS"
    inputs = {line.split()[0]: line.split("]", 1)[1].strip() for line in lines[1:]}
    assert inputs["wan2.1-t2v-turbo"] == "prompt"
    assert inputs["wanx2.1-kf2v-plus"] == "first_frame_url, last_frame_url"
    assert inputs["wan2.6-i2v"] == "img_url, audio_url"
    assert inputs["wan2.7-i2v"] == "media[]: first_frame, last_frame, driving_audio, first_clip"
    assert inputs["wan3.0-video"] == "media[]: first_frame, last_frame, reference_image"
    assert inputs["wan2.6-r2v"] == "reference_urls: reference_image"
    assert inputs["wan2.1-vace-plus"].startswith("function: image_reference, video_repainting")
    assert " 2-30,-1 " in next(line for line in lines if line.startswith("wan3.0-video "))
