"""The API composition root: the FastAPI app over the shared store. It builds no engine and no
runner, and nothing it imports loads torch: an API-only host installs without the `[engine]`
extra. Generation happens wherever the dispatcher sends task ids."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from types import FrameType
from typing import Protocol

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from wanserve import __version__
from wanserve.api import docs as api_docs
from wanserve.api import errors as api_errors
from wanserve.api import openapi as api_openapi
from wanserve.api import playground as api_playground
from wanserve.api.dashscope import render as dashscope
from wanserve.api.dashscope.models import catalog as catalog_router
from wanserve.api.dashscope.routes import api, poll_routes, polls
from wanserve.api.dashscope.uploads import uploads as uploads_router
from wanserve.api.deps import Services
from wanserve.api.events import events as events_router
from wanserve.api.fastpoll import PollFastPath
from wanserve.api.openai import routes as openai_routes
from wanserve.api.openai import schemas as openai_schemas
from wanserve.api.probes import probes
from wanserve.api.streams import EventStreams
from wanserve.api.usage import usage as usage_router
from wanserve.compose.shared import Shared, dispatcher_for, features_of
from wanserve.config import Settings
from wanserve.db.lock import exclusive
from wanserve.observability import (
    UNMATCHED_ROUTE,
    Probe,
    Readiness,
    database_probe,
    storage_probe,
)
from wanserve.spec import Features
from wanserve.storage import serve_files
from wanserve.tasks.dispatch import Dispatcher
from wanserve.tasks.janitor import Janitor, Redispatch
from wanserve.tasks.outbox import OutboxMessage, SqlOutbox
from wanserve.tasks.service import Limits, TaskService
from wanserve.tasks.usage import UsageReader
from wanserve.tasks.webhooks import Backoff, Deliverer, render_json, webhook_secret
from wanserve.throttling.guard import build_throttle

log = logging.getLogger(__name__)


class Background(Protocol):
    """Something that runs beside the HTTP server for the app's lifetime."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


def build_services(
    shared: Shared,
    *,
    dispatcher: Dispatcher,
    features: Features | None = None,
    probes: Sequence[Probe] = (),
) -> Services:
    """The API's services; `probes` are readiness conditions beyond the store and storage
    (an embedded server adds its generation threads)."""
    settings = shared.settings
    features = features or features_of(settings)
    tasks = TaskService(
        store=shared.store,
        dispatcher=dispatcher,
        catalog=shared.catalog,
        features=features,
        limits=Limits(
            max_unfinished_per_key=settings.max_unfinished_per_key,
            max_queue=settings.max_queue,
            max_image_bytes=settings.max_image_bytes,
            max_audio_bytes=settings.max_audio_bytes,
            max_video_bytes=settings.max_video_bytes,
        ),
        cancel_running=settings.cancel_running,
        destinations=shared.fetcher,
        uploads=shared.uploads,
        storage=shared.storage,
        clock=shared.clock,
    )
    # Fleet-wide task gauges come from the API processes, which all read the same store.
    shared.metrics.watch_store(shared.store, models=shared.catalog.names(), clock=shared.clock)
    readiness = Readiness([database_probe(shared.db), storage_probe(shared.storage), *probes])
    return Services(
        settings=settings,
        catalog=shared.catalog,
        tasks=tasks,
        keys=shared.keys,
        storage=shared.storage,
        signer=shared.signer,
        uploads=shared.uploads,
        clock=shared.clock,
        throttle=build_throttle(settings),
        usage=UsageReader(shared.db),
        features=features,
        streams=EventStreams(max_per_key=settings.events_max_streams_per_key),
        metrics=shared.metrics,
        readiness=readiness,
    )


def build_deliverer(shared: Shared, *, services: Services) -> Deliverer:
    """The webhook sender of an API process. Bodies are rendered as the task's owner would
    GET the task at that moment, with the message id as `request_id`."""
    settings = shared.settings
    # No request to take a base URL from: links point at `public_url`, else at the address
    # this server listens on (right for a single host; set public_url behind a proxy).
    base_url = settings.public_url or f"http://{settings.host}:{settings.port}/"
    server_key = settings.load_secret_key()

    def body(message: OutboxMessage) -> bytes | None:
        task = services.tasks.get(message.task_id, api_key_id=message.api_key_id)
        if task is None:
            return None
        url = services.video_url(task, base_url=base_url)
        return render_json(dashscope.task_body(task, request_id=message.id, video_url=url))

    return Deliverer(
        outbox=SqlOutbox(shared.db, clock=shared.clock),
        render=body,
        destinations=shared.fetcher,
        secret_for=lambda key_id: webhook_secret(server_key, key_id),
        backoff=Backoff(
            delays=tuple(settings.webhook_backoff_seconds),
            max_attempts=settings.webhook_max_attempts,
        ),
        timeout_seconds=settings.webhook_timeout_seconds,
        poll_seconds=settings.webhook_poll_seconds,
        concurrency=settings.webhook_concurrency,
        observer=shared.metrics,
        clock=shared.clock,
    )


