"""The playground's files and headers, through the real app: a strict Content-Security-Policy
that still lets the page reach this deployment's uploads and videos, no inline script or
style, and everything shipped in the package (the browser tests are in tests/web)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from html.parser import HTMLParser

import pytest

from tests.conftest import Harness
from tests.s3_server import fake_aws_env, new_bucket, s3_server
from wanserve.api.playground import ASSETS_DIR, WEB_DIR


def directives(policy: str) -> dict[str, list[str]]:
    parsed: dict[str, list[str]] = {}
    for part in policy.split(";"):
        name, *values = part.split()
        parsed[name] = values
    return parsed


class Page(HTMLParser):
    """What the page would run or load: scripts, styles, handlers, external references."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str | None] = []
        self.inline: list[str] = []
        self.references: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "script":
            self.scripts.append(values.get("src"))
        if tag == "style" or "style" in values:
            self.inline.append(f"<{tag}> style")
        self.inline += [f"<{tag} {name}>" for name, _ in attrs if name.startswith("on")]
        self.references += [v for k, v in attrs if k in ("src", "href") and v is not None]


def test_the_page_is_served_with_a_strict_policy(harness: Harness) -> None:
    res = harness.client.get("/")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/html")
    assert res.headers["X-Content-Type-Options"] == "nosniff"
    assert res.headers["Referrer-Policy"] == "no-referrer"
    policy = directives(res.headers["Content-Security-Policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"] and policy["style-src"] == ["'self'"]
    assert policy["object-src"] == ["'none'"] and policy["frame-ancestors"] == ["'none'"]
    # Local storage: videos and uploads come from this server.
    assert policy["media-src"] == ["'self'", "http://testserver"]
    assert policy["connect-src"] == ["'self'", "http://testserver"]

    page = Page()
    page.feed(res.text)
    assert page.scripts == ["playground/playground.js"]  # one script, from a file
    assert page.inline == []  # nothing the policy would have to allow with 'unsafe-inline'
    for reference in page.references:
        assert not re.match(r"^[a-z]+:|^//", reference), reference  # nothing from elsewhere
        if reference.startswith("playground/"):
            asset = harness.client.get("/" + reference)
            assert asset.status_code == 200, reference
            assert asset.headers["X-Content-Type-Options"] == "nosniff"


def test_every_shipped_file_is_served_and_nothing_else(harness: Harness) -> None:
    for path in ASSETS_DIR.iterdir():
        assert harness.client.get(f"/playground/{path.name}").status_code == 200, path
    assert (WEB_DIR / "index.html").is_file()
    # The page itself only at `/`, where its policy is set.
    missing = harness.client.get("/playground/index.html")
    assert missing.status_code == 404 and missing.json()["code"] == "NotFound"
    # Unknown paths keep the API's own error body: the page is not a catch-all.
    res = harness.client.get("/no-such-page")
    assert res.status_code == 404 and set(res.json()) == {"request_id", "code", "message"}


def test_a_public_url_on_another_origin_is_allowed(
    harness_factory: Callable[..., Harness],
) -> None:
    h = harness_factory(start_workers=False, public_url="https://video.example.com/base")
    policy = directives(h.client.get("/").headers["Content-Security-Policy"])
    assert policy["connect-src"] == ["'self'", "https://video.example.com"]
    assert policy["media-src"] == ["'self'", "https://video.example.com"]


@pytest.fixture
def s3_endpoint(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    fake_aws_env(monkeypatch)
    with s3_server() as url:
        yield url


def test_videos_in_a_bucket_may_be_played_from_its_origin(
    harness_factory: Callable[..., Harness], s3_endpoint: str
) -> None:
    bucket = new_bucket(s3_endpoint)
    h = harness_factory(
        start_workers=False, storage_url=f"s3://{bucket}/wan", s3_endpoint_url=s3_endpoint
    )
    policy = directives(h.client.get("/").headers["Content-Security-Policy"])
    assert policy["media-src"] == ["'self'", "http://testserver", s3_endpoint]
    # Uploads still go to this server; nothing else may be fetched with the key.
    assert policy["connect-src"] == ["'self'", "http://testserver"]
