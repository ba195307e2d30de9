"""The /v1/videos door over HTTP (real app, store, storage and workers; a fake engine): the
wire shapes, the rules it shares with the DashScope door, its errors, cursor pages, delete and
download. The official SDK against a real server process is tests/sdk/test_openai_sdk.py."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import av
import numpy as np
import pytest
from PIL import Image

from tests.conftest import T2V, FakeRunner, Harness
from tests.waiting import wait_until

VIDEO_FIELDS = {
    "id",
    "object",
    "model",
    "status",
    "progress",
    "created_at",
    "completed_at",
    "expires_at",
    "prompt",
    "seconds",
    "size",
    "remixed_from_video_id",
    "error",
}


def png(width: int = 160, height: int = 120) -> bytes:
    pixels = np.random.default_rng(width).integers(0, 256, (height, width, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


def auth(h: Harness, key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {key or h.key}"}


def create(h: Harness, key: str | None = None, **body: Any) -> Any:
    return h.client.post("/v1/videos", json=body, headers=auth(h, key))


def retrieve(h: Harness, video_id: str) -> dict[str, Any]:
    res = h.client.get(f"/v1/videos/{video_id}", headers=auth(h))
    assert res.status_code == 200, res.text
    body: dict[str, Any] = res.json()
    return body


def wait(
    h: Harness, video_id: str, until: Callable[[dict[str, Any]], bool] | None = None
) -> dict[str, Any]:
    return wait_until(
        lambda: retrieve(h, video_id),
        until or (lambda v: v["status"] in ("completed", "failed")),
        progress=lambda v: (v["status"], v["progress"]),
        what=f"video {video_id}",
    )


def assert_openai_error(res: Any, status: int, code: str, param: str | None = None) -> str:
    assert res.status_code == status, res.text
    body = res.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert error["code"] == code and error["param"] == param, error
    expected_type = {401: "authentication_error", 429: "rate_limit_error"}.get(
        status, "server_error" if status >= 500 else "invalid_request_error"
    )
    assert error["type"] == expected_type, error
    assert res.headers["X-Request-Id"]
    message: str = error["message"]
    return message


@pytest.fixture
def idle(harness_factory: Callable[..., Harness]) -> Harness:
    """No workers: tasks stay queued."""
    return harness_factory(start_workers=False, openai_poll_after_ms=1500)


def test_create_json_is_a_task_both_doors_see(idle: Harness) -> None:
    res = create(idle, prompt="a cat", size="832x480", seconds="5", seed=3)
    assert res.status_code == 200, res.text
    video = res.json()
    assert set(video) == VIDEO_FIELDS
    assert video["object"] == "video" and video["status"] == "queued" and video["progress"] == 0
    assert video["model"] == "wan2.1-t2v-turbo"  # openai_default_model
    assert (video["size"], video["seconds"], video["prompt"]) == ("832x480", "5", "a cat")
    assert video["completed_at"] is None and video["expires_at"] is None
    assert video["error"] is None and abs(video["created_at"] - time.time()) < 600
    # The id is the task id: the DashScope door shows the same task.
    dashscope = idle.get(video["id"])["output"]
    assert dashscope["task_status"] == "PENDING" and dashscope["orig_prompt"] == "a cat"
    task = idle.components.store.get(video["id"])
    assert task is not None and task.spec.seed == 3 and not task.spec.prompt_extend
    # Unfinished: the poll helper is told how long to wait.
    got = idle.client.get(f"/v1/videos/{video['id']}", headers=auth(idle))
    assert got.headers["openai-poll-after-ms"] == "1500" and got.json() == video


def test_a_dashscope_task_is_a_video(idle: Harness) -> None:
    task_id = idle.create(T2V).json()["output"]["task_id"]
    video = retrieve(idle, task_id)
    assert (video["id"], video["status"], video["size"]) == (task_id, "queued", "832x480")
    # Canceled through DashScope: OpenAI has no such status, so it is failed, with a code.
    assert idle.client.post(f"/api/v1/tasks/{task_id}/cancel", headers=idle.headers()).is_success
    video = retrieve(idle, task_id)
    assert video["status"] == "failed" and video["error"]["code"] == "Canceled"
    assert video["completed_at"] is not None and video["expires_at"] is None


def test_multipart_with_an_uploaded_first_frame(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory()
    res = h.client.post(
        "/v1/videos",
        data={"prompt": "waves", "size": "832x480", "seconds": "5", "seed": "11"},
        files={"input_reference": ("frame.png", png(), "image/png")},
        headers=auth(h),
    )
    assert res.status_code == 200, res.text
    video = res.json()
    # No model: the image default. Image-driven sizes name the tier until the image is known.
    assert video["model"] == "wan2.2-i2v-flash" and video["size"] == "480P"
    done = wait(h, video["id"])
    assert done["status"] == "completed", done
    # 4:3 first frame at the 480P budget, as the DashScope door would make it.
    assert done["size"] == "720x544" and done["progress"] == 100
    [call] = h.runner.calls
    assert call.seed == 11 and call.first_frame is not None


def test_form_values_arrive_as_text_and_nested(harness_factory: Callable[..., Harness]) -> None:
    """What the SDK sends for `extra_body` and for `input_reference={"image_url": ...}`."""
    h = harness_factory()
    image_url = "data:image/png;base64," + base64.b64encode(png(64, 64)).decode()
    res = h.client.post(
        "/v1/videos",
        data={
            "prompt": "a cat",
            "model": "wanx2.1-i2v-turbo",
            "input_reference[image_url]": image_url,
            "seconds": "3",
            "num_inference_steps": "3",
            "guidance_scale": "2.5",
            "negative_prompt": "rain",
            "prompt_extend": "false",
        },
        files={"video": ("v.mp4", b"\0" * 64, "video/mp4")},
        headers=auth(h),
    )
    # A file under another name is refused rather than ignored: only input_reference is one.
    assert_openai_error(res, 400, "InvalidParameter", "video")
    fields = {
        "prompt": "a cat",
        "model": "wanx2.1-i2v-turbo",
        "input_reference[image_url]": image_url,
        "seconds": "3",
        "num_inference_steps": "3",
        "guidance_scale": "2.5",
        "negative_prompt": "rain",
    }
    res = h.client.post(
        "/v1/videos",
        content=_multipart("b0undary", fields),
        headers=auth(h) | {"Content-Type": "multipart/form-data; boundary=b0undary"},
    )
    assert res.status_code == 200, res.text
    done = wait(h, res.json()["id"])
    assert done["status"] == "completed" and done["seconds"] == "3", done
    [call] = h.runner.calls
    assert (call.steps, call.guidance_scale, call.negative_prompt) == (3, 2.5, "rain")


def _multipart(boundary: str, fields: dict[str, str]) -> bytes:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'
        for name, value in fields.items()
    ]
    return ("".join(parts) + f"--{boundary}--\r\n").encode()


def test_json_input_reference_url_and_object(idle: Harness) -> None:
    for reference in ("https://example.com/a.png", {"image_url": "https://example.com/a.png"}):
        res = create(idle, prompt="x", model="wan2.2-i2v-flash", input_reference=reference)
        assert res.status_code == 200, res.text
        task = idle.components.store.get(res.json()["id"])
        # img_url semantics: the worker fetches it through the guarded fetcher.
        assert task is not None and task.spec.image is not None
        assert task.spec.image.url == "https://example.com/a.png"


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"prompt": "x", "size": "big"}, 400, "InvalidParameter", "size"),
        ({"prompt": "x", "size": "1280x1280"}, 400, "InvalidParameter", "size"),
        ({"prompt": "x", "size": "１２８０x７２０"}, 400, "InvalidParameter", "size"),
        ({"prompt": "x", "model": "sora-2"}, 400, "InvalidParameter", "model"),
        ({"prompt": "x", "seconds": "4"}, 400, "InvalidParameter", "seconds"),
        ({"prompt": "x", "seconds": "four"}, 400, "InvalidParameter", "seconds"),
        ({"prompt": "x", "num_inference_steps": 0}, 400, "InvalidParameter", "num_inference_steps"),
        ({"prompt": "x", "steps": 101}, 400, "InvalidParameter", "num_inference_steps"),
        (
            {"prompt": "x", "steps": 4, "num_inference_steps": 4},
            400,
            "InvalidParameter",
            "num_inference_steps",
        ),
        ({"prompt": "x", "guidance_scale": 20.5}, 400, "InvalidParameter", "guidance_scale"),
        ({"prompt": "x", "guidance_scale": "lots"}, 400, "InvalidParameter", "guidance_scale"),
        ({"prompt": "x", "seed": -1}, 400, "InvalidParameter", "seed"),
        ({"prompt": ""}, 400, "InvalidParameter", "prompt"),
        (
            {"prompt": "x", "input_reference": {"file_id": "f"}},
            400,
            "InvalidParameter",
            "input_reference",
        ),
        (
            {"prompt": "x", "input_reference": "file:///etc/passwd"},
            400,
            "InvalidURL",
            "input_reference",
        ),
        # A first frame for a text-to-video model: the shared rule refuses it, naming the field.
        (
            {"prompt": "x", "input_reference": "https://e.com/a.png", "model": "wan2.1-t2v-turbo"},
            400,
            "InvalidParameter",
            "input_reference",
        ),
    ],
)
def test_create_errors_in_openai_shape(
    idle: Harness, body: dict[str, Any], status: int, code: str, param: str | None
) -> None:
    message = assert_openai_error(create(idle, **body), status, code, param)
    assert message


def test_transport_errors_in_openai_shape(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(start_workers=False, max_body_bytes=2048)
    headers = auth(h)
    assert_openai_error(h.client.post("/v1/videos", json={"prompt": "x"}), 401, "InvalidApiKey")
    wrong = {"Authorization": "Bearer sk-nope"}
    assert_openai_error(h.client.get("/v1/videos", headers=wrong), 401, "InvalidApiKey")
    res = h.client.post("/v1/videos", content=b"prompt=x", headers=headers)
    assert_openai_error(res, 415, "InvalidParameter")
    res = h.client.post(
        "/v1/videos", content=b"{", headers=headers | {"Content-Type": "application/json"}
    )
    assert_openai_error(res, 400, "InvalidParameter")
    res = h.client.post("/v1/videos", json={"prompt": "x" * 4096}, headers=headers)
    assert_openai_error(res, 413, "BadRequest.TooLarge")
    res = h.client.post(
        "/v1/videos", files={"input_reference": ("a.png", b"x" * 4096)}, headers=headers
    )
    assert_openai_error(res, 413, "BadRequest.TooLarge")
    res = h.client.post(
        "/v1/videos",
        content=b"--b\r\nbroken",
        headers=headers | {"Content-Type": "multipart/form-data"},  # no boundary
    )
    assert_openai_error(res, 400, "InvalidParameter")
    assert_openai_error(h.client.get("/v1/nothing", headers=headers), 404, "NotFound")
    res = h.client.put("/v1/videos", headers=headers)
    assert_openai_error(res, 405, "UnsupportedOperation")
    assert res.headers["Allow"] == "GET, POST"
    # The DashScope door keeps its own body.
    res = h.client.get("/api/v1/nothing", headers=headers)
    assert res.status_code == 404 and set(res.json()) == {"request_id", "code", "message"}


def test_another_keys_video_is_not_found(idle: Harness) -> None:
    video_id = create(idle, prompt="x").json()["id"]
    _, other = idle.components.services.keys.create("other")
    for method, path in [
        ("GET", f"/v1/videos/{video_id}"),
        ("GET", f"/v1/videos/{video_id}/content"),
        ("DELETE", f"/v1/videos/{video_id}"),
    ]:
        res = idle.client.request(method, path, headers=auth(idle, other))
        assert_openai_error(res, 404, "NotFound")
    res = idle.client.get("/v1/videos", headers=auth(idle, other))
    assert res.json()["data"] == []
    assert retrieve(idle, video_id)["status"] == "queued"  # untouched


def test_list_pages_by_cursor_in_both_orders(idle: Harness) -> None:
    ids = [create(idle, prompt=f"v{n}").json()["id"] for n in range(5)]
    newest_first = list(reversed(ids))

    def walk(order: str | None) -> tuple[list[str], list[dict[str, Any]]]:
        seen: list[str] = []
        pages: list[dict[str, Any]] = []
        after: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2}
            if order:
                params["order"] = order
            if after:
                params["after"] = after
            page = idle.client.get("/v1/videos", params=params, headers=auth(idle)).json()
            pages.append(page)
            seen += [v["id"] for v in page["data"]]
            assert page["object"] == "list" and len(page["data"]) <= 2
            if page["data"]:
                assert (page["first_id"], page["last_id"]) == (
                    page["data"][0]["id"],
                    page["data"][-1]["id"],
                )
            if not page["has_more"]:
                return seen, pages
            after = page["last_id"]

    seen, pages = walk(None)
    assert seen == newest_first and [len(p["data"]) for p in pages] == [2, 2, 1]
    assert walk("asc")[0] == ids
    # A video deleted meanwhile no longer shows; the rest keep their places.
    assert idle.client.delete(f"/v1/videos/{ids[2]}", headers=auth(idle)).status_code == 200
    assert walk("desc")[0] == [i for i in newest_first if i != ids[2]]
    everything = idle.client.get("/v1/videos", params={"limit": 100}, headers=auth(idle)).json()
    assert len(everything["data"]) == 4 and everything["has_more"] is False
    for params, param in [
        ({"after": ids[2]}, "after"),  # deleted: not a cursor any more
        ({"after": "nope"}, "after"),
        ({"order": "sideways"}, "order"),
        ({"limit": 0}, "limit"),
        ({"limit": 101}, "limit"),
    ]:
        res = idle.client.get("/v1/videos", params=params, headers=auth(idle))
        assert_openai_error(res, 400, "InvalidParameter", param)


def test_complete_download_and_delete(harness_factory: Callable[..., Harness]) -> None:
    h = harness_factory(openai_poll_after_ms=250)
    video = create(h, prompt="a cat", size="624x624").json()
    res = h.client.get(f"/v1/videos/{video['id']}/content", headers=auth(h))
    assert_openai_error(res, 400, "UnsupportedOperation")  # not completed yet
    done = wait(h, video["id"])
    got = h.client.get(f"/v1/videos/{video['id']}", headers=auth(h))
    assert "openai-poll-after-ms" not in got.headers  # finished: nothing to poll for
    assert done["status"] == "completed" and done["progress"] == 100 and done["error"] is None
    assert done["completed_at"] >= done["created_at"]
    assert done["expires_at"] > done["completed_at"]
    res = h.client.get(
        f"/v1/videos/{video['id']}/content", params={"variant": "thumbnail"}, headers=auth(h)
    )
    assert_openai_error(res, 400, "InvalidParameter", "variant")
    res = h.client.get(f"/v1/videos/{video['id']}/content", headers=auth(h), follow_redirects=False)
    assert res.status_code == 302
    # The same signed URL the DashScope door hands out.
    assert res.headers["location"] == h.get(video["id"])["output"]["video_url"]
    url = urlparse(res.headers["location"])
    mp4 = h.client.get(f"{url.path}?{url.query}")
    assert mp4.status_code == 200 and mp4.headers["content-type"] == "video/mp4"
    path = h.settings.data_dir / "openai.mp4"
    path.write_bytes(mp4.content)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert (s.width, s.height, s.average_rate, s.frames) == (624, 624, 30, 150)

    res = h.client.delete(f"/v1/videos/{video['id']}", headers=auth(h))
    assert res.status_code == 200
    assert res.json() == {"id": video["id"], "object": "video.deleted", "deleted": True}
    # Gone at once, from both doors, with its file.
    assert not h.components.services.storage.path(f"videos/{video['id']}.mp4").exists()  # type: ignore[attr-defined]
    assert h.components.store.get(video["id"]) is None
    assert h.client.get(f"{url.path}?{url.query}").status_code in (403, 404)
    assert_openai_error(h.client.get(f"/v1/videos/{video['id']}", headers=auth(h)), 404, "NotFound")
    assert h.get(video["id"])["output"]["task_status"] == "UNKNOWN"
    res = h.client.delete(f"/v1/videos/{video['id']}", headers=auth(h))
    assert_openai_error(res, 404, "NotFound")


def test_delete_stops_a_running_video(harness_factory: Callable[..., Harness]) -> None:
    gate = threading.Event()
    h = harness_factory(runner=FakeRunner(gate=gate))
    video_id = create(h, prompt="a cat").json()["id"]
    wait(h, video_id, until=lambda v: v["status"] == "in_progress")
    assert h.client.delete(f"/v1/videos/{video_id}", headers=auth(h)).json()["deleted"] is True
    assert_openai_error(h.client.get(f"/v1/videos/{video_id}", headers=auth(h)), 404, "NotFound")
    # The run stops at its next step (the gate is never opened) and ends CANCELED; the
    # janitor then purges the row.
    wait_until(
        lambda: h.components.store.get(video_id),
        lambda row: row is None,
        progress=lambda row: None if row is None else row.status,
        what=f"video {video_id} canceled and purged",
    )
    usage = h.client.get("/api/v1/usage", headers=h.headers()).json()["total"]
    assert (usage["canceled"], usage["succeeded"]) == (1, 0)
    assert not gate.is_set()


def test_openapi_documents_the_door(idle: Harness) -> None:
    document = idle.client.get("/openapi.json").json()
    paths = document["paths"]
    assert {"/v1/videos", "/v1/videos/{video_id}", "/v1/videos/{video_id}/content"} <= set(paths)
    error_ref = "#/components/schemas/OpenAIError"
    for path, item in paths.items():
        if not path.startswith("/v1/"):
            continue
        for operation in item.values():
            for status, answer in operation["responses"].items():
                if status.startswith(("4", "5")):
                    schema = answer["content"]["application/json"]["schema"]
                    assert schema == {"$ref": error_ref}, (path, status)
    body = paths["/v1/videos"]["post"]["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
