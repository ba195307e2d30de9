"""`PollFastPath`: the poll of a finished task answered from memory, before routing.

A poll (`GET /api/v1/tasks/{task_id}`) is the most frequent call a video API gets, and once a
task has finished its answer is kept (`api/finished.py`). Serving that kept answer through
Starlette's router and FastAPI's request handling cost more than everything else in the poll
together (profiled: about half of its time, docs/performance.md). This ASGI middleware
answers such a poll itself when, and only when, the caller and the answer can be found
without I/O, and passes every other request, unchanged, to the app:

- the method is GET, there is no query string, and the path is the poll route's, as the router
  would match it (one segment after `/api/v1/tasks/`, an optional trailing slash);
- the `Authorization` header is a bearer token whose key was read within
  `api_key_cache_seconds` (`KeyStore.cached`: active, unrevoked in this process);
- the caller's key owns a kept, unexpired answer for this origin (`FinishedTasks.body`). Only
  ids the store gave out are kept, so a path parameter the routers' text check would refuse
  (`deps.check_url_text`) is never found here: the route refuses it;
- then the address lockout and the key's rate bucket are checked exactly as `authenticate`
  checks them (on the event loop when their state is in process memory, in the thread pool
  when it is in Redis); a refusal is answered here in the route's own error shape (429,
  `Retry-After`).

Anything else (a miss, a key not cached, a malformed header) goes to the route, which makes
the same checks with I/O and gives the same answers. Nothing is spent before the fast path
commits to answering, so a request that falls through is never counted twice by the rate
limiter. The request id, the `X-Request-Id` header, the request log and the HTTP metrics come
from the `RequestContext` middleware around this one, as for every route; `scope["route"]` is
set to the poll route so the metrics carry its template.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Receive, Scope, Send

from wanserve.api import errors as api_errors
from wanserve.api.dashscope import render
from wanserve.api.deps import Services, bearer_token, client_address
from wanserve.errors import Throttled

PREFIX = "/api/v1/tasks/"
_HEADERS = [(b"content-type", b"application/json")]


class PollFastPath:
    """ASGI middleware answering kept polls itself; see the module's docstring."""

    def __init__(self, app: ASGIApp, *, services: Services, routes: dict[bool, BaseRoute]) -> None:
        """`routes` are the poll route without (False) and with (True) a trailing slash."""
        self.app = app
        self._services = services
        self._routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kept = None
        if scope["type"] == "http" and scope["method"] == "GET" and not scope["query_string"]:
            kept = self._kept_answer(scope)
        if kept is None:
            await self.app(scope, receive, send)
            return
        body, key_id, route = kept
        scope["route"] = route  # the metrics label this answer with the poll route's template
        try:
            if self._services.throttle.in_memory:
                self._spend(scope, key_id)
            else:  # Redis: I/O, off the event loop, as `authenticate` does it
                await run_in_threadpool(self._spend, scope, key_id)
        except Throttled as exc:
            response = api_errors.domain_error_response(Request(scope), exc)
            await response(scope, receive, send)
            return
        request_id = api_errors.request_id_of_scope(scope)
        content = render.stamp(body, request_id=request_id)
        headers = [*_HEADERS, (b"content-length", str(len(content)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": content})

    def _kept_answer(self, scope: Scope) -> tuple[bytes, str, BaseRoute] | None:
        """The kept answer this poll would get from the route, the caller's key id and the
        route, or None: let the route answer. Reads only memory and spends nothing."""
        target = poll_target(scope["path"], scope.get("root_path", ""))
        if target is None:
            return None
        task_id, slash = target
        services = self._services
        authorization, host = _headers(scope)
        token = bearer_token(authorization)
        if token is None:
            return None
        key = services.keys.cached(token)
        if key is None:
            return None
        origin = services.origin_of(scope, host)
        body = services.finished.body(
            task_id, api_key_id=key.id, origin=origin, now=services.clock()
        )
        if body is None:
            return None
        return body, key.id, self._routes[slash]

    def _spend(self, scope: Scope, key_id: str) -> None:
        """What `authenticate` checks once the key is known: the address lockout, then one
        request from the key's bucket. Raises `Throttled`."""
        throttle = self._services.throttle
        throttle.check_address(client_address(scope))
        throttle.check_key(key_id)


def poll_target(path: str, root_path: str = "") -> tuple[str, bool] | None:
    """(task id, trailing slash?) when the router would send `path` to the poll route, else
    None. The route's templates are `/api/v1/tasks/{task_id}` and the same with a trailing
    slash; a path parameter is one non-empty segment. A path under the root path is matched
    below it, as Starlette's router does (and, as there, a path outside it as it is)."""
    if root_path and path.startswith(root_path + "/"):
        path = path[len(root_path) :]
    if not path.startswith(PREFIX):
        return None
    rest = path[len(PREFIX) :]
    slash = rest.endswith("/")
    if slash:
        rest = rest[:-1]
    if not rest or "/" in rest:
        return None
    return rest, slash


def _headers(scope: Scope) -> tuple[str, str | None]:
    """The first `Authorization` and `Host` header values (as Starlette's `Headers.get`
    reads them: latin-1), without building a headers object."""
    authorization: str | None = None
    host: str | None = None
    for name, value in scope["headers"]:
        if name == b"authorization" and authorization is None:
            authorization = value.decode("latin-1")
        elif name == b"host" and host is None:
            host = value.decode("latin-1")
    return authorization or "", host
