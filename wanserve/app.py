"""`create_app(settings)`: the FastAPI application and everything it runs, wired once.

Embedded mode (the default) runs the whole service in this process: SQLite task store, local
file storage, and generation threads that claim tasks from the store. Tests pass their own
`runner` (a fake at the engine seam) or `start_workers=False` to drive workers themselves.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import timedelta

from fastapi import FastAPI, Request, Response

from wanserve import __version__
from wanserve.api import docs as api_docs
from wanserve.api import errors as api_errors
from wanserve.api import openapi as api_openapi
from wanserve.api.deps import Services
from wanserve.api.routes import api, files
from wanserve.api.uploads import uploads as uploads_router
from wanserve.catalog import Catalog
from wanserve.clock import Clock, utcnow
from wanserve.config import Settings
from wanserve.db.engine import make_engine, upgrade
from wanserve.engine.prompt import (
    ChatBackend,
    ChatPromptExtender,
    LocalChat,
    OpenAIChat,
    PromptExtender,
)
from wanserve.engine.runner import (
    AudioDrivenVideo,
    AudioGenerator,
    EngineConfig,
    Runner,
    build_runner,
)
from wanserve.keys import KeyStore
from wanserve.media.audio import AudioLimits
from wanserve.media.fetch import FetchPolicy, SafeFetcher
from wanserve.media.image import ImageLimits
from wanserve.media.video import EncodeSettings
from wanserve.spec import Features
from wanserve.storage.local import LocalStorage
from wanserve.storage.signing import UrlSigner
from wanserve.tasks.janitor import Janitor
from wanserve.tasks.service import Limits, TaskService
from wanserve.tasks.store import SqlTaskStore
from wanserve.uploads import UploadService
from wanserve.workers.execute import Execution, InputResolver, execute
from wanserve.workers.inputs import MediaResolver
from wanserve.workers.local import EmbeddedDispatcher

log = logging.getLogger(__name__)


@dataclass
class Components:
    """The long-lived objects behind an app, exposed for tests and the CLI."""

    services: Services
    store: SqlTaskStore
    dispatcher: EmbeddedDispatcher
    janitor: Janitor
    runner: Runner


def build_components(
    settings: Settings,
    *,
    runner: Runner | None = None,
    inputs: InputResolver | None = None,
    audio_driven: AudioDrivenVideo | None = None,
    clock: Clock = utcnow,
) -> Components:
    engine = make_engine(settings.effective_database_url)
    upgrade(engine)
    store = SqlTaskStore(engine, ttl=timedelta(seconds=settings.task_ttl_seconds), clock=clock)
    signer = UrlSigner(settings.load_secret_key())
    storage = LocalStorage(settings.data_dir / "files", signer=signer)
    (settings.data_dir / "tmp").mkdir(parents=True, exist_ok=True)
    uploads = UploadService(
        engine=engine,
        storage=storage,
        signer=signer,
        max_bytes=settings.max_upload_bytes,
        quota_bytes=settings.upload_quota_bytes,
        upload_ttl=timedelta(seconds=settings.upload_ttl_seconds),
        clock=clock,
    )
    fetcher = SafeFetcher(
        FetchPolicy(
            allow_private=settings.fetch_allow_private,
            allowed_hosts=frozenset(h.lower() for h in settings.fetch_allowed_hosts),
            connect_timeout=settings.fetch_connect_timeout,
            read_timeout=settings.fetch_read_timeout,
            total_timeout=settings.fetch_total_timeout,
            max_redirects=settings.fetch_max_redirects,
        )
    )
    engine_config = build_engine_config(settings)
    if runner is None:
        runner = build_runner(engine_config)
    extender = build_extender(settings)
    dubber = build_dubber(settings, engine_config) if settings.dubbing else None
    execution = Execution(
        store=store,
        runner=runner,
        storage=storage,
        inputs=inputs
        or MediaResolver(
            fetcher=fetcher,
            uploads=uploads,
            image_limits=ImageLimits(
                max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
            ),
            audio_limits=AudioLimits(max_bytes=settings.max_audio_bytes),
        ),
        scratch_dir=settings.data_dir / "tmp",
        heartbeat_seconds=settings.heartbeat_seconds,
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
        timeout_seconds=settings.task_timeout_seconds,
        encode=EncodeSettings(crf=settings.x264_crf, preset=settings.x264_preset),
        extender=extender,
        chain_shots=settings.multi_shot_continuity,
        dubber=dubber,
        audio_driven=audio_driven,
    )
    dispatcher = EmbeddedDispatcher(
        store=store,
        execute=lambda claim, stopping: execute(claim, execution, stopping=stopping),
        workers=settings.workers,
    )
    catalog = Catalog.build(settings.models, steps=settings.effective_steps)
    tasks = TaskService(
        store=store,
        dispatcher=dispatcher,
        catalog=catalog,
        features=Features(audio_generation=dubber is not None, multi_shot=extender is not None),
        limits=Limits(
            max_unfinished_per_key=settings.max_unfinished_per_key,
            max_queue=settings.max_queue,
            max_image_bytes=settings.max_image_bytes,
            max_audio_bytes=settings.max_audio_bytes,
        ),
        cancel_running=settings.cancel_running,
        uploads=uploads,
        clock=clock,
    )
    services = Services(
        settings=settings,
        catalog=catalog,
        tasks=tasks,
        keys=KeyStore(engine, clock=clock),
        storage=storage,
        signer=signer,
        local_files=storage,
        uploads=uploads,
        clock=clock,
    )
    janitor = Janitor(
        store=store,
        storage=storage,
        interval_seconds=settings.janitor_interval_seconds,
        stale_after=timedelta(seconds=settings.heartbeat_timeout_seconds),
        max_attempts=settings.max_attempts,
        uploads=uploads,
    )
    return Components(
        services=services, store=store, dispatcher=dispatcher, janitor=janitor, runner=runner
    )


def build_extender(settings: Settings) -> PromptExtender | None:
    backend: ChatBackend
    if settings.prompt_extender == "openai":
        assert settings.prompt_extender_url is not None
        key = settings.prompt_extender_api_key
        backend = OpenAIChat(
            base_url=settings.prompt_extender_url,
            model=settings.prompt_extender_model,
            api_key=key.get_secret_value() if key else None,
            timeout=settings.prompt_extender_timeout,
            vision=settings.prompt_extender_vision,
        )
    elif settings.prompt_extender == "local":
        assert settings.prompt_extender_path is not None
        backend = LocalChat(settings.prompt_extender_path)
    else:
        return None
    return ChatPromptExtender(backend)


def build_engine_config(settings: Settings) -> EngineConfig:
    budget = settings.model_memory_gib
    return EngineConfig(
        weights=settings.weights.value,
        device=settings.device,
        dummy_root=settings.data_dir / "dummy-weights",
        hf_cache_dir=settings.hf_cache_dir,
        allow_download=settings.allow_download,
        dtype=settings.dtype,
        text_encoder_device=settings.text_encoder_device,
        cpu_offload=settings.cpu_offload,
        vae_tiling=settings.vae_tiling,
        memory_budget_bytes=int(budget * 2**30) if budget else None,
    )


def build_dubber(settings: Settings, engine: EngineConfig) -> AudioGenerator:
    from wanserve.engine.dubbing import DubbingConfig, StableAudioGenerator

    config = DubbingConfig(
        checkpoint=settings.dubbing_checkpoint, steps=settings.effective_dubbing_steps
    )
    return StableAudioGenerator(engine, config)


def create_app(
    settings: Settings,
    *,
    components: Components | None = None,
    start_workers: bool = True,
) -> FastAPI:
    parts = components or build_components(settings)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        parts.janitor.start()
        if start_workers:
            parts.dispatcher.start()
        log.info(
            "wanserve %s ready: %d model(s), weights=%s, data in %s",
            __version__,
            len(parts.services.tasks.catalog),
            settings.weights.value,
            settings.data_dir,
        )
        try:
            yield
        finally:
            parts.dispatcher.stop(timeout=30)
            parts.janitor.stop()

    app = FastAPI(
        title="wanserve",
        version=__version__,
        description="DashScope-compatible Wan video synthesis on open weights.",
        lifespan=lifespan,
        docs_url=None,  # served without a CDN by wanserve.api.docs
        redoc_url=None,
    )
    app.state.services = parts.services
    app.state.components = parts
    api_errors.install(app)
    app.include_router(api)
    app.include_router(uploads_router)
    app.include_router(files)
    api_docs.install(app)
    api_openapi.install(app)
    app.middleware("http")(_request_context)
    return app


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
