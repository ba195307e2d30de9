"""Request-scoped dependencies: the wired services, the caller's API key, the request id, and
the check that a request's path and query hold only storable text."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.types import Scope

from wanserve import text
from wanserve.api.errors import request_id_of
from wanserve.api.finished import FinishedTasks
from wanserve.api.streams import EventStreams
from wanserve.catalog import Catalog
from wanserve.clock import Clock
from wanserve.config import Settings
from wanserve.errors import InvalidApiKey
from wanserve.keys import ApiKey, KeyStore
from wanserve.observability import Metrics, Readiness
from wanserve.spec import Features
from wanserve.storage.base import Storage
from wanserve.storage.signing import UrlSigner
from wanserve.tasks.models import Task
from wanserve.tasks.service import TaskService
from wanserve.tasks.usage import UsageReader
from wanserve.throttling.guard import Throttle
from wanserve.uploads import UploadService


@dataclass(frozen=True)
class Services:
    """Everything routes use, built once by `create_app`."""

    settings: Settings
    catalog: Catalog
    tasks: TaskService
    keys: KeyStore
    storage: Storage
    signer: UrlSigner
    uploads: UploadService
    clock: Clock
    throttle: Throttle
    usage: UsageReader
    features: Features  # what submissions are checked against (GET /api/v1/models shows it)
    streams: EventStreams
    metrics: Metrics
    readiness: Readiness
    finished: FinishedTasks = field(default_factory=FinishedTasks)

    def video_url(self, task: Task, *, base_url: str) -> str | None:
        if task.result is None:
            return None
        base = self.settings.public_url or base_url
        return self.storage.url(task.result.video_key, expires_at=task.expires_at, base_url=base)

    def base_url(self, request: Request) -> str:
        """Where video URLs point: `public_url`, else the URL this request came to."""
        return self.settings.public_url or str(request.base_url)

    def origin(self, request: Request) -> str:
        """What `base_url` is made from, without making it (Starlette parses and re-joins a
        URL for that, 9% of a poll): requests with the same origin get the same base URL."""
        return self.origin_of(request.scope, request.headers.get("host"))

    def origin_of(self, scope: Scope, host: str | None) -> str:
        """`origin` from a request's ASGI scope and its `Host` header."""
        if self.settings.public_url:
            return self.settings.public_url
        return f"{scope['scheme']} {host} {scope.get('root_path', '')}"


async def get_services(request: Request) -> Services:
    # Dependencies are coroutines unless they do I/O: FastAPI runs a plain `def` in the
    # thread pool, a hand-off that cost more than the work itself on the poll path.
    services: Services = request.app.state.services
    return services


async def authenticate(
    request: Request, services: Annotated[Services, Depends(get_services)]
) -> ApiKey:
    """The caller's key, after the throttles: a locked-out address is refused before its key is
    even looked at, and a known key spends one request from its bucket.

    A key read within `api_key_cache_seconds`, with the in-process limiter, is checked here on
    the event loop without any I/O; anything else (a database read, Redis) runs in the thread
    pool."""
    # Behind a reverse proxy this is the proxy's address unless uvicorn trusts it to forward
    # the client's (`--forwarded-allow-ips` / FORWARDED_ALLOW_IPS).
    address = client_address(request.scope)
    header = request.headers.get("authorization", "")
    throttle = services.throttle
    if throttle.in_memory:
        throttle.check_address(address)
        token = _bearer(header)
        key = services.keys.cached(token)
        if key is not None:
            throttle.check_key(key.id)
            return key
    return await run_in_threadpool(_authenticate, services, address, header)


def client_address(scope: Scope) -> str:
    """The peer address the throttles count failed keys against."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


def _authenticate(services: Services, address: str, header: str) -> ApiKey:
    throttle = services.throttle
    if not throttle.in_memory:  # an in-memory one was checked on the event loop already
        throttle.check_address(address)
    token = _bearer(header)
    key = services.keys.authenticate(token)
    if key is None:
        throttle.record_auth_failure(address)
        raise InvalidApiKey("Invalid API-key provided.")
    throttle.check_key(key.id)
    return key


def _bearer(header: str) -> str:
    token = bearer_token(header)
    if token is None:
        raise InvalidApiKey("No API-key provided.")
    return token


def bearer_token(header: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` header, or None."""
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


async def check_url_text(request: Request) -> None:
    """Every path and query parameter, names included, is text the stores can hold (the
    routers depend on this, so no route can forget it; JSON bodies are checked as parsed)."""
    for name, value in request.path_params.items():
        text.check(str(value), field=f"path parameter {name}")
    if not request.scope["query_string"]:
        return  # most requests (every poll) have none; parsing an empty one is not free
    for name, value in request.query_params.multi_items():
        text.check(name, field="a query parameter name")
        text.check(value, field=f"query parameter {name}")


async def get_request_id(request: Request) -> str:
    return request_id_of(request)


@dataclass(frozen=True)
class Caller:
    """An authenticated request's context: the services, the caller's key and the request id,
    for the poll route, which gets them by a plain call (`get_caller`) rather than as three
    dependencies (see `routes.get_task`)."""

    services: Services
    key: ApiKey
    request_id: str


async def get_caller(request: Request) -> Caller:
    """What `ServicesDep`, `ApiKeyDep` and `RequestIdDep` give, the same way, in one call."""
    services = await get_services(request)
    key = await authenticate(request, services)
    return Caller(services=services, key=key, request_id=request_id_of(request))


ServicesDep = Annotated[Services, Depends(get_services)]
ApiKeyDep = Annotated[ApiKey, Depends(authenticate)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
