"""The unmodified `dashscope` SDK against a real `wanserve serve` process in dummy mode, with
only `base_http_api_url` changed.

Every server here gives its models a small pixel budget (`SMALL`, an operator setting): the
engine denoises and decodes at about 80x48 and the media layer still delivers exactly the size
and length asked for (832*480, 5 s, 150 frames, encoded in full). What these tests check is the
SDK's protocol and the delivered file; generation at full size on a CPU took 35 s idle and
350 s on a busy machine for one video, close to the per-test hang guard, while proving nothing
the engine tests do not."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from contextlib import contextmanager
from http import HTTPStatus
from pathlib import Path

import av
import dashscope
import httpx
import pytest
from dashscope import VideoSynthesis
from dashscope.aigc.video_synthesis import AioVideoSynthesis

from tests.llm_server import Script, llm_server
from tests.server import ServerProcess
from tests.waiting import scaled

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    # One denoising step: the tiny model's output is noise at any step count.
    from tests.api.test_engine_http import SMALL

    with ServerProcess(
        tmp_path_factory.mktemp("sdk"), WANSERVE_STEPS="1", WANSERVE_MODELS=json.dumps(SMALL)
    ) as proc:
        yield proc


@contextmanager
def pointed_at(proc: ServerProcess) -> Iterator[None]:
    """Aim the SDK at `proc` (the only change a DashScope user makes), then back."""
    previous = dashscope.base_http_api_url
    dashscope.base_http_api_url = f"{proc.base}/api/v1"
    try:
        yield
    finally:
        dashscope.base_http_api_url = previous


@pytest.fixture(autouse=True)
def _sdk_base_url(request: pytest.FixtureRequest) -> Iterator[None]:
    """Each test talks to the server its fixture started, whatever order tests run in."""
    for name in ("server", "small_server", "feature_server"):
        if name in request.fixturenames:
            found = request.getfixturevalue(name)
            proc = found if isinstance(found, ServerProcess) else found[0]
            with pointed_at(proc):
                yield
            return
    yield


@pytest.fixture(scope="module")
def key(server: ServerProcess) -> str:
    secret = server.create_key()
    assert secret.startswith("sk-") and len(secret) > 40
    return secret


def check_mp4(url: str, path: Path, *, size: tuple[int, int], fps: int, seconds: float) -> None:
    res = httpx.get(url, timeout=scaled(60))
    assert res.status_code == 200 and res.headers["content-type"] == "video/mp4"
    path.write_bytes(res.content)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert s.codec_context.name == "h264"
        assert s.codec_context.pix_fmt == "yuv420p"
        assert (s.width, s.height) == size
        assert s.average_rate == fps
        assert abs(float(s.duration * s.time_base) - seconds) < 1e-6
        assert sum(1 for _ in c.decode(video=0)) == fps * seconds


def test_call_returns_a_real_video(server: ServerProcess, key: str, tmp_path: Path) -> None:
    rsp = VideoSynthesis.call(
        api_key=key,
        model="wan2.1-t2v-turbo",
        prompt="a kitten in the moonlight",
        size="832*480",
        seed=12345,
        watermark=True,
        negative_prompt="flower",
    )
    assert rsp.status_code == HTTPStatus.OK, rsp
    assert rsp.output.task_status == "SUCCEEDED"
    assert rsp.output.orig_prompt == rsp.output.actual_prompt == "a kitten in the moonlight"
    assert (
        rsp.usage.video_count == 1
        and rsp.usage.video_duration == 5
        and rsp.usage.video_ratio == "832*480"
    )
    check_mp4(rsp.output.video_url, tmp_path / "call.mp4", size=(832, 480), fps=30, seconds=5)


def test_async_call_fetch_cancel_wait_list_and_aio(
    small_server: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    server, key = small_server
    first = VideoSynthesis.async_call(
        api_key=key, model="wanx2.1-t2v-turbo", prompt="waves at sunset", size="624*624", seed=1
    )
    assert first.status_code == HTTPStatus.OK and first.output.task_status == "PENDING"
    # One worker: the second task waits behind the first; if the first is already done, the
    # second is RUNNING, which cancel also stops (cancel_running is on by default).
    second = VideoSynthesis.async_call(
        api_key=key, model="wan2.1-t2v-turbo", prompt="a dog", size="832*480"
    )
    canceled = VideoSynthesis.cancel(second, api_key=key)
    assert canceled.status_code == HTTPStatus.OK
    assert VideoSynthesis.fetch(second, api_key=key).output.task_status == "CANCELED"
    again = VideoSynthesis.cancel(second, api_key=key)
    assert (again.status_code, again.code) == (400, "UnsupportedOperation")

    fetched = VideoSynthesis.fetch(first, api_key=key)
    assert fetched.status_code == HTTPStatus.OK
    assert fetched.output.task_status in ("PENDING", "RUNNING", "SUCCEEDED")

    done = VideoSynthesis.wait(first, api_key=key)
    assert done.status_code == HTTPStatus.OK and done.output.task_status == "SUCCEEDED"
    check_mp4(done.output.video_url, tmp_path / "wait.mp4", size=(624, 624), fps=30, seconds=5)

    listed = VideoSynthesis.list(api_key=key, page_size=50)
    assert listed.status_code == HTTPStatus.OK
    statuses = {t["task_id"]: t["task_status"] for t in listed.output["tasks"]}
    assert (
        statuses[first.output.task_id] == "SUCCEEDED"
        and statuses[second.output.task_id] == "CANCELED"
    )
    filtered = VideoSynthesis.list(api_key=key, status="CANCELED", model_name="wan2.1-t2v-turbo")
    assert [t["task_id"] for t in filtered.output["tasks"]] == [second.output.task_id]

    async def aio() -> tuple[str, str]:
        fetched = await AioVideoSynthesis.fetch(first.output.task_id, api_key=key)
        waited = await AioVideoSynthesis.wait(first.output.task_id, api_key=key)
        return fetched.output.task_status, waited.output.video_url

    status, url = asyncio.run(aio())
    assert status == "SUCCEEDED" and url.startswith(server.base)


def test_sdk_sees_dashscope_errors(server: ServerProcess, key: str) -> None:
    bad = VideoSynthesis.async_call(
        api_key=key, model="wan2.1-t2v-turbo", prompt="x", size="1920*1080"
    )
    assert (bad.status_code, bad.code) == (400, "InvalidParameter") and "1920*1080" in bad.message
    wrong = VideoSynthesis.async_call(api_key="sk-wrong", model="wan2.1-t2v-turbo", prompt="x")
    assert (wrong.status_code, wrong.code) == (401, "InvalidApiKey")
    unknown = VideoSynthesis.fetch("no-such-task", api_key=key)
    assert unknown.status_code == HTTPStatus.OK and unknown.output.task_status == "UNKNOWN"


@pytest.fixture(scope="module")
def small_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, str]]:
    """A server whose models denoise at a small pixel budget (an operator setting), so every
    family can run through the SDK in seconds."""
    from tests.api.test_engine_http import SMALL

    proc = ServerProcess(
        tmp_path_factory.mktemp("sdk-small"),
        WANSERVE_STEPS="2",
        WANSERVE_MODELS=json.dumps(SMALL),
        # The delivered file is checked for its codec, size, rate and length; x264's fastest
        # preset makes the same kind of file in half the time.
        WANSERVE_X264_PRESET="ultrafast",
    )
    with proc:
        yield proc, proc.create_key()


@pytest.mark.parametrize(
    ("model", "kwargs", "size"),
    [
        ("wan2.2-t2v-plus", {"prompt": "waves", "size": "832*480"}, (832, 480)),
        (
            "wanx2.1-i2v-turbo",
            {"img_url": "IMAGE", "resolution": "480P", "duration": 3},
            (720, 544),
        ),
        ("wan2.2-i2v-plus", {"img_url": "IMAGE", "resolution": "480P"}, (720, 544)),
        (
            "wan2.6-i2v-flash",
            {"img_url": "IMAGE", "resolution": "720P", "duration": 2},
            (1104, 816),
        ),
        ("wanx2.1-kf2v-plus", {"first_frame_url": "IMAGE", "last_frame_url": "IMAGE"}, (1104, 816)),
    ],
)
def test_every_family_through_the_sdk(
    small_server: tuple[ServerProcess, str],
    model: str,
    kwargs: dict[str, object],
    size: tuple[int, int],
    tmp_path: Path,
) -> None:
    from tests.api.test_engine_http import data_uri

    _, key = small_server
    args = {k: (data_uri(7) if v == "IMAGE" else v) for k, v in kwargs.items()}
    rsp = VideoSynthesis.call(api_key=key, model=model, seed=5, **args)
    assert rsp.status_code == HTTPStatus.OK and rsp.output.task_status == "SUCCEEDED", rsp
    card_fps = 24 if model.startswith("wan2.6") else 30
    seconds = args.get("duration", 5)
    assert isinstance(seconds, int)
    check_mp4(rsp.output.video_url, tmp_path / "v.mp4", size=size, fps=card_fps, seconds=seconds)


def test_sdk_uploads_a_local_image_and_a_local_audio_file(
    small_server: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    """The SDK's own upload flow: getPolicy, multipart POST to our upload_host, oss:// refs."""
    from tests.api.test_inputs import png
    from tests.audio_files import wav

    _, key = small_server
    image = tmp_path / "my cat.png"  # a space: the SDK unquotes file:// paths
    image.write_bytes(png(9, (120, 160)))
    voice = tmp_path / "voice.wav"
    voice.write_bytes(wav(4.0))
    rsp = VideoSynthesis.call(
        api_key=key,
        model="wan2.5-i2v-preview",
        prompt="the cat sings",
        img_url=f"file://{image}",
        audio_url=str(voice),
        resolution="480P",
    )
    assert rsp.status_code == HTTPStatus.OK and rsp.output.task_status == "SUCCEEDED", rsp
    assert rsp.usage["audio"] is True
    path = tmp_path / "out.mp4"
    check_mp4(rsp.output.video_url, path, size=(544, 720), fps=24, seconds=5)
    with av.open(str(path)) as c:
        track = c.streams.audio[0]
        assert track.codec_context.name == "aac"
        assert abs(float(track.duration * track.time_base) - 5.0) < 0.03


