"""The web playground: `GET /` serves `wanserve/web/index.html`, and `/playground/` its script,
style sheet and icon (`wanserve/web/assets/`), all shipped in the package: no build step, no
CDN, no external fonts.

The page talks to the same API as any client, with the key the user types (kept in the tab's
`sessionStorage`, sent only in `Authorization`). Its Content-Security-Policy allows scripts,
styles and requests from this origin only, and media from where this deployment's videos live:
a local store serves them from this server (or `public_url`), S3 from the bucket's origin, so
that origin is read off a URL the storage itself signs (presigning is local: no request is
made). Media cannot run script, so naming the bucket's origin widens nothing an attacker could
use, while `connect-src` stays on this server: a stolen key has nowhere to be sent.
"""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.staticfiles import PathLike
from starlette.types import Scope

from wanserve.api.deps import ServicesDep
from wanserve.storage.base import StorageError

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parent.parent / "web"
ASSETS_DIR = WEB_DIR / "assets"
ASSETS_PATH = "/playground"
# Any key will do: only the origin of the signed URL is used.
_PROBE_KEY = "videos/playground-probe.mp4"

playground = APIRouter(include_in_schema=False)


def security_headers(policy: str) -> dict[str, str]:
    return {
        "Content-Security-Policy": policy,
        "X-Content-Type-Options": "nosniff",
        # Signed video URLs must not leak to other sites through the Referer header.
        "Referrer-Policy": "no-referrer",
        "X-Frame-Options": "DENY",
    }


def page_policy(*, connect: list[str], media: list[str]) -> str:
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            # blob: previews the image the user picked before it is uploaded.
            "img-src 'self' blob:",
            "media-src " + " ".join(["'self'", *media]),
            "connect-src " + " ".join(["'self'", *connect]),
            "object-src 'none'",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ]
    )


def _origin(url: str) -> str | None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    return f"{parts.scheme}://{parts.netloc}"


@playground.get("/", response_class=HTMLResponse)
def index(request: Request, services: ServicesDep) -> Response:
    """The playground page, with a policy naming this deployment's upload and video origins."""
    base = services.settings.public_url or str(request.base_url)
    public = [o for o in [_origin(base)] if o is not None]  # uploads and local videos go here
    media = list(public)
    try:
        probe = services.storage.url(
            _PROBE_KEY, expires_at=services.clock() + timedelta(hours=1), base_url=base
        )
    except StorageError as exc:  # no video could be signed either; the page still loads
        log.warning("playground: cannot sign a probe URL (%s); media from this origin only", exc)
    else:
        media += [o for o in [_origin(probe)] if o is not None and o not in media]
    policy = page_policy(connect=public, media=media)
    html = (WEB_DIR / "index.html").read_bytes()
    headers = security_headers(policy) | {"Cache-Control": "no-cache"}
    return HTMLResponse(html, headers=headers)


class _Assets(StaticFiles):
    """The page's files, with the same hardening headers (they are never documents)."""

    def file_response(
        self,
        full_path: PathLike,
        stat_result: os.stat_result,
        scope: Scope,
        status_code: int = 200,
    ) -> Response:
        response = super().file_response(full_path, stat_result, scope, status_code)
        response.headers.update(security_headers("default-src 'none'"))
        return response


def install(app: FastAPI) -> None:
    app.include_router(playground)
    app.mount(ASSETS_PATH, _Assets(directory=ASSETS_DIR), name="playground")
