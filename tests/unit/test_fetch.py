"""The guarded fetcher against a real local HTTP server and the real resolver.

Tests that need a "public" host map the name `public.test` to the local server and list it in
`allowed_hosts` (an operator setting); everything else resolves for real."""

from __future__ import annotations

import io
from collections.abc import Iterator

import numpy as np
import pytest
from PIL import Image

from tests.media_server import media_server
from tests.waiting import expiring, scaled
from wanserve.errors import InvalidParameter, InvalidURL
from wanserve.media.fetch import FetchPolicy, SafeFetcher, address_allowed, system_resolver


def png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.zeros((32, 32, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


PNG = png()


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    routes = {
        "/img.png": (200, {"Content-Type": "image/png"}, PNG),
        "/img-generic": (200, {"Content-Type": "application/octet-stream"}, PNG),
        "/page": (200, {"Content-Type": "text/html"}, b"<html></html>"),
        "/big": (200, {"Content-Type": "image/png", "Content-Length": str(50 * 1024 * 1024)}, b""),
        "/audio.mp3": (200, {"Content-Type": "audio/mpeg"}, b"ID3"),
        "/to-public": (302, {"Location": "/img.png"}, b""),
        "/to-private-name": (302, {"Location": "http://private.test:{port}/img.png"}, b""),
        "/to-loopback": (307, {"Location": "http://127.0.0.1:{port}/img.png"}, b""),
        "/to-metadata": (302, {"Location": "http://169.254.169.254/latest/meta-data/"}, b""),
        "/to-ftp": (302, {"Location": "ftp://public.test/x.png"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/gone": (404, {"Content-Type": "text/plain"}, b"not here"),
        "/error": (500, {"Content-Type": "text/plain"}, b"boom"),
    }
    with media_server(routes) as p:
        for path, (status, headers, body) in list(routes.items()):
            if "Location" in headers:
                routes[path] = (status, {"Location": headers["Location"].format(port=p)}, body)
        from tests import media_server as ms

        ms.ROUTES.update(routes)
        yield p


def test_resolver(host: str, port: int) -> list[str]:
    """Resolve the test names to the local server; everything else for real."""
    if host in ("public.test", "private.test"):
        return ["127.0.0.1"]
    if host == "meta.test":
        return ["169.254.169.254"]
    return system_resolver(host, port)


test_resolver.__test__ = False  # type: ignore[attr-defined]


def fetcher(**policy: object) -> SafeFetcher:
    # Generous limits: a fetch that should succeed must not fail because the machine is busy.
    # The tests of the limits themselves pass short ones (`BOUNDED`).
    base = {
        "allowed_hosts": frozenset({"public.test"}),
        "read_timeout": scaled(30),
        "total_timeout": scaled(60),
    }
    return SafeFetcher(FetchPolicy(**(base | policy)), resolve=test_resolver)  # type: ignore[arg-type]


def get(url: str, *, kind: str = "image", max_bytes: int = 1024 * 1024, **policy: object) -> bytes:
    return fetcher(**policy).fetch(url, field="img_url", kind=kind, max_bytes=max_bytes).data


def test_fetches_an_allowed_host(port: int) -> None:
    assert get(f"http://public.test:{port}/img.png") == PNG
    assert get(f"http://public.test:{port}/img-generic") == PNG
    assert get(f"http://public.test:{port}/to-public") == PNG  # a redirect within bounds
    assert get(f"http://public.test:{port}/audio.mp3", kind="audio") == b"ID3"


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "private.test", "[::1]"])
def test_private_and_loopback_addresses_are_refused(port: int, host: str) -> None:
    with pytest.raises(InvalidURL, match="private, loopback, link-local or metadata address"):
        get(f"http://{host}:{port}/img.png")


@pytest.mark.parametrize("path", ["/to-private-name", "/to-loopback", "/to-metadata"])
def test_redirects_are_checked_at_every_hop(port: int, path: str) -> None:
    with pytest.raises(InvalidURL, match="private, loopback, link-local or metadata address"):
        get(f"http://public.test:{port}{path}")


def test_trusted_hosts_never_reach_metadata() -> None:
    with pytest.raises(InvalidURL, match="metadata address"):
        get("http://meta.test/latest/meta-data/", allowed_hosts=frozenset({"meta.test"}))


def test_private_networks_can_be_allowed_but_never_metadata(port: int) -> None:
    assert get(f"http://127.0.0.1:{port}/img.png", allow_private=True) == PNG
    with pytest.raises(InvalidURL, match="metadata address"):
        get(f"http://public.test:{port}/to-metadata", allow_private=True)


@pytest.mark.parametrize(
    ("address", "private_ok", "allowed"),
    [
        ("8.8.8.8", False, True),
        ("10.1.2.3", False, False),
        ("10.1.2.3", True, True),
        ("127.0.0.1", False, False),
        ("100.64.0.1", False, False),
        ("192.168.1.1", True, True),
        ("169.254.169.254", True, False),
        ("100.100.100.200", True, False),
        ("168.63.129.16", True, False),  # Azure WireServer: counted as global by Python
        ("fd00:ec2::254", True, False),
        ("fe80::1", True, False),
        ("::ffff:127.0.0.1", False, False),
        ("::1", False, False),
        ("224.0.0.1", True, False),
        ("0.0.0.0", True, False),
        ("2001:4860:4860::8888", False, True),
        # IPv4 carried in IPv6: NAT64, 6to4, Teredo and the old IPv4-compatible form.
        ("64:ff9b::a9fe:a9fe", True, False),  # NAT64 to the metadata address
        ("64:ff9b::7f00:1", False, False),  # NAT64 to loopback
        ("64:ff9b::808:808", False, True),  # NAT64 to a public address
        ("2002:7f00:1::", False, False),  # 6to4 around loopback
        ("2001:0:4136:e378:8000:63bf:3fff:fdd2", False, False),  # Teredo, test-net client
        ("::7f00:1", False, False),
        ("64:ff9b:1::1", False, False),
    ],
)
def test_address_rules(address: str, private_ok: bool, allowed: bool) -> None:
    assert address_allowed(address, allow_private=private_ok) is allowed


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("/gone", InvalidURL, "answered HTTP 404"),
        ("/error", InvalidURL, "answered HTTP 500"),
        ("/page", InvalidParameter, "is text/html, not image data"),
        ("/big", InvalidParameter, "larger than 1 MB"),
        ("/stream-big", InvalidParameter, "larger than 1 MB"),
        ("/slow", InvalidURL, "took longer than 3 s"),
        ("/hang", InvalidURL, "timed out"),
        ("/loop", InvalidURL, "more than 3 redirects"),
        ("/to-ftp", InvalidURL, "only http and https"),
    ],
)
def test_failures_are_clear_and_bounded(
    port: int, path: str, error: type[Exception], message: str
) -> None:
    # The time limit under test: far below what /slow (60 s of trickle) and /hang (5 s of
    # silence) take, so it trips whatever the machine's speed. The other limit, and both on
    # other paths, are generous, so a busy machine cannot turn their error into a timeout.
    limits = {
        "/slow": {"read_timeout": scaled(30), "total_timeout": expiring(3.0)},
        "/hang": {"read_timeout": expiring(1.0), "total_timeout": scaled(60)},
    }.get(path, {})
    with pytest.raises(error, match=message):
        get(f"http://public.test:{port}{path}", **limits)


def test_unreachable_and_unresolvable(port: int) -> None:
    with pytest.raises(InvalidURL, match="could not fetch"):
        get("http://public.test:1/img.png")  # nothing listens on port 1
    with pytest.raises(InvalidURL, match="could not fetch"):
        get("http://no-such-host.invalid/img.png")


def test_messages_never_echo_credentials_or_queries(port: int) -> None:
    with pytest.raises(InvalidURL) as info:
        get(f"http://user:secret@public.test:{port}/gone?token=abc")
    assert "secret" not in info.value.message and "token" not in info.value.message