def test_sdk_media_protocol_uploads_each_item(
    small_server: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    """wan2.7's `media=[...]`: the SDK uploads each local item and sends oss:// references;
    a first and a last frame take the key-frame route; usage is the media[] protocol's."""
    from tests.api.test_inputs import png

    _, key = small_server
    first, last = tmp_path / "first.png", tmp_path / "last.png"
    first.write_bytes(png(1, (160, 120)))
    last.write_bytes(png(2, (160, 120)))
    rsp = VideoSynthesis.call(
        api_key=key,
        model="wan2.7-i2v",
        prompt="the tide comes in",
        media=[
            {"type": "first_frame", "url": f"file://{first}"},
            {"type": "last_frame", "url": str(last)},
        ],
        resolution="720P",
        duration=2,
    )
    assert rsp.status_code == HTTPStatus.OK and rsp.output.task_status == "SUCCEEDED", rsp
    usage = rsp.usage
    assert (usage["SR"], usage["fps"], usage["ratio"], usage["duration"]) == (720, 30, "23:17", 2.0)
    check_mp4(rsp.output.video_url, tmp_path / "v.mp4", size=(1104, 816), fps=30, seconds=2)


def test_sdk_reference_to_video_and_vace(
    small_server: tuple[ServerProcess, str], tmp_path: Path
) -> None:
    """wan2.6-r2v's `reference_urls` (uploaded by the SDK), and the VACE model the only way
    the SDK can call it: `function` in `extra_input` (a `function=` keyword crashes the SDK
    itself), the source video as a keyword (which the SDK puts in `parameters`)."""
    from tests.api.test_inputs import png
    from tests.video_files import video_data_uri

    _, key = small_server
    character = tmp_path / "character.png"
    character.write_bytes(png(3, (100, 160)))
    rsp = VideoSynthesis.call(
        api_key=key,
        model="wan2.6-r2v-flash",
        prompt="character1 waves",
        reference_urls=[str(character)],
        size="1280*720",
        duration=2,
    )
    assert rsp.status_code == HTTPStatus.OK and rsp.output.task_status == "SUCCEEDED", rsp
    check_mp4(rsp.output.video_url, tmp_path / "r2v.mp4", size=(1280, 720), fps=24, seconds=2)

    rsp = VideoSynthesis.call(
        api_key=key,
        model="wan2.1-vace-plus",
        prompt="the street goes on",
        extra_input={"function": "video_outpainting"},
        video_url=video_data_uri(seconds=1.0, fps=12, width=64, height=64),
        left_scale=1.5,
        size="960*960",
    )
    assert rsp.status_code == HTTPStatus.OK and rsp.output.task_status == "SUCCEEDED", rsp
    check_mp4(rsp.output.video_url, tmp_path / "vace.mp4", size=(960, 960), fps=30, seconds=5)

    bad = VideoSynthesis.async_call(
        api_key=key,
        model="wan3.0-video",
        prompt="p",
        media=[{"type": "reference_video", "url": "https://example.com/v.mp4"}],
    )
    assert bad.status_code == HTTPStatus.BAD_REQUEST and bad.code == "InvalidParameter", bad
    assert "reference_video" in bad.message


@pytest.fixture(scope="module")
def feature_server(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerProcess, str, Script]]:
    """A server with a prompt extender (a local OpenAI-compatible server) and dubbing."""
    from tests.api.test_engine_http import SMALL

    script = Script(reply="A red fox detective turns yellowed pages under a green desk lamp.")
    with llm_server(script) as llm:
        proc = ServerProcess(
            tmp_path_factory.mktemp("sdk-features"),
            WANSERVE_STEPS="2",
            WANSERVE_MODELS=json.dumps(SMALL),
            WANSERVE_PROMPT_EXTENDER="openai",
            WANSERVE_PROMPT_EXTENDER_URL=llm,
            WANSERVE_DUBBING="true",
        )
        with proc:
            yield proc, proc.create_key(), script


