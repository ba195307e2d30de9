"""The playground in a real headless Chromium (Debian's, driven by Playwright) against a real
`wanserve serve` process on tiny dummy checkpoints: key, model, prompt, upload, live progress,
a video that plays, the recent-tasks list, and screenshots at desktop and phone widths.

Screenshots land in the test's `tmp_path` and in `test-artifacts/playground/` (ignored by
git) for a person to look at. Without Chromium or Playwright the tests skip, except under
`CI=true`, where a missing browser is a failure (`make test` installs it as root).
"""

from __future__ import annotations

import io
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.server import ServerProcess
from tests.waiting import scaled, wait_until
from wanserve.catalog import Catalog

if TYPE_CHECKING:
    from playwright.sync_api import Browser, ConsoleMessage, Page, Request

pytestmark = pytest.mark.timeout(scaled(900))

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "playground"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Denoise at about 80x48 (the media layer scales to the size asked for), with enough steps
# that a 2 s poll sees the progress bar between 0 and 100 on a slow machine.
SMALL = {name: {"max_area": 80 * 48} for name in Catalog.build().names()}
STEPS = "24"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    reason = None
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the playwright package is not installed (pip install -e '.[test]')"
    if reason is None and not Path(CHROMIUM).is_file():
        reason = "Chromium is not installed (apt-get install -y chromium; `make test` does it)"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with sync_playwright() as playwright:
        # Never `playwright install`: the system's Chromium is the browser under test.
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--autoplay-policy=no-user-gesture-required"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess(
        tmp_path_factory.mktemp("playground"),
        WANSERVE_MODELS=json.dumps(SMALL),
        WANSERVE_STEPS=STEPS,
        WANSERVE_X264_PRESET="ultrafast",
    ) as process:
        yield process


@pytest.fixture(scope="module")
def key(server: ServerProcess) -> str:
    return server.create_key()


