"""Every error leaves the API with its HTTP status and its door's body: DashScope's
`{request_id, code, message}`, or, under a prefix another door claims (`/v1/`: OpenAI's
`{"error": {message, type, param, code}}`), that door's.

Domain errors (`wanserve.errors`) map to statuses here and nowhere else, for every door;
framework errors (unknown route, wrong method, malformed query) and anything unexpected are
reshaped too, so a client never sees FastAPI's `{"detail": ...}` or a bare 500. A door only
decides how a `Problem` is written (`ErrorBody`), never which status it gets.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match, Mount
from starlette.types import Scope

from wanserve import errors
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
    return request_id_of_scope(request.scope)


def request_id_of_scope(scope: Scope) -> str:
    """The id the request middleware gave this request (`request.state.request_id`)."""
    return str(scope.get("state", {}).get("request_id", ""))


@dataclass(frozen=True)
class Problem:
    """An error as every door sees it, before its door writes it."""

    status: int
    code: str  # the domain code (DashScope's vocabulary), e.g. InvalidParameter
    message: str
    field: str | None = None  # the request field at fault, when known


# Writes a problem as a door's JSON body (the request id is the second argument).
ErrorBody = Callable[[Problem, str], dict[str, Any]]


def _dashscope_body(problem: Problem, request_id: str) -> dict[str, Any]:
    return {"request_id": request_id, "code": problem.code, "message": problem.message}


def _body_for(request: Request) -> ErrorBody:
    doors: Mapping[str, ErrorBody] = getattr(request.app.state, "error_bodies", {})
    for prefix, body in doors.items():
        if request.url.path.startswith(prefix):
            return body
    return _dashscope_body


def error_response(
    request: Request,
    problem: Problem,
    *,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    request_id = request_id_of(request)
    headers = dict(headers or {})
    if request_id:
        # Set here too: a 500 is answered outside the middleware that adds it to the others.
        headers["X-Request-Id"] = request_id
    body = _body_for(request)(problem, request_id)
    return JSONResponse(body, status_code=problem.status, headers=headers)


async def _domain(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, errors.WanserveError)
    return domain_error_response(request, exc)


def domain_error_response(request: Request, exc: errors.WanserveError) -> JSONResponse:
    """A domain error's answer, as the app's handler gives it (also for middleware that
    answers before the handlers are reached)."""
    headers = None
    if isinstance(exc, errors.Throttled) and exc.retry_after is not None:
        # Whole seconds, rounded up: a client that waits exactly this long must get through.
        headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after)))}
    if isinstance(exc, StorageError):  # the client sees the message; the operator the cause
        log.error("%s on %s %s: %s", exc.code, request.method, request.url.path, exc.detail)
    problem = Problem(http_status(exc), exc.code, exc.message, field=exc.field)
    return error_response(request, problem, headers=headers)


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
    return error_response(request, Problem(exc.status_code, code, message), headers=headers)


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
    found = exc.errors()
    problems = "; ".join(
        f"{'.'.join(str(p) for p in e.get('loc', ())[1:]) or 'request'}: {e.get('msg')}"
        for e in found
    )
    loc = found[0].get("loc", ()) if found else ()
    field = ".".join(str(p) for p in loc[1:]) or None
    problem = Problem(400, "InvalidParameter", f"Invalid request: {problems}.", field=field)
    return error_response(request, problem)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.exception("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return error_response(
        request,
        Problem(
            500,
            "InternalError",
            "An internal error has occurred, please try again later or contact service support.",
        ),
    )


def install(app: FastAPI, *, doors: Mapping[str, ErrorBody] | None = None) -> None:
    """Install the handlers; `doors` maps a path prefix to the body its errors are written
    in (every other path gets DashScope's)."""
    app.state.error_bodies = dict(doors or {})
    app.add_exception_handler(errors.WanserveError, _domain)
    app.add_exception_handler(StarletteHTTPException, _http)
    app.add_exception_handler(RequestValidationError, _validation)
    app.add_exception_handler(Exception, _unexpected)