def test_sdk_multi_shot_with_dubbing(
    feature_server: tuple[ServerProcess, str, Script], tmp_path: Path
) -> None:
    _, key, script = feature_server
    rsp = VideoSynthesis.call(
        api_key=key,
        model="wan2.6-t2v",
        prompt="A fox detective's case",
        size="1280*720",
        duration=6,  # two shots: the fewest a multi-shot plan has, and the least work
        shot_type="multi",
        prompt_extend=True,
        seed=3,
    )
    assert rsp.status_code == HTTPStatus.OK and rsp.output.task_status == "SUCCEEDED", rsp
    assert any("exactly 2 shots" in r["messages"][0]["content"] for r in script.requests)
    assert rsp.usage["audio"] is True and rsp.usage["duration"] == 6.0 and rsp.usage["SR"] == 720
    path = tmp_path / "multi.mp4"
    check_mp4(rsp.output.video_url, path, size=(1280, 720), fps=24, seconds=6)
    with av.open(str(path)) as c:
        assert abs(float(c.streams.audio[0].duration * c.streams.audio[0].time_base) - 6.0) < 0.03


def test_sdk_prompt_extension(feature_server: tuple[ServerProcess, str, Script]) -> None:
    _, key, script = feature_server
    rsp = VideoSynthesis.call(
        api_key=key, model="wan2.5-t2v-preview", prompt="a fox", size="832*480"
    )
    assert rsp.status_code == HTTPStatus.OK and rsp.output.task_status == "SUCCEEDED", rsp
    assert rsp.output.actual_prompt == script.reply and rsp.output.orig_prompt == "a fox"
    assert rsp.usage["audio"] is True


def test_the_readme_sdk_example_runs_as_written(
    small_server: tuple[ServerProcess, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """README's Python block, pasted as a reader would: only the port differs."""
    from tests.test_docs import README, code_blocks

    server, key = small_server
    (block,) = code_blocks(README, "python")
    monkeypatch.setenv("DASHSCOPE_API_KEY", key)
    monkeypatch.chdir(tmp_path)
    exec(compile(block.replace("http://127.0.0.1:8000", server.base), "README.md", "exec"), {})
    assert capsys.readouterr().out.startswith("SUCCEEDED http")
    with av.open(str(tmp_path / "kitten.mp4")) as c:
        assert (c.streams.video[0].width, c.streams.video[0].height) == (832, 480)
