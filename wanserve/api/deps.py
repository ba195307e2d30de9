"""Request-scoped dependencies: the wired services, the caller's API key, the request id, and
the check that a request's path and query hold only storable text."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from wanserve import text
from wanserve.api.errors import request_id_of
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

    def video_url(self, task: Task, *, base_url: str) -> str | None:
        if task.result is None:
            return None
        base = self.settings.public_url or base_url
        return self.storage.url(task.result.video_key, expires_at=task.expires_at, base_url=base)


def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def authenticate(request: Request, services: Annotated[Services, Depends(get_services)]) -> ApiKey:
    """The caller's key, after the throttles: a locked-out address is refused before its key is
    even looked at, and a known key spends one request from its bucket."""
    # Behind a reverse proxy this is the proxy's address unless uvicorn trusts it to forward
    # the client's (`--forwarded-allow-ips` / FORWARDED_ALLOW_IPS).
    address = request.client.host if request.client is not None else "unknown"
    services.throttle.check_address(address)
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    token = token.strip()
    if not header or scheme.lower() != "bearer" or not token:
        raise InvalidApiKey("No API-key provided.")
    key = services.keys.authenticate(token)
    if key is None:
        services.throttle.record_auth_failure(address)
        raise InvalidApiKey("Invalid API-key provided.")
    services.throttle.check_key(key.id)
    return key


def check_url_text(request: Request) -> None:
    """Every path and query parameter, names included, is text the stores can hold (the
    routers depend on this, so no route can forget it; JSON bodies are checked as parsed)."""
    for name, value in request.path_params.items():
        text.check(str(value), field=f"path parameter {name}")
    for name, value in request.query_params.multi_items():
        text.check(name, field="a query parameter name")
        text.check(value, field=f"query parameter {name}")


def get_request_id(request: Request) -> str:
    return request_id_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]
ApiKeyDep = Annotated[ApiKey, Depends(authenticate)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
