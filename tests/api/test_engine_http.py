"""The real engine (tiny dummy checkpoints) behind the HTTP API: every family, cancelling a
RUNNING task, and failures that leave the worker healthy.

Each model is given a small pixel budget (`max_area`, an operator setting): the engine
denoises at about 80x48 and the media layer scales to the exact size asked for, so every
family runs in seconds while taking the same code path as a full-size request.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import av
import numpy as np
import pytest
import torch
from PIL import Image

from tests.conftest import Harness
from wanserve.catalog import Catalog, Family
from wanserve.engine.runner import PipelineRunner

SMALL = {name: {"max_area": 80 * 48} for name in Catalog.build().names()}
SMALL["wan2.5-t2v-preview"] = {
    "checkpoint": "Wan-AI/Wan2.2-TI2V-5B-Diffusers",
    "family": "wan2.2-ti2v-5b",
    "max_area": 96 * 64,
}


def data_uri(seed: int, size: tuple[int, int] = (160, 120), fmt: str = "PNG") -> str:
    pixels = np.random.default_rng(seed).integers(
        0, 256, size=(size[1], size[0], 3), dtype=np.uint8
    )
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format=fmt)
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture
def engine(harness_factory: Callable[..., Harness], runner: PipelineRunner) -> Harness:
    return harness_factory(runner=runner, models=SMALL, steps=2)


def video_of(h: Harness, body: dict[str, Any]) -> tuple[int, int, int, float]:
    """(width, height, fps, seconds) of the finished task's MP4."""
    out = body["output"]
    assert out["task_status"] == "SUCCEEDED", body
    path = h.components.services.storage.path(f"videos/{out['task_id']}.mp4")  # type: ignore[attr-defined]
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.width, s.height, int(s.average_rate), round(float(s.duration * s.time_base), 3)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        # Wan2.1 T2V 1.3B
        (
            {
                "model": "wan2.1-t2v-turbo",
                "input": {"prompt": "a cat"},
                "parameters": {"size": "624*624"},
            },
            (624, 624, 30, 5.0),
        ),
        # Wan2.2 T2V A14B (two experts)
        (
            {
                "model": "wan2.2-t2v-plus",
                "input": {"prompt": "a cat"},
                "parameters": {"size": "480*832"},
            },
            (480, 832, 30, 5.0),
        ),
        # Wan2.2 TI2V-5B, text only (an operator mapping)
        (
            {
                "model": "wan2.5-t2v-preview",
                "input": {"prompt": "a cat"},
                "parameters": {"size": "832*480"},
            },
            (832, 480, 24, 5.0),
        ),
        # Wan2.1 I2V with CLIP; the output follows the image's aspect (4:3) at the 480P budget
        (
            {
                "model": "wanx2.1-i2v-turbo",
                "input": {"img_url": data_uri(1)},
                "parameters": {"resolution": "480P", "duration": 3},
            },
            (720, 544, 30, 3.0),
        ),
        # Wan2.2 I2V A14B
        (
            {
                "model": "wan2.2-i2v-plus",
                "input": {"prompt": "waves", "img_url": data_uri(2, fmt="JPEG")},
                "parameters": {"resolution": "480P"},
            },
            (720, 544, 30, 5.0),
        ),
        # Wan2.2 TI2V-5B, first-frame mode
        (
            {
                "model": "wan2.2-i2v-flash",
                "input": {"img_url": data_uri(3, (120, 160))},
                "parameters": {"resolution": "480P"},
            },
            (544, 720, 30, 5.0),
        ),
        # Wan2.6 on the A14B I2V checkpoint: 2 s at 24 fps
        (
            {
                "model": "wan2.6-i2v",
                "input": {"img_url": data_uri(4, (200, 200), "WEBP")},
                "parameters": {"resolution": "720P", "duration": 2},
            },
            (960, 960, 24, 2.0),
        ),
        # Wan2.1 FLF2V: first and last frame
        (
            {
                "model": "wanx2.1-kf2v-plus",
                "input": {"first_frame_url": data_uri(5), "last_frame_url": data_uri(6)},
            },
            (1104, 816, 30, 5.0),
        ),
    ],
)
def test_every_family_through_http(
    engine: Harness, body: dict[str, Any], expected: tuple[int, int, int, float]
) -> None:
    res = engine.create(body)
    assert res.status_code == 200, res.text
    done = engine.wait(res.json()["output"]["task_id"])
    assert video_of(engine, done) == expected


