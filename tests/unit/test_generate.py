"""`wanserve generate`'s pure parts: options -> request, local files vs URLs, the progress
text, and the SSE reader of the remote client."""

from __future__ import annotations

from pathlib import Path

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
from wanserve.request import Media, MediaKind, MediaSource, WebUrl
from wanserve.tasks.models import Progress, TaskStage, TaskStatus


def test_frames_go_to_the_fields_of_the_model_kind() -> None:
    def mark(value: str, field: str) -> MediaSource:
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
    def mark(value: str, field: str) -> MediaSource:
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