def build_janitor(shared: Shared, *, dispatcher: Dispatcher) -> Janitor:
    settings = shared.settings
    # Only a broker can lose a message; the table needs no re-sending.
    redispatch = None
    if settings.broker is not None:
        redispatch = Redispatch(
            unsent_after=timedelta(seconds=settings.dispatch_grace_seconds),
            resend_after=timedelta(seconds=settings.redispatch_after_seconds),
        )
    return Janitor(
        store=shared.store,
        storage=shared.storage,
        interval_seconds=settings.janitor_interval_seconds,
        stale_after=timedelta(seconds=settings.heartbeat_timeout_seconds),
        max_attempts=settings.max_attempts,
        dispatcher=dispatcher,
        uploads=shared.uploads,
        # One sweep at a time across every API replica on this database.
        exclusive=partial(exclusive, shared.db, "janitor"),
        redispatch=redispatch,
    )


def create_api_app(
    settings: Settings, *, services: Services, background: Sequence[Background] = ()
) -> FastAPI:
    """The HTTP app. `background` starts with the app and stops, in reverse, with it."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        for part in background:
            part.start()
        log.info(
            "wanserve %s ready: %d model(s), weights=%s, data in %s",
            __version__,
            len(services.catalog),
            settings.weights.value,
            settings.data_dir,
        )
        try:
            yield
        finally:
            services.streams.close()  # already done by ApiServer's signal handler under uvicorn
            for part in reversed(background):
                part.stop()

    app = FastAPI(
        title="wanserve",
        version=__version__,
        description="DashScope-compatible Wan video synthesis on open weights.",
        lifespan=lifespan,
        docs_url=None,  # served without a CDN by wanserve.api.docs
        redoc_url=None,
    )
    app.state.services = services
    api_errors.install(app, doors={openai_routes.PREFIX: openai_schemas.error_body})
    app.include_router(polls)
    app.include_router(api)
    app.include_router(openai_routes.v1)
    app.include_router(events_router)
    app.include_router(uploads_router)
    app.include_router(usage_router)
    app.include_router(catalog_router)
    app.include_router(probes)
    serve_files(app, services.storage)
    api_docs.install(app)
    api_playground.install(app)  # the web page at `/`
    api_openapi.install(app)
    # Middleware added last runs first: RequestContext (id, log, metrics) wraps the fast path.
    app.add_middleware(PollFastPath, services=services, routes=poll_routes())
    app.add_middleware(RequestContext)
    return app


def create_api_only(shared: Shared) -> FastAPI:
    """`wanserve serve --workers 0`: HTTP, the janitor, and a producer; no generation."""
    settings = shared.settings
    dispatcher = dispatcher_for(shared)
    services = build_services(shared, dispatcher=dispatcher)
    janitor = build_janitor(shared, dispatcher=dispatcher)
    deliverer = build_deliverer(shared, services=services)
    return create_api_app(settings, services=services, background=[janitor, deliverer])


class ApiServer(uvicorn.Server):
    """uvicorn's server, ending the app's event streams the moment SIGTERM or SIGINT arrives:
    uvicorn waits for open responses before shutting down (up to its graceful timeout), and
    an event stream would otherwise stay open until its task ends. `on_signal` actions run
    first (the embedded server's generation threads are told to stop)."""

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        services: Services,
        on_signal: Sequence[Callable[[int], None]] = (),
    ) -> None:
        super().__init__(config)
        self._services = services
        self._on_signal = on_signal

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        for action in self._on_signal:
            action(sig)
        self._services.streams.close()
        super().handle_exit(sig, frame)


def uvicorn_config(settings: Settings, app: FastAPI) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the app logs requests itself, without query strings
        timeout_graceful_shutdown=60,
    )


class RequestContext:
    """Give every request an id (echoed in bodies and `X-Request-Id`) and log it without its
    query string, which may carry a URL signature.

    Plain ASGI rather than `@app.middleware("http")`: Starlette's `BaseHTTPMiddleware` runs
    the app in a task group behind memory streams, which cost 18% of a poll's time (measured,
    docs/performance.md); here the only work is an id, one header, a log line and the
    request metrics."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = str(uuid.uuid4())
        # `request.state` reads this dict; error handlers outside this middleware (a 500) see
        # it too, since they get the same scope.
        scope.setdefault("state", {})["request_id"] = request_id
        header = (b"x-request-id", request_id.encode())
        started = time.monotonic()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                # Replace, not add: error responses carry the header already.
                headers = [h for h in message.get("headers", ()) if h[0] != b"x-request-id"]
                message["headers"] = [*headers, header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.monotonic() - started
            services: Services = scope["app"].state.services
            services.metrics.request_served(
                method=scope["method"], route=_route_template(scope), status=status, seconds=seconds
            )
            log.info(
                "%s %s -> %d (%.0f ms) %s",
                scope["method"],
                scope["path"],
                status,
                seconds * 1000,
                request_id,
            )


def _route_template(scope: Scope) -> str:
    """The matched route's path template (`/api/v1/tasks/{task_id}`), never the raw path:
    task ids in labels would make one time series per task. The router records the route in
    the request's scope, which this middleware shares."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else UNMATCHED_ROUTE