class Watched:
    """A page, with what it did that a test must hold it to: requests, console errors and
    Content-Security-Policy violations (a policy that blocks the page's own media shows here)."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[Request] = []
        self.problems: list[str] = []
        page.on("request", lambda request: self.requests.append(request))
        page.on("pageerror", lambda exc: self.problems.append(f"page error: {exc}"))
        page.on("console", self._console)

    def _console(self, message: ConsoleMessage) -> None:
        # A server without the events route answers the page's stream request 404, and the
        # page falls back to polling: Chromium logs that refusal, which is expected.
        events_probe = message.location.get("url", "").endswith("/events")
        if message.type == "error" and not events_probe:
            self.problems.append(f"console: {message.text} ({message.location})")

    def enter_key(self, base: str, key: str) -> None:
        self.page.goto(base + "/")
        # CSP violations are reported as DOM events; keep them where the test can read them.
        self.page.evaluate(
            """() => { window.cspViolations = [];
              document.addEventListener('securitypolicyviolation',
                (e) => window.cspViolations.push(e.violatedDirective + ' ' + e.blockedURI)); }"""
        )
        self.page.get_by_label("Your API key").fill(key)
        self.page.get_by_role("button", name="Use key").click()

    def csp_violations(self) -> list[str]:
        found: list[str] = self.page.evaluate("() => window.cspViolations")
        return found


@pytest.fixture
def watched(browser: Browser) -> Iterator[Callable[..., Watched]]:
    pages: list[Page] = []

    def open_page(viewport: dict[str, int] = DESKTOP) -> Watched:
        page = browser.new_page(viewport=viewport)  # type: ignore[arg-type]
        # Playwright's own waits (`wait_for()`, clicks, navigation) default to 30 s: a hang
        # guard like any other, so stretched like any other (milliseconds).
        page.set_default_timeout(scaled(60) * 1000)
        pages.append(page)
        return Watched(page)

    yield open_page
    for page in pages:
        page.close()


def wait_for(check: Callable[[], Any], *, what: str) -> Any:
    """Poll `check` until it returns something truthy (tests/waiting.py's bound)."""
    return wait_until(check, lambda value: bool(value), interval=0.1, what=what)


def save_screenshot(page: Page, tmp_path: Path, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    shutil.copy(path, ARTIFACTS / name)
    return path


def png(seed: int, size: tuple[int, int]) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_generate_watch_play_and_list(
    server: ServerProcess, key: str, watched: Callable[..., Watched], tmp_path: Path
) -> None:
    w = watched()
    page = w.page
    w.enter_key(server.base, key)
    page.get_by_text("Key accepted").wait_for()
    # The form is built from GET /api/v1/models.
    page.get_by_label("Model", exact=True).select_option("wan2.1-t2v-turbo")
    assert page.get_by_label("Size", exact=True).is_visible()
    assert not page.get_by_label("Resolution", exact=True).is_visible()
    assert not page.locator("#image").is_visible()
    page.get_by_label("Size", exact=True).select_option("832*480")
    page.get_by_label("Prompt", exact=True).fill("A paper boat drifting on a rainy street")
    page.get_by_label("Seed", exact=True).fill("7")
    page.get_by_role("button", name="Generate video").click()

    task_id = wait_for(
        lambda: page.locator("#task-line").text_content() or "", what="the task id"
    ).removeprefix("Task ")
    seen: list[int] = []

    def finished() -> bool:
        seen.append(int(page.locator("#progress").get_attribute("value") or 0))
        return page.locator("#player").is_visible() or page.locator("#error").is_visible()

    wait_for(finished, what="the video")
    assert not page.locator("#error").is_visible(), page.locator("#error").text_content()
    moving = sorted({v for v in seen if v > 0})
    assert len(moving) >= 2 and moving[0] < 100, f"progress never moved: {seen}"
    assert page.locator("#status").text_content() == "Succeeded."

    # The MP4 loads and plays in the page's own <video controls>.
    video = page.locator("#video")
    wait_for(lambda: video.evaluate("v => v.readyState >= 2"), what="video data")
    video.evaluate("v => { v.muted = true; return v.play(); }")
    wait_for(lambda: video.evaluate("v => v.currentTime > 0"), what="playback")
    src = video.evaluate("v => v.currentSrc")
    assert page.locator("#download").get_attribute("href") == src
    assert httpx.get(src, timeout=scaled(30)).headers["content-type"] == "video/mp4"

    # The recent list shows the task with its status and a download link.
    row = page.locator(f'#tasks li[data-task-id="{task_id}"]')
    row.get_by_text("SUCCEEDED").wait_for()
    assert row.get_by_role("link", name="Download").get_attribute("href")

    save_screenshot(page, tmp_path, "desktop.png")
    page.set_viewport_size(PHONE)  # type: ignore[arg-type]
    # Nothing wider than a phone: no sideways scrolling.
    assert page.evaluate("document.documentElement.scrollWidth") <= PHONE["width"]
    assert save_screenshot(page, tmp_path, "phone.png").stat().st_size > 0

    # The key: in sessionStorage and the Authorization header, never in a URL.
    assert page.evaluate("sessionStorage.getItem('wanserve.apiKey')") == key
    assert page.evaluate("localStorage.length") == 0
    api_calls = [r for r in w.requests if "/api/v1/" in r.url and "/uploads" not in r.url]
    assert api_calls
    assert all(key not in r.url for r in w.requests)
    assert all(r.headers.get("authorization") == f"Bearer {key}" for r in api_calls)
    assert w.csp_violations() == [] and w.problems == []


@pytest.mark.slow
def test_an_image_model_uploads_its_frame(
    server: ServerProcess, key: str, watched: Callable[..., Watched], tmp_path: Path
) -> None:
    w = watched(PHONE)
    page = w.page
    w.enter_key(server.base, key)
    page.get_by_text("Key accepted").wait_for()
    page.get_by_label("Model", exact=True).select_option("wan2.2-i2v-flash")
    # Image-driven: a resolution tier and an image, no size.
    assert page.get_by_label("Resolution", exact=True).is_visible()
    assert not page.get_by_label("Size", exact=True).is_visible()
    page.get_by_label("Resolution", exact=True).select_option("480P")
    page.get_by_role("button", name="Generate video").click()
    assert (
        page.locator("#error").text_content() == "InvalidParameter: First frame: choose an image."
    )

    page.locator("#image").set_input_files(
        files=[{"name": "frame.png", "mimeType": "image/png", "buffer": png(1, (120, 160))}]
    )
    page.get_by_role("button", name="Generate video").click()
    task_id = wait_for(
        lambda: page.locator("#task-line").text_content() or "", what="the task id"
    ).removeprefix("Task ")

    # The SDK's flow: a policy with the key, the form without it, then the oss:// reference.
    policy = next(r for r in w.requests if "action=getPolicy" in r.url)
    assert policy.headers.get("authorization") == f"Bearer {key}"
    form = next(r for r in w.requests if r.method == "POST" and r.url.endswith("/api/v1/uploads"))
    assert "authorization" not in form.headers
    create = next(r for r in w.requests if r.url.endswith("/video-synthesis"))
    body = json.loads(create.post_data or "{}")
    assert body["input"]["img_url"].startswith("oss://") and body["input"]["img_url"].endswith(
        "/frame.png"
    )
    assert create.headers.get("x-dashscope-ossresourceresolve") == "enable"

    wait_for(
        lambda: page.locator("#player").is_visible() or page.locator("#error").is_visible(),
        what="the video",
    )
    assert not page.locator("#error").is_visible(), page.locator("#error").text_content()
    done = httpx.get(
        f"{server.base}/api/v1/tasks/{task_id}",
        headers={"Authorization": f"Bearer {key}"},
        timeout=scaled(30),
    ).json()
    assert done["output"]["task_status"] == "SUCCEEDED"
    assert done["usage"]["video_ratio"] == "544*720"  # the 3:4 frame's aspect at 480P
    save_screenshot(page, tmp_path, "phone-image-model.png")
    assert w.csp_violations() == [] and w.problems == []


def test_a_wrong_key_shows_the_servers_error(
    server: ServerProcess, watched: Callable[..., Watched]
) -> None:
    w = watched()
    w.enter_key(server.base, "sk-not-a-key")
    error = w.page.locator("#error")
    error.wait_for()
    assert error.text_content() == "InvalidApiKey: Invalid API-key provided."
    assert w.page.get_by_label("Model", exact=True).is_disabled()
    assert w.page.evaluate("sessionStorage.length") == 0


def test_live_events_are_preferred_to_polling(
    server: ServerProcess, key: str, watched: Callable[..., Watched]
) -> None:
    """The events contract, consumed through fetch(): a stream (here served by the browser's
    network layer, the seam, in the contract's exact format) drives the page; the page polls
    only when a server has no such route."""
    w = watched()
    page = w.page
    task = {"task_id": "t-1", "task_status": "RUNNING"}
    done = {
        "request_id": "r-1",
        "output": {
            "task_id": "t-1",
            "task_status": "FAILED",
            "code": "InternalError.Algo",
            "message": "weights missing",
        },
    }
    stream = "".join(
        [
            ": keep-alive\n\n",
            f"id: 1\nevent: status\ndata: {json.dumps(task | {'queue_position': None})}\n\n",
            'id: 2\nevent: progress\ndata: {"task_id": "t-1", "stage": "denoising", '
            '"step": 3, "total_steps": 8, "progress": 33}\r\n\r\n',
            f"id: 3\nevent: done\ndata: {json.dumps(done)}\n\n",
        ]
    )
    page.route(
        "**/api/v1/tasks/t-1/events",
        lambda route: route.fulfill(
            status=200, headers={"Content-Type": "text/event-stream"}, body=stream
        ),
    )
    page.route(
        "**/api/v1/services/aigc/video-generation/video-synthesis",
        lambda route: route.fulfill(
            status=200,
            content_type="application/json",
            body=json.dumps({"request_id": "r-0", "output": task | {"task_status": "PENDING"}}),
        ),
    )
    w.enter_key(server.base, key)
    page.get_by_text("Key accepted").wait_for()
    page.get_by_label("Prompt", exact=True).fill("a lighthouse")
    page.get_by_role("button", name="Generate video").click()
    page.locator("#error").wait_for()
    assert page.locator("#error").text_content() == "InternalError.Algo: weights missing"
    assert page.locator("#status").text_content() == "Failed."
    assert page.locator("#progress").get_attribute("value") == "33"
    events = [r for r in w.requests if r.url.endswith("/tasks/t-1/events")]
    assert len(events) == 1 and events[0].headers["authorization"] == f"Bearer {key}"
    assert not [r for r in w.requests if r.url.endswith("/api/v1/tasks/t-1")]  # no polling
