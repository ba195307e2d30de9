"""The official `openai` SDK (pinned: the last line with `client.videos`) against a real
`wanserve serve` process on tiny dummy checkpoints, with only `base_url` changed.

Every model gets a small pixel budget (tests/api/test_engine_http.py `SMALL`) and one
denoising step, so a video takes seconds while going through the same code as a full one.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import av
import httpx
import numpy as np
import openai
import pytest
from PIL import Image

from tests.api.test_engine_http import SMALL
from tests.server import ServerProcess
from tests.waiting import pause, scaled, wait_until

pytestmark = [
    pytest.mark.slow,
    # Every `videos` method is marked deprecated upstream (OpenAI's Sora API shut down); the
    # /v1/videos shape lives on in open servers, which is what this door serves.
    pytest.mark.filterwarnings("ignore:The Sora API is scheduled:DeprecationWarning"),
]
POLL_AFTER_MS = 300


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(
        tmp_path_factory.mktemp("openai-sdk"),
        WANSERVE_STEPS="1",
        WANSERVE_MODELS=json.dumps(SMALL),
        WANSERVE_OPENAI_POLL_AFTER_MS=str(POLL_AFTER_MS),
        WANSERVE_X264_PRESET="ultrafast",
    ) as proc:
        yield proc


@pytest.fixture(scope="module")
def key(server: ServerProcess) -> str:
    return server.create_key()


@pytest.fixture
def client(server: ServerProcess, key: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.base}/v1", api_key=key, max_retries=0) as c:
        yield c


def png() -> bytes:
    pixels = np.random.default_rng(5).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def dashscope(server: ServerProcess, key: str, method: str, path: str, **kw: Any) -> Any:
    headers = {"Authorization": f"Bearer {key}", "X-DashScope-Async": "enable"}
    res = httpx.request(
        method, f"{server.base}/api/v1{path}", headers=headers, timeout=scaled(30), **kw
    )
    assert res.status_code == 200, res.text
    return res.json()


def test_create_and_poll_honours_poll_after_then_download(
    client: openai.OpenAI, tmp_path: Path
) -> None:
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        pause(seconds)  # the interval the server asked for, kept

    # The SDK's poll() sleeps through the resource's _sleep: record what it was told to wait.
    client.videos._sleep = sleep  # type: ignore[method-assign]
    video = client.videos.create_and_poll(
        prompt="a kitten in the moonlight", model="wan2.1-t2v-turbo", size="832x480", seconds="5"
    )
    assert video.status == "completed", video
    assert (video.size, video.seconds, video.progress) == ("832x480", "5", 100)
    assert video.completed_at is not None and video.expires_at is not None
    # Each unfinished retrieve carried openai-poll-after-ms and the SDK waited exactly that.
    assert slept and set(slept) == {POLL_AFTER_MS / 1000}

    content = client.videos.download_content(video.id)
    path = tmp_path / "sdk.mp4"
    content.write_to_file(path)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264" and (s.width, s.height) == (832, 480)
        assert sum(1 for _ in c.decode(video=0)) == 30 * 5


def test_multipart_file_reference_and_cross_door_visibility(
    client: openai.OpenAI, server: ServerProcess, key: str
) -> None:
    # A first frame uploaded as a file; no model: the image-to-video default.
    video = client.videos.create(
        prompt="waves",
        input_reference=("frame.png", png(), "image/png"),
        size="832x480",  # type: ignore[arg-type]  (the SDK's Literal lists Sora's sizes)
        extra_body={"seed": 7, "num_inference_steps": 1},
    )
    assert video.model == "wan2.2-i2v-flash" and video.status in ("queued", "in_progress")
    # The same task through the DashScope door.
    task = dashscope(server, key, "GET", f"/tasks/{video.id}")["output"]
    assert task["task_id"] == video.id and task["task_status"] in ("PENDING", "RUNNING")
    done = client.videos.poll(video.id)
    assert done.status == "completed" and done.size == "720x544", done

    # And the other way: a DashScope task is a video.
    created = dashscope(
        server,
        key,
        "POST",
        "/services/aigc/video-generation/video-synthesis",
        json={"model": "wan2.1-t2v-turbo", "input": {"prompt": "a dog"}},
    )
    task_id = created["output"]["task_id"]
    seen = client.videos.retrieve(task_id)
    assert seen.id == task_id and seen.model == "wan2.1-t2v-turbo" and seen.size == "1280x720"
    assert client.videos.poll(task_id).status == "completed"


def test_list_pages_through_every_video(client: openai.OpenAI) -> None:
    made = {client.videos.create(prompt=f"list {n}").id for n in range(3)}
    first = client.videos.list(limit=1)
    assert len(first.data) == 1 and first.has_more
    # Auto-pagination follows last_id as `after`, one video per page.
    ids = [v.id for v in client.videos.list(limit=1)]
    assert made <= set(ids) and len(ids) == len(set(ids))
    oldest_first = [v.id for v in client.videos.list(limit=2, order="asc")]
    assert oldest_first == list(reversed(ids))
    for video_id in made:  # leave the queue to the next tests
        client.videos.delete(video_id)


def test_delete_cancels_a_running_video(
    client: openai.OpenAI, server: ServerProcess, key: str
) -> None:
    before = dashscope(server, key, "GET", "/usage")["total"]["canceled"]
    # 5 s at 24 fps through the 5B checkpoint at 100 steps: long enough to be caught running.
    video = client.videos.create(
        prompt="a long one", model="wan2.5-t2v-preview", extra_body={"steps": 100}
    )
    wait_until(
        lambda: client.videos.retrieve(video.id).status,
        lambda status: status == "in_progress",
        interval=0.1,
        what=f"video {video.id} in progress",
    )
    deleted = client.videos.delete(video.id)
    assert deleted.id == video.id and deleted.deleted and deleted.object == "video.deleted"
    with pytest.raises(openai.NotFoundError):
        client.videos.retrieve(video.id)
    gone = dashscope(server, key, "GET", f"/tasks/{video.id}")["output"]
    assert gone["task_status"] == "UNKNOWN"
    # The run stopped: it is metered as canceled once the worker ends it at its next step.
    wait_until(
        lambda: dashscope(server, key, "GET", "/usage")["total"]["canceled"],
        lambda canceled: canceled > before,
        interval=0.2,
        what="the run metered as canceled",
    )


def test_errors_in_openai_shape(client: openai.OpenAI, server: ServerProcess) -> None:
    with pytest.raises(openai.BadRequestError) as bad_size:
        client.videos.create(prompt="x", size="999x999")  # type: ignore[arg-type]
    assert bad_size.value.code == "InvalidParameter" and bad_size.value.param == "size"
    with pytest.raises(openai.BadRequestError) as bad_model:
        client.videos.create(prompt="x", model="sora-2")
    assert bad_model.value.param == "model" and "sora-2" in bad_model.value.message
    assert bad_model.value.request_id  # from X-Request-Id
    mine = client.videos.create(prompt="mine")
    base = f"{server.base}/v1"
    with openai.OpenAI(base_url=base, api_key=server.create_key(), max_retries=0) as other:
        with pytest.raises(openai.NotFoundError):
            other.videos.retrieve(mine.id)
        with pytest.raises(openai.NotFoundError):
            other.videos.delete(mine.id)
    client.videos.delete(mine.id)
    with (
        openai.OpenAI(base_url=base, api_key="sk-wrong", max_retries=0) as stranger,
        pytest.raises(openai.AuthenticationError) as refused,
    ):
        stranger.videos.list()
    assert refused.value.code == "InvalidApiKey"
