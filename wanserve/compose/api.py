"""The API composition root: the FastAPI app over the shared store. It builds no engine and no
runner, and nothing it imports loads torch: an API-only host installs without the `[engine]`
extra. Generation happens wherever the dispatcher sends task ids."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import timedelta
from functools import partial
from typing import Protocol

import uvicorn
from fastapi import FastAPI, Request, Response

from wanserve import __version__
from wanserve.api import docs as api_docs
from wanserve.api import errors as api_errors
from wanserve.api import openapi as api_openapi
from wanserve.api.deps import Services
from wanserve.api.routes import api, probes
from wanserve.api.uploads import uploads as uploads_router
from wanserve.api.usage import usage as usage_router
from wanserve.compose.shared import Shared, dispatcher_for, features_of
from wanserve.config import Settings
from wanserve.db.lock import exclusive
from wanserve.spec import Features
from wanserve.storage import serve_files
from wanserve.tasks.dispatch import Dispatcher
from wanserve.tasks.janitor import Janitor, Redispatch
from wanserve.tasks.service import Limits, TaskService
from wanserve.tasks.usage import UsageReader
from wanserve.throttling.guard import build_throttle

log = logging.getLogger(__name__)


class Background(Protocol):
    """Something that runs beside the HTTP server for the app's lifetime."""

    def start(self) -> None: ...
    def stop(self) -> None: ...


def build_services(
    shared: Shared, *, dispatcher: Dispatcher, features: Features | None = None
) -> Services:
    settings = shared.settings
    tasks = TaskService(
        store=shared.store,
        dispatcher=dispatcher,
        catalog=shared.catalog,
        features=features or features_of(settings),
        limits=Limits(
            max_unfinished_per_key=settings.max_unfinished_per_key,
            max_queue=settings.max_queue,
            max_image_bytes=settings.max_image_bytes,
            max_audio_bytes=settings.max_audio_bytes,
        ),
        cancel_running=settings.cancel_running,
        uploads=shared.uploads,
        clock=shared.clock,
    )
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
    api_errors.install(app)
    app.include_router(api)
    app.include_router(uploads_router)
    app.include_router(usage_router)
    app.include_router(probes)
    serve_files(app, services.storage)
    api_docs.install(app)
    api_openapi.install(app)
    app.middleware("http")(_request_context)
    return app


def create_api_only(shared: Shared) -> FastAPI:
    """`wanserve serve --workers 0`: HTTP, the janitor, and a producer; no generation."""
    settings = shared.settings
    dispatcher = dispatcher_for(shared)
    services = build_services(shared, dispatcher=dispatcher)
    janitor = build_janitor(shared, dispatcher=dispatcher)
    return create_api_app(settings, services=services, background=[janitor])


def uvicorn_config(settings: Settings, app: FastAPI) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,  # the app logs requests itself, without query strings
        timeout_graceful_shutdown=60,
    )


async def _request_context(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    """Give every request an id (echoed in bodies and `X-Request-Id`) and log it without its
    query string, which may carry a URL signature."""
    request_id = str(uuid.uuid4())
    request.state.request_id = request_id
    started = time.monotonic()
    response = await call_next(request)
    response.headers["X-Request-Id"] = request_id
    log.info(
        "%s %s -> %d (%.0f ms) %s",
        request.method,
        request.url.path,
        response.status_code,
        (time.monotonic() - started) * 1000,
        request_id,
    )
    return response
