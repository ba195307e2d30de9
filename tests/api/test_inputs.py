"""Image and audio inputs through the HTTP API: URL, base64 and the SDK's upload flow, with
the real engine (tiny checkpoints at a small pixel budget)."""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlparse

import av
import numpy as np
import pytest
from PIL import Image

from tests.api.test_engine_http import SMALL, data_uri
from tests.audio_files import wav
from tests.conftest import Harness
from tests.media_server import media_server
from tests.video_files import video
from wanserve.engine.runner import PipelineRunner


def png(seed: int, size: tuple[int, int] = (160, 120)) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    routes = {
        "/cat.png": (200, {"Content-Type": "image/png"}, png(1)),
        "/voice.wav": (200, {"Content-Type": "audio/wav"}, wav(4.0)),
        "/page": (200, {"Content-Type": "text/html"}, b"<html/>"),
        "/clip.mp4": (200, {"Content-Type": "video/mp4"}, video(seconds=1.0, fps=12)),
        "/clip-as-image.mp4": (200, {"Content-Type": "image/png"}, video(seconds=1.0, fps=12)),
    }
    with media_server(routes) as p:
        yield p


@pytest.fixture
def onprem(harness_factory: Callable[..., Harness], runner: PipelineRunner) -> Harness:
    """A deployment allowed to fetch from private networks (the local test server)."""
    return harness_factory(runner=runner, models=SMALL, steps=2, fetch_allow_private=True)


