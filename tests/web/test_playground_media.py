"""The playground's forms for the `media[]`, reference and editing (VACE) models, in a real
headless Chromium against a real `wanserve serve` on dummy checkpoints: the fields each model
(and VACE function) takes, and the request body the page sends, files inline as data: URIs.

The browser, the page wrapper and the image maker are tests/web/test_playground.py's.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from tests.server import ServerProcess
from tests.video_files import video
from tests.waiting import scaled
from tests.web import test_playground as base
from tests.web.test_playground import SMALL, Watched, png, wait_for

if TYPE_CHECKING:
    from playwright.sync_api import Page, Route

pytestmark = pytest.mark.timeout(scaled(900))

CREATE = "**/api/v1/services/aigc/video-generation/video-synthesis"
# The browser and the page factory are shared with the playground's other tests.
browser = base.browser
watched = base.watched


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(
        tmp_path_factory.mktemp("playground-media"),
        WANSERVE_MODELS=json.dumps(SMALL),
        WANSERVE_X264_PRESET="ultrafast",
    ) as process:
        yield process


@pytest.fixture(scope="module")
def key(server: ServerProcess) -> str:
    return server.create_key()


def ready(w: Watched, server: ServerProcess, key: str, model: str) -> Page:
    w.enter_key(server.base, key)
    w.page.get_by_text("Key accepted").wait_for()
    w.page.get_by_label("Model", exact=True).select_option(model)
    return w.page


def submitted(page: Page) -> dict[str, Any]:
    """Click Generate; the JSON body of the create request the page sent."""
    with page.expect_request(CREATE) as sent:
        page.get_by_role("button", name="Generate video").click()
    body: dict[str, Any] = json.loads(sent.value.post_data or "{}")
    return body


def inline(uri: str, media_type: str) -> bytes:
    """The payload of a base64 data: URI of `media_type`."""
    head, _, payload = uri.partition(",")
    assert head == f"data:{media_type};base64", head
    return base64.b64decode(payload)


def finished(page: Page, server: ServerProcess, key: str) -> dict[str, Any]:
    """The task the page created, once the page shows its outcome."""
    task_id = wait_for(
        lambda: page.locator("#task-line").text_content() or "", what="the task id"
    ).removeprefix("Task ")
    wait_for(
        lambda: page.locator("#player").is_visible() or page.locator("#error").is_visible(),
        what="the outcome",
    )
    task: dict[str, Any] = httpx.get(
        f"{server.base}/api/v1/tasks/{task_id}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=scaled(30),
    ).json()
    return task


def refuse_creates(page: Page) -> list[dict[str, Any]]:
    """Answer the page's create requests with an error, keeping their bodies: what the page
    sends, without running a task."""
    bodies: list[dict[str, Any]] = []

    def answer(route: Route) -> None:
        bodies.append(json.loads(route.request.post_data or "{}"))
        route.fulfill(
            status=400,
            content_type="application/json",
            body=json.dumps({"code": "InvalidParameter", "message": "checked by the test"}),
        )

    page.route(CREATE, answer)
    return bodies


def refused(page: Page, bodies: list[dict[str, Any]], count: int) -> dict[str, Any]:
    """The body of the `count`th create request, once the page shows the refusal (each look
    goes through the page, which lets Playwright run the route handler meanwhile)."""
    wait_for(
        lambda: page.locator("#error").is_visible() and len(bodies) >= count,
        what=f"create request {count}",
    )
    assert len(bodies) == count
    return bodies[-1]


@pytest.mark.slow
def test_a_media_model_sends_its_first_frame_inline(
    server: ServerProcess, key: str, watched: Callable[..., Watched]
) -> None:
    w = watched()
    page = ready(w, server, key, "wan3.0-video")
    # wan3.0: media[] files for the kinds a route serves, a ratio, auto duration, no negative.
    assert page.locator("#media-first-frame").is_visible()
    assert page.locator("#media-last-frame").is_visible()
    assert page.locator("#media-reference-image").get_attribute("multiple") is not None
    assert not page.locator("#media-reference-video").is_visible()  # no route serves them
    assert not page.locator("#image").is_visible() and not page.locator("#function").is_visible()
    assert page.get_by_label("Aspect ratio").input_value() == "adaptive"
    assert "-1" in page.get_by_label("Duration").locator("option").evaluate_all(
        "options => options.map(o => o.value)"
    )
    page.get_by_text("More options").click()
    assert not page.get_by_label("Negative prompt").is_visible()

    frame = png(3, (64, 48))
    page.locator("#media-first-frame").set_input_files(
        files=[{"name": "frame.png", "mimeType": "image/png", "buffer": frame}]
    )
    page.get_by_label("Prompt", exact=True).fill("A kite over a beach")
    page.get_by_label("Resolution").select_option("480P")  # the smallest video to encode
    body = submitted(page)
    assert body["model"] == "wan3.0-video"
    media = body["input"]["media"]
    assert [m["type"] for m in media] == ["first_frame"]
    assert inline(media[0]["url"], "image/png") == frame
    assert "negative_prompt" not in body["input"]
    assert body["parameters"]["ratio"] == "adaptive"
    assert body["parameters"]["resolution"] == page.get_by_label("Resolution").input_value()

    # The server took the inline frame: the image-to-video route ran.
    task = finished(page, server, key)
    assert not page.locator("#error").is_visible(), page.locator("#error").text_content()
    assert task["output"]["task_status"] == "SUCCEEDED"
    assert w.csp_violations() == [] and w.problems == []


@pytest.mark.slow
def test_a_vace_model_outpaints_a_source_video(
    server: ServerProcess, key: str, watched: Callable[..., Watched], tmp_path: Path
) -> None:
    w = watched()
    page = ready(w, server, key, "wan2.1-vace-plus")
    # Its first and last frame fields are the function's, not the kf2v model's.
    assert not page.locator("#first-frame").is_visible()
    page.get_by_label("Function").select_option("video_outpainting")
    assert page.locator("#media-video").is_visible()
    assert not page.locator("#media-reference-image").is_visible()
    assert not page.get_by_label("Strength").is_visible()
    page.get_by_label("Prompt", exact=True).fill("A wider view of the room")
    page.get_by_role("button", name="Generate video").click()
    error = page.locator("#error")
    error.wait_for()
    assert error.text_content() == "InvalidParameter: Source video: choose a video."

    clip = tmp_path / "source.mp4"
    video(path=clip)
    page.locator("#media-video").set_input_files(str(clip))
    page.get_by_label("Left", exact=True).fill("1.5")
    page.get_by_label("Right", exact=True).fill("1.25")
    body = submitted(page)
    assert body["input"]["function"] == "video_outpainting"
    assert inline(body["input"]["video_url"], "video/mp4") == clip.read_bytes()
    assert "ref_images_url" not in body["input"] and "media" not in body["input"]
    parameters = body["parameters"]
    assert parameters["left_scale"] == 1.5 and parameters["right_scale"] == 1.25
    assert parameters["top_scale"] == 1 and parameters["bottom_scale"] == 1
    assert "obj_or_bg" not in parameters and "control_condition" not in parameters
    assert parameters["size"] == page.get_by_label("Size", exact=True).input_value()

    task = finished(page, server, key)
    assert not error.is_visible(), error.text_content()
    assert task["output"]["task_status"] == "SUCCEEDED"
    assert w.csp_violations() == [] and w.problems == []


def test_image_reference_sends_each_images_role(
    server: ServerProcess, key: str, watched: Callable[..., Watched]
) -> None:
    w = watched()
    page = ready(w, server, key, "wan2.1-vace-plus")
    bodies = refuse_creates(page)
    page.get_by_label("Function").select_option("image_reference")
    images = [png(i, (40, 30)) for i in range(2)]
    page.locator("#media-reference-image").set_input_files(
        files=[
            {"name": f"ref{i}.png", "mimeType": "image/png", "buffer": data}
            for i, data in enumerate(images)
        ]
    )
    page.get_by_label("Image 2: ref1.png").select_option("bg")
    # The role survives a look at another function.
    page.get_by_label("Function").select_option("video_edit")
    assert not page.get_by_label("Image 2: ref1.png").is_visible()
    page.get_by_label("Function").select_option("image_reference")
    assert page.get_by_label("Image 2: ref1.png").input_value() == "bg"
    page.get_by_label("Prompt", exact=True).fill("A dog in a garden")
    page.get_by_role("button", name="Generate video").click()
    body = refused(page, bodies, 1)
    assert body["input"]["function"] == "image_reference"
    refs = body["input"]["ref_images_url"]
    assert [inline(uri, "image/png") for uri in refs] == images
    assert body["parameters"]["obj_or_bg"] == ["obj", "bg"]


def test_reference_models_send_their_references(
    server: ServerProcess, key: str, watched: Callable[..., Watched]
) -> None:
    w = watched()
    page = ready(w, server, key, "wan2.6-r2v")
    bodies = refuse_creates(page)
    assert not page.get_by_label("Aspect ratio").is_visible()  # sized by size
    page.get_by_label("Prompt", exact=True).fill("character1 waves")
    page.get_by_role("button", name="Generate video").click()
    error = page.locator("#error")
    error.wait_for()
    assert error.text_content() == "InvalidParameter: wan2.6-r2v takes reference images."
    assert bodies == []

    image = png(5, (40, 30))
    page.locator("#media-reference-image").set_input_files(
        files=[{"name": "hero.png", "mimeType": "image/png", "buffer": image}]
    )
    page.get_by_role("button", name="Generate video").click()
    body = refused(page, bodies, 1)
    assert [inline(uri, "image/png") for uri in body["input"]["reference_urls"]] == [image]
    assert "media" not in body["input"]

    # wan2.7-r2v: the same images as media[], after the first frame, with a ratio.
    page.get_by_label("Model", exact=True).select_option("wan2.7-r2v")
    page.locator("#media-reference-image").set_input_files(
        files=[
            {"name": f"r{i}.png", "mimeType": "image/png", "buffer": png(i, (40, 30))}
            for i in range(2)
        ]
    )
    page.locator("#media-first-frame").set_input_files(
        files=[{"name": "start.png", "mimeType": "image/png", "buffer": image}]
    )
    page.get_by_label("Aspect ratio").select_option("9:16")
    page.get_by_role("button", name="Generate video").click()
    body = refused(page, bodies, 2)
    assert [m["type"] for m in body["input"]["media"]] == [
        "first_frame",
        "reference_image",
        "reference_image",
    ]
    assert body["parameters"]["ratio"] == "9:16"
