"""The worker composition root: runner, job body and consumer of a generating process.

`build_execution` is shared by the embedded server's threads and by `wanserve worker`;
`run_worker` is the whole `wanserve worker` process: load the served models, consume task ids
(from the broker, or straight from the table), and stop gracefully on SIGTERM. Everything that
loads torch is reached from here, never from the API root.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from collections.abc import Collection
from dataclasses import dataclass

from wanserve.catalog import Catalog, checkpoint_speeds
from wanserve.compose.shared import (
    ProcessKind,
    Shared,
    build_shared,
    check_process_model,
    dispatcher_for,
)
from wanserve.config import Settings, WeightsMode
from wanserve.engine.prompt import (
    ChatBackend,
    ChatPromptExtender,
    LocalChat,
    OpenAIChat,
    PromptExtender,
)
from wanserve.engine.request import AudioDrivenVideo, AudioGenerator, EngineConfig, Runner
from wanserve.engine.runner import PipelineRunner, build_runner
from wanserve.media.audio import AudioLimits
from wanserve.media.clips import VideoLimits
from wanserve.media.image import ImageLimits
from wanserve.media.video import EncodeSettings
from wanserve.observability import (
    MetricsServer,
    Probe,
    Readiness,
    database_probe,
    storage_probe,
)
from wanserve.tasks.dispatch import Dispatcher
from wanserve.workers.execute import Execution, InputResolver
from wanserve.workers.inputs import Annotate, MediaResolver
from wanserve.workers.job import Job
from wanserve.workers.loop import WorkerLoop
from wanserve.workers.shutdown import Shutdown

log = logging.getLogger(__name__)


def build_execution(
    shared: Shared,
    *,
    runner: Runner | None = None,
    inputs: InputResolver | None = None,
    audio_driven: AudioDrivenVideo | None = None,
) -> Execution:
    settings = shared.settings
    (settings.data_dir / "tmp").mkdir(parents=True, exist_ok=True)
    engine_config = build_engine_config(settings, shared.catalog)
    if runner is None:
        if settings.weights is WeightsMode.DUMMY and settings.lora_dir is None:
            from wanserve.engine import dummy

            assert engine_config.lora_dir is not None
            dummy.ensure_adapters(engine_config.lora_dir)  # before a request can name them
        runner = build_runner(engine_config, observer=shared.metrics)
    if isinstance(runner, PipelineRunner):
        shared.metrics.watch_engine(runner.manager.resident_bytes)
    return Execution(
        store=shared.store,
        runner=runner,
        storage=shared.storage,
        inputs=inputs
        or MediaResolver(
            fetcher=shared.fetcher,
            uploads=shared.uploads,
            image_limits=ImageLimits(
                max_bytes=settings.max_image_bytes, max_pixels=settings.max_image_pixels
            ),
            audio_limits=AudioLimits(max_bytes=settings.max_audio_bytes),
            video_limits=VideoLimits(
                max_bytes=settings.max_video_bytes, max_seconds=settings.max_video_seconds
            ),
            annotators=build_annotators(settings, engine_config),
        ),
        scratch_dir=settings.data_dir / "tmp",
        free_space=shared.free_space,
        heartbeat_seconds=settings.heartbeat_seconds,
        heartbeat_timeout_seconds=settings.heartbeat_timeout_seconds,
        timeout_seconds=settings.task_timeout_seconds,
        encode=EncodeSettings(crf=settings.x264_crf, preset=settings.x264_preset),
        extender=build_extender(settings),
        chain_shots=settings.multi_shot_continuity,
        dubber=build_dubber(settings, engine_config) if settings.dubbing else None,
        audio_driven=audio_driven,
        observer=shared.metrics,
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


def build_engine_config(settings: Settings, catalog: Catalog) -> EngineConfig:
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
        speed=checkpoint_speeds(catalog),
        lora_dir=settings.effective_lora_dir,
        lora_cache_size=settings.lora_cache_size,
    )


def build_annotators(settings: Settings, engine: EngineConfig) -> dict[str, Annotate]:
    """The control signals this worker draws with a model (loaded on first use)."""
    if not settings.depth_annotator:
        return {}
    from wanserve.engine.annotators import DepthAnnotator

    return {"depth": DepthAnnotator(engine, settings.depth_annotator)}


def build_dubber(settings: Settings, engine: EngineConfig) -> AudioGenerator:
    from wanserve.engine.dubbing import DubbingConfig, StableAudioGenerator

    config = DubbingConfig(
        checkpoint=settings.dubbing_checkpoint, steps=settings.effective_dubbing_steps
    )
    return StableAudioGenerator(engine, config)


def served_models(settings: Settings, catalog: Catalog) -> list[str]:
    """The models this worker takes tasks for; unknown names are a start-up error."""
    if not settings.worker_models:
        return sorted(catalog.names())
    known = set(catalog.names())
    unknown = [m for m in settings.worker_models if m not in known]
    if unknown:
        raise ValueError(
            f"unknown model(s) {', '.join(unknown)}; `wanserve models` lists the catalogue"
        )
    return list(dict.fromkeys(settings.worker_models))


def preload(runner: Runner, catalog: Catalog, models: Collection[str]) -> None:
    """Make the served checkpoints resident before the first task (in this process: with the
    solo pool nothing forks after this, so CUDA state is never inherited by a child)."""
    if not isinstance(runner, PipelineRunner):
        return  # a fake at the engine seam has nothing to load
    for name in models:
        card = catalog.get(name)
        log.info("loading %s (%s)", name, card.checkpoint.source)
        with runner.manager.lease(card.checkpoint.source, card.checkpoint.family, card.kind):
            pass


def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True)
class WorkerProcess:
    """What `wanserve worker` built, before it starts consuming."""

    shared: Shared
    job: Job
    models: list[str]
    stopping: threading.Event
    dispatcher: Dispatcher
    metrics_server: MetricsServer | None = None


def serve_worker_metrics(shared: Shared, *, loaded: threading.Event) -> MetricsServer | None:
    """`/metrics`, `/health` and `/ready` on `metrics_port`, if set. Ready means: the store
    answers, storage is reachable, and the served models are loaded (`loaded` is set)."""
    settings = shared.settings
    if settings.metrics_port is None:
        return None
    models = Probe("models", lambda: None if loaded.is_set() else "still loading")
    readiness = Readiness([database_probe(shared.db), storage_probe(shared.storage), models])
    server = MetricsServer(
        shared.metrics, readiness, host=settings.host, port=settings.metrics_port
    )
    server.start()
    log.info("metrics on http://%s:%d/metrics", settings.host, server.port)
    return server


def build_worker_process(settings: Settings, *, runner: Runner | None = None) -> WorkerProcess:
    check_process_model(settings, kind=ProcessKind.WORKER)
    shared = build_shared(settings)
    models = served_models(settings, shared.catalog)
    execution = build_execution(shared, runner=runner)
    loaded = threading.Event()
    # Up before the models load, so an orchestrator sees "alive, not ready" meanwhile.
    metrics_server = serve_worker_metrics(shared, loaded=loaded)
    preload(execution.runner, shared.catalog, models)
    loaded.set()
    # Hand-backs are sent again the way the API sends new tasks.
    dispatcher = dispatcher_for(shared)
    stopping = threading.Event()
    job = Job(execution=execution, dispatcher=dispatcher, stopping=stopping.is_set)
    return WorkerProcess(
        shared=shared,
        job=job,
        models=models,
        stopping=stopping,
        dispatcher=dispatcher,
        metrics_server=metrics_server,
    )


def run_worker(settings: Settings, *, runner: Runner | None = None) -> int:
    """The `wanserve worker` process; returns its exit status."""
    proc = build_worker_process(settings, runner=runner)
    try:
        return _consume(settings, proc)
    finally:
        if proc.metrics_server is not None:
            proc.metrics_server.stop()


def _consume(settings: Settings, proc: WorkerProcess) -> int:
    name = worker_name()
    shutdown = Shutdown(stopping=proc.stopping, hand_back=proc.job.hand_back)
    if settings.broker is not None:
        from wanserve.workers.celery import consume

        log.info("worker %s: serving %s from the broker", name, ", ".join(proc.models))
        return consume(
            settings, job=proc.job, models=proc.models, worker_id=name, shutdown=shutdown
        )
    loop = WorkerLoop(
        store=proc.shared.store,
        run=proc.job.run,
        stopping=proc.stopping,
        worker_prefix=f"worker:{name}",
        models=proc.models,
    )
    shutdown.install()
    log.info("worker %s: serving %s from the task table", name, ", ".join(proc.models))
    loop.start()
    while not proc.stopping.wait(1.0):  # a bare wait() would not wake for signal handlers
        pass
    if loop.stop(timeout=settings.shutdown_grace_seconds):
        return 0
    log.warning("handed back without waiting: %s", ", ".join(shutdown.hand_back()) or "none")
    return 1