def test_cancel_a_running_task_stops_it_at_the_next_step(
    harness_factory: Callable[..., Harness], runner: PipelineRunner
) -> None:
    slow = {**SMALL, "wan2.1-t2v-turbo": {"max_area": 80 * 48, "steps": 400}}
    h = harness_factory(runner=runner, models=slow, steps=2)
    body = {
        "model": "wan2.1-t2v-turbo",
        "input": {"prompt": "a cat"},
        "parameters": {"size": "832*480"},
    }
    task_id = h.create(body).json()["output"]["task_id"]
    h.wait(task_id, until=lambda b: b["output"].get("step", 0) >= 3)
    res = h.client.post(f"/api/v1/tasks/{task_id}/cancel", headers=h.headers())
    assert res.status_code == 200, res.text
    out = h.wait(task_id)["output"]
    assert out["task_status"] == "CANCELED" and "end_time" in out and "video_url" not in out
    # Stopped at a step boundary, long before the end (no wall-clock bound: see tests/waiting).
    task = h.components.store.get(task_id)
    assert task is not None and task.progress is not None and task.progress.step < 400
    assert not h.components.services.storage.path(f"videos/{task_id}.mp4").exists()  # type: ignore[attr-defined]
    # The worker and the resident model carry on.
    loads = runner.manager.loads
    quick = {**body, "model": "wanx2.1-t2v-turbo"}
    h2 = harness_factory(runner=runner, models=SMALL, steps=2)
    assert (
        h2.wait(h2.create(quick).json()["output"]["task_id"])["output"]["task_status"]
        == "SUCCEEDED"
    )
    assert runner.manager.loads == loads


@contextmanager
def failing_transformer(runner: PipelineRunner, error: BaseException) -> Iterator[None]:
    """A fixture model: the resident Wan2.1 T2V transformer raises `error` when called."""
    checkpoint = Catalog.build().get("wan2.1-t2v-turbo").checkpoint.source
    with runner.manager.lease(
        checkpoint, Family.WAN21_T2V, Catalog.build().get("wan2.1-t2v-turbo").kind
    ) as leased:
        transformer = leased.pipeline.transformer

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise error

    transformer.forward = boom
    try:
        yield
    finally:
        del transformer.forward  # back to the class's forward


@pytest.mark.parametrize(
    ("error", "code", "message"),
    [
        (
            torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
            "InternalError.Algo",
            "ran out of memory generating 81 frames at 80x48 with wan2.1-t2v-turbo. Try a shorter",
        ),
        (
            RuntimeError("cuDNN error: CUDNN_STATUS_INTERNAL_ERROR"),
            "InternalError",
            "An internal error occurred while generating the video",
        ),
    ],
)
def test_engine_failures_end_failed_and_the_worker_recovers(
    engine: Harness, runner: PipelineRunner, error: BaseException, code: str, message: str
) -> None:
    body = {
        "model": "wan2.1-t2v-turbo",
        "input": {"prompt": "a cat"},
        "parameters": {"size": "832*480"},
    }
    with failing_transformer(runner, error):
        failed = engine.wait(engine.create(body).json()["output"]["task_id"])["output"]
    assert (failed["task_status"], failed["code"]) == ("FAILED", code)
    assert message in failed["message"]
    assert "cuDNN" not in failed["message"]  # internals stay in the log
    ok = engine.wait(engine.create(body).json()["output"]["task_id"])
    assert ok["output"]["task_status"] == "SUCCEEDED"


@pytest.mark.parametrize(
    ("img_url", "message"),
    [
        ("data:image/png;base64,%%%", "img_url holds invalid base64 data"),
        ("data:image/png," + "x", "img_url is not a base64 data URI"),
        ("data:image/png;base64," + "A" * 15_000_000, "img_url is larger than 10 MB"),
    ],
)
def test_malformed_inline_images_are_refused_at_once(
    engine: Harness, img_url: str, message: str
) -> None:
    res = engine.create({"model": "wan2.2-i2v-plus", "input": {"img_url": img_url}})
    assert res.status_code == 400 and res.json()["code"] == "InvalidParameter", res.text
    assert message in res.json()["message"]


def test_inline_bytes_that_are_not_an_image_fail_the_task(engine: Harness) -> None:
    junk = "data:image/png;base64," + base64.b64encode(b"not an image at all").decode()
    body = {"model": "wan2.2-i2v-plus", "input": {"img_url": junk}}
    out = engine.wait(engine.create(body).json()["output"]["task_id"])["output"]
    assert (out["task_status"], out["code"]) == ("FAILED", "InvalidParameter")
    assert "img_url is not a readable image" in out["message"]
    # The task row holds a reference, not the client's bytes.
    task = engine.components.store.get(out["task_id"])
    assert task is not None and task.spec.image is not None
    assert task.spec.image.url.startswith("oss://dashscope-instant/inline/")