def finished(h: Harness, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
    res = h.create(body, key=key)
    assert res.status_code == 200, res.text
    return h.wait(res.json()["output"]["task_id"])


def tracks(h: Harness, task_id: str) -> tuple[tuple[int, int], float | None]:
    path = h.components.services.storage.path(f"videos/{task_id}.mp4")  # type: ignore[attr-defined]
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        audio = None
        if c.streams.audio:
            a = c.streams.audio[0]
            audio = float(a.duration * a.time_base)
        return (v.width, v.height), audio


# -- videos by URL -----------------------------------------------------------------------------


def test_video_by_url_through_the_guarded_fetcher(onprem: Harness, port: int) -> None:
    body = {
        "model": "wan2.7-i2v",
        "input": {
            "prompt": "on it goes",
            "media": [{"type": "first_clip", "url": f"http://127.0.0.1:{port}/clip.mp4"}],
        },
        "parameters": {"resolution": "720P", "duration": 2},
    }
    done = finished(onprem, body)
    assert done["output"]["task_status"] == "SUCCEEDED", done
    assert tracks(onprem, done["output"]["task_id"])[0] == (1104, 816)


def test_a_video_url_serving_another_type_fails_naming_the_item(onprem: Harness, port: int) -> None:
    body = {
        "model": "wan2.7-i2v",
        "input": {
            "prompt": "p",
            "media": [{"type": "first_clip", "url": f"http://127.0.0.1:{port}/clip-as-image.mp4"}],
        },
    }
    out = finished(onprem, body)["output"]
    assert (out["task_status"], out["code"]) == ("FAILED", "InvalidParameter"), out
    assert out["message"].startswith("input.media[0]: ") and "not video data" in out["message"]


# -- images by URL -----------------------------------------------------------------------------


def test_image_by_url(onprem: Harness, port: int) -> None:
    body = {
        "model": "wan2.2-i2v-plus",
        "input": {"img_url": f"http://127.0.0.1:{port}/cat.png"},
        "parameters": {"resolution": "480P"},
    }
    done = finished(onprem, body)
    assert done["output"]["task_status"] == "SUCCEEDED", done
    assert tracks(onprem, done["output"]["task_id"]) == ((720, 544), None)


def test_private_urls_are_refused_by_default(
    harness_factory: Callable[..., Harness], runner: PipelineRunner, port: int
) -> None:
    h = harness_factory(runner=runner, models=SMALL, steps=2)
    body = {"model": "wan2.2-i2v-plus", "input": {"img_url": f"http://127.0.0.1:{port}/cat.png"}}
    out = finished(h, body)["output"]
    assert (out["task_status"], out["code"]) == ("FAILED", "InvalidURL")
    assert "private, loopback, link-local or metadata" in out["message"]


def test_wrong_content_type_and_missing_file(onprem: Harness, port: int) -> None:
    for path, code, message in (
        ("/page", "InvalidParameter", "text/html"),
        ("/nope.png", "InvalidURL", "HTTP 404"),
    ):
        body = {"model": "wan2.2-i2v-plus", "input": {"img_url": f"http://127.0.0.1:{port}{path}"}}
        out = finished(onprem, body)["output"]
        assert (out["task_status"], out["code"]) == ("FAILED", code) and message in out["message"]


# -- audio --------------------------------------------------------------------------------------


@pytest.mark.parametrize("route", ["url", "base64"])
def test_audio_track_is_muxed_at_the_videos_length(onprem: Harness, port: int, route: str) -> None:
    audio = (
        f"http://127.0.0.1:{port}/voice.wav"
        if route == "url"
        else "data:audio/wav;base64," + base64.b64encode(wav(7.0)).decode()
    )
    body = {
        "model": "wan2.5-t2v-preview",
        "input": {"prompt": "a fox speaks", "audio_url": audio},
        "parameters": {"size": "832*480"},
    }
    done = finished(onprem, body)
    assert done["output"]["task_status"] == "SUCCEEDED", done
    assert done["usage"]["audio"] is True
    size, audio_seconds = tracks(onprem, done["output"]["task_id"])
    assert size == (832, 480)
    assert audio_seconds == pytest.approx(5.0, abs=0.03)  # 4 s padded, or 7 s cut, to 5 s


def test_default_dubbing_without_a_backend_is_silent_and_says_so(onprem: Harness) -> None:
    body = {
        "model": "wan2.5-t2v-preview",
        "input": {"prompt": "a fox"},
        "parameters": {"size": "832*480"},
    }
    done = finished(onprem, body)
    assert done["usage"]["audio"] is False
    assert tracks(onprem, done["output"]["task_id"])[1] is None


def test_bad_audio_fails_the_task(onprem: Harness) -> None:
    short = "data:audio/wav;base64," + base64.b64encode(wav(1.5)).decode()
    body = {
        "model": "wan2.5-t2v-preview",
        "input": {"prompt": "x", "audio_url": short},
        "parameters": {"size": "832*480"},
    }
    out = finished(onprem, body)["output"]
    assert (out["task_status"], out["code"]) == ("FAILED", "InvalidParameter")
    assert "1.5 s long; audio must last 3 to 30 seconds" in out["message"]


# -- the SDK's upload flow ------------------------------------------------------------------------


def get_policy(
    h: Harness, model: str = "wan2.5-i2v-preview", key: str | None = None
) -> dict[str, Any]:
    res = h.client.get(f"/api/v1/uploads?action=getPolicy&model={model}", headers=h.headers(key))
    assert res.status_code == 200, res.text
    data: dict[str, Any] = res.json()["data"]
    return data


def upload(
    h: Harness,
    issued: dict[str, Any],
    name: str,
    content: bytes,
    override: dict[str, str] | None = None,
) -> Any:
    policy = issued
    fields = {
        "OSSAccessKeyId": policy["oss_access_key_id"],
        "Signature": policy["signature"],
        "policy": policy["policy"],
        "key": f"{policy['upload_dir']}/{name}",
        "x-oss-object-acl": policy["x_oss_object_acl"],
        "x-oss-forbid-overwrite": policy["x_oss_forbid_overwrite"],
        "success_action_status": "200",
        "x-oss-content-type": "image/png",
    } | (override or {})
    path = urlparse(policy["upload_host"]).path
    return h.client.post(path, data=fields, files={"file": (name, content)})


def test_policy_has_every_field_the_sdk_reads(onprem: Harness) -> None:
    policy = get_policy(onprem)
    for name in (
        "upload_host",
        "upload_dir",
        "oss_access_key_id",
        "signature",
        "policy",
        "x_oss_object_acl",
        "x_oss_forbid_overwrite",
        "expire_in_seconds",
        "max_file_size_mb",
    ):
        assert policy[name], name
    assert policy["upload_host"] == "http://testserver/api/v1/uploads"
    assert policy["upload_dir"] != get_policy(onprem)["upload_dir"]  # unique per call


def test_policy_errors(onprem: Harness) -> None:
    assert onprem.client.get("/api/v1/uploads?action=getPolicy&model=wan2.6-i2v").status_code == 401
    bad = onprem.client.get("/api/v1/uploads?action=put&model=wan2.6-i2v", headers=onprem.headers())
    assert bad.status_code == 400 and bad.json()["code"] == "InvalidParameter"
    unknown = onprem.client.get(
        "/api/v1/uploads?action=getPolicy&model=nope", headers=onprem.headers()
    )
    assert unknown.status_code == 400 and "Model not exist" in unknown.json()["message"]


def test_upload_then_use_as_oss_reference(onprem: Harness) -> None:
    policy = get_policy(onprem)
    res = upload(onprem, policy, "cat.png", png(3))
    assert res.status_code == 200 and res.content == b""
    oss = f"oss://{policy['upload_dir']}/cat.png"
    body = {
        "model": "wan2.5-i2v-preview",
        "input": {"img_url": oss},
        "parameters": {"resolution": "480P"},
    }
    res = onprem.client.post(
        "/api/v1/services/aigc/video-generation/video-synthesis",
        json=body,
        headers=onprem.headers(**{"X-DashScope-OssResourceResolve": "enable"}),
    )
    done = onprem.wait(res.json()["output"]["task_id"])
    assert done["output"]["task_status"] == "SUCCEEDED", done
    # Bound to the key that asked for the policy: another key cannot use it.
    _, other = onprem.components.services.keys.create("other")
    refused = onprem.create(body, key=other)
    assert refused.status_code == 400 and refused.json()["code"] == "InvalidURL"
    # The scheme's spelling does not matter: OSS:// is the same reference, refused alike.
    shouting = {**body, "input": {"img_url": oss.replace("oss://", "OSS://")}}
    assert onprem.create(shouting, key=other).status_code == 400
    assert "not a file this API key uploaded" in refused.json()["message"]
    missing = onprem.create({**body, "input": {"img_url": oss + "x"}})
    assert missing.status_code == 400 and missing.json()["code"] == "InvalidURL"


@pytest.mark.parametrize(
    ("override", "status", "message"),
    [
        ({"Signature": "forged"}, 403, "signature does not match"),
        (
            {"policy": base64.b64encode(b'{"upload_dir": "x"}').decode()},
            403,
            "signature does not match",
        ),
        (
            {"key": "dashscope-instant/elsewhere/cat.png"},
            403,
            "outside the policy's upload directory",
        ),
        ({"key": "{dir}/sub/cat.png"}, 403, "outside the policy's upload directory"),
        ({"key": "{dir}/.."}, 400, "not a valid file name"),
    ],
)
def test_forged_or_misdirected_uploads_are_refused(
    onprem: Harness, override: dict[str, str], status: int, message: str
) -> None:
    policy = get_policy(onprem)
    fields = {k: v.format(dir=policy["upload_dir"]) for k, v in override.items()}
    res = upload(onprem, policy, "cat.png", png(1), fields)
    assert res.status_code == status, res.text
    assert message in res.json()["message"]


def test_upload_size_limit_and_single_use_policies(
    harness_factory: Callable[..., Harness], runner: PipelineRunner
) -> None:
    h = harness_factory(runner=runner, models=SMALL, max_upload_bytes=4096)
    policy = get_policy(h)
    res = upload(h, policy, "big.png", b"\0" * 100_000)
    assert res.status_code == 413 and res.json()["code"] == "BadRequest.TooLarge"
    assert upload(h, policy, "a.png", b"tiny").status_code == 200
    again = upload(h, policy, "a.png", b"other")
    assert again.status_code == 403 and "has been used" in again.json()["message"]


def test_upload_without_a_file_part(onprem: Harness) -> None:
    policy = get_policy(onprem)
    path = urlparse(policy["upload_host"]).path
    res = onprem.client.post(path, data={"policy": policy["policy"]}, files={"other": ("x", b"1")})
    assert res.status_code == 400 and "no file part" in res.json()["message"]


def test_data_uri_helper_is_a_real_image() -> None:
    header, payload = data_uri(1).split(",", 1)
    assert header == "data:image/png;base64" and Image.open(
        io.BytesIO(base64.b64decode(payload))
    ).size == (160, 120)


def test_key_frames_by_url_and_by_upload(onprem: Harness, port: int) -> None:
    """first_frame_url fetched over HTTP, last_frame_url from an upload: one task, two routes."""
    policy = get_policy(onprem, model="wanx2.1-kf2v-plus")
    assert upload(onprem, policy, "last.png", png(5)).status_code == 200
    body = {
        "model": "wanx2.1-kf2v-plus",
        "input": {
            "first_frame_url": f"http://127.0.0.1:{port}/cat.png",
            "last_frame_url": f"oss://{policy['upload_dir']}/last.png",
        },
    }
    done = finished(onprem, body)
    assert done["output"]["task_status"] == "SUCCEEDED", done
    assert tracks(onprem, done["output"]["task_id"]) == ((1104, 816), None)
