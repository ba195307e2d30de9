"""Every error leaves the API as DashScope's `{request_id, code, message}` with its HTTP status.

Domain errors (`wanserve.errors`) map to statuses here and nowhere else; framework errors
(unknown route, wrong method, malformed query) and anything unexpected are reshaped too, so a
client never sees FastAPI's `{"detail": ...}` or a bare 500.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount

from wanserve import errors
from wanserve.api.schemas import error_body
from wanserve.storage.base import StorageError, StorageFull, StorageUnavailable

log = logging.getLogger(__name__)

_STATUS: tuple[tuple[type[errors.WanserveError], int], ...] = (
    (errors.UnsupportedMediaType, 415),
    (errors.InvalidParameter, 400),
    (errors.UnsupportedOperation, 400),
    (errors.InvalidApiKey, 401),
    (errors.AccessDenied, 403),
    (errors.NotFound, 404),
    (errors.RequestTooLarge, 413),
    (errors.Throttled, 429),
    (StorageFull, 507),  # Insufficient Storage: retry once space is back
    (StorageUnavailable, 503),
    (errors.NotReady, 503),
    (errors.InternalError, 500),
)


def http_status(exc: errors.WanserveError) -> int:
    for cls, status in _STATUS:
        if isinstance(exc, cls):
            return status
    return 500


def request_id_of(request: Request) -> str:
    return str(getattr(request.state, "request_id", ""))


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    *,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    request_id = request_id_of(request)
    headers = dict(headers or {})
    if request_id:
        # Set here too: a 500 is answered outside the middleware that adds it to the others.
        headers["X-Request-Id"] = request_id
    return JSONResponse(
        error_body(code, message, request_id=request_id), status_code=status, headers=headers
    )


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.WanserveError)
    headers = None
    if isinstance(exc, errors.Throttled) and exc.retry_after is not None:
        # Whole seconds, rounded up: a client that waits exactly this long must get through.
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    if isinstance(exc, StorageError):  # the client sees the message; the operator the cause
        log.error("%s on %s %s: %s", exc.code, request.method, request.url.path, exc.detail)
    return error_response(request, http_status(exc), exc.code, exc.message, headers=headers)


async def _http(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    headers = exc.headers
    if exc.status_code == 404:
        code, message = "NotFound", f"No such endpoint: {request.method} {request.url.path}."
    elif exc.status_code == 405:
        allowed = allowed_methods(request, exc)
        code, message = (
            "UnsupportedOperation",
            f"{request.method} is not allowed on {request.url.path}; use {', '.join(allowed)}.",
        )
        headers = {"Allow": ", ".join(allowed)}
    else:
        code, message = (
            "InvalidParameter" if exc.status_code < 500 else "InternalError",
            str(exc.detail),
        )
    return error_response(request, exc.status_code, code, message, headers=headers)


def allowed_methods(request: Request, exc: StarletteHTTPException) -> list[str]:
    """Every method that some route takes at this path. Starlette's own `Allow` names only the
    first route that matched, and a path may have a route per method (the uploads)."""
    routes = [r for r in request.app.router.routes if not isinstance(r, Mount)]
    allowed = [
        method
        for method in _METHODS
        if any(r.matches({**request.scope, "method": method})[0] is Match.FULL for r in routes)
    ]
    if not allowed and exc.headers and "Allow" in exc.headers:  # a mounted app's own 405
        return [m.strip() for m in exc.headers["Allow"].split(",")]
    return allowed


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


async def _validation(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
        for e in exc.errors()
    )
    return error_response(request, 400, "InvalidParameter", f"Invalid request: {problems}.")


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        request,
        500,
        "InternalError",
        "An internal error has occurred, please try again later or contact service support.",
    )


def install(app: FastAPI) -> None:
    app.add_exception_handler(errors.WanserveError, _domain)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _unexpected)
