"""What every process builds the same way: the task store, storage, signer, keys, uploads,
the catalogue, the guarded fetcher, the process's metrics, the producer of task ids, and the
start-up checks that a process model's settings are coherent."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from wanserve.catalog import Catalog
from wanserve.clock import Clock, utcnow
from wanserve.config import Settings
from wanserve.db.engine import make_engine, upgrade
from wanserve.engine.adapters import AdapterDirectory
from wanserve.keys import KeyStore
from wanserve.media.fetch import FetchPolicy, SafeFetcher
from wanserve.observability import Metrics
from wanserve.spec import Features
from wanserve.storage import build_storage, free_space_floor
from wanserve.storage.base import FreeSpaceFloor, Storage
from wanserve.storage.signing import UrlSigner
from wanserve.tasks.dispatch import Dispatcher, Recorded, TablePoll
from wanserve.tasks.store import SqlTaskStore, TaskStore
from wanserve.uploads import UploadService

log = logging.getLogger(__name__)


class ProcessKind(StrEnum):
    EMBEDDED = "embedded"  # `wanserve serve` with in-process workers
    API = "api"  # `wanserve serve --workers 0` / `--role api`
    WORKER = "worker"  # `wanserve worker`


class StartupError(ValueError):
    """Settings this process model cannot run with; the message is one actionable line."""


@dataclass(frozen=True)
class Shared:
    settings: Settings
    db: Engine
    store: TaskStore
    signer: UrlSigner
    storage: Storage
    free_space: FreeSpaceFloor | None
    uploads: UploadService
    keys: KeyStore
    catalog: Catalog
    clock: Clock
    # Every client-supplied URL goes through it: input media (workers), callbacks (API).
    fetcher: SafeFetcher
    metrics: Metrics


def check_process_model(settings: Settings, *, kind: ProcessKind) -> None:
    """Refuse, at start-up, settings that would fail later across processes.

    A store shared by several processes needs one signing secret for all of them (a key
    generated in one data_dir is unknown to another host). A broker means workers may run on
    other hosts, which a SQLite file cannot be shared with. Without a broker, API and workers
    share the table, which SQLite (WAL) supports on one host."""
    broker = settings.broker is not None
    if kind is ProcessKind.EMBEDDED and broker:
        raise StartupError(
            "broker_url is set, so generation runs in `wanserve worker` processes: start the "
            "server with --workers 0 (or --role api), or unset WANSERVE_BROKER_URL"
        )
    if kind is ProcessKind.EMBEDDED:
        return
    if settings.secret_key is None:
        raise StartupError(
            f"a {kind.value} process shares its task store with other processes: set "
            "WANSERVE_SECRET_KEY to the same secret in every process"
        )
    sqlite = make_url(settings.effective_database_url).get_backend_name() == "sqlite"
    if broker and sqlite:
        raise StartupError(
            "broker_url is set, so workers may run on other hosts, but the task store is a "
            "SQLite file they cannot share: set WANSERVE_DATABASE_URL to a PostgreSQL URL"
        )
    if sqlite:
        log.warning(
            "task store is SQLite (%s): every API and worker process must run on this host",
            settings.effective_database_url,
        )


def dispatcher_for(shared: Shared) -> Dispatcher:
    """The producer of a process that does not run its own consumer: Celery when a broker is
    set (each send recorded on the row), else the table itself."""
    if shared.settings.broker is not None:
        from wanserve.tasks.celery import CeleryDispatcher

        return Recorded(CeleryDispatcher(shared.settings), log=shared.store)
    return TablePoll()


def features_of(settings: Settings) -> Features:
    """What this deployment can do, from settings alone (an API process builds no engine)."""
    return Features(
        audio_generation=settings.dubbing,
        multi_shot=settings.prompt_extender != "none",
        adapters=adapter_directory(settings),
        annotators=annotators_of(settings),
    )


def annotators_of(settings: Settings) -> frozenset[str]:
    """The control signals this deployment's workers can draw."""
    return frozenset({"depth"} if settings.depth_annotator else ())


def fetch_policy(settings: Settings) -> FetchPolicy:
    return FetchPolicy(
        allow_private=settings.fetch_allow_private,
        allowed_hosts=frozenset(h.lower() for h in settings.fetch_allowed_hosts),
        connect_timeout=settings.fetch_connect_timeout,
        read_timeout=settings.fetch_read_timeout,
        total_timeout=settings.fetch_total_timeout,
        max_redirects=settings.fetch_max_redirects,
    )


def adapter_directory(settings: Settings) -> AdapterDirectory | None:
    """The adapters requests may name, read from disk (an API process loads no engine)."""
    root = settings.effective_lora_dir
    return AdapterDirectory(root) if root is not None else None


def build_shared(settings: Settings, *, clock: Clock = utcnow) -> Shared:
    db = make_engine(settings.effective_database_url, pool_size=settings.database_pool_size)
    upgrade(db)
    signer = UrlSigner(settings.load_secret_key())
    (settings.data_dir / "tmp").mkdir(parents=True, exist_ok=True)
    storage = build_storage(settings, signer, clock=clock)
    free_space = free_space_floor(settings, storage)
    uploads = UploadService(
        engine=db,
        storage=storage,
        signer=signer,
        max_bytes=settings.max_upload_bytes,
        quota_bytes=settings.upload_quota_bytes,
        upload_ttl=timedelta(seconds=settings.upload_ttl_seconds),
        free_space=free_space,
        clock=clock,
    )
    return Shared(
        settings=settings,
        db=db,
        store=SqlTaskStore(db, ttl=timedelta(seconds=settings.task_ttl_seconds), clock=clock),
        signer=signer,
        storage=storage,
        free_space=free_space,
        uploads=uploads,
        keys=KeyStore(db, clock=clock, cache_seconds=settings.api_key_cache_seconds),
        catalog=Catalog.build(settings.models, steps=settings.effective_steps),
        clock=clock,
        fetcher=SafeFetcher(fetch_policy(settings)),
        metrics=Metrics(),
    )
