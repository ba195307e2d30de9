"""Operations: Prometheus metrics, and the readiness a balancer or orchestrator asks for.

`Metrics` owns one `CollectorRegistry` per process (never prometheus-client's global one: a
test process builds many apps, and a global registry would refuse their second set of
metrics). Each layer feeds it through a small observer seam and never imports it: the engine's
`ModelManager` reports loads and evictions (`engine.manager.ManagerObserver`), the job body
reports runs and denoising steps (`workers.execute.RunObserver`), the deliverer reports
webhook attempts (`tasks.webhooks.DeliveryObserver`), and the API middleware reports requests
by route template (never the raw path, which holds task ids: one series per task would be
unbounded). Fleet-wide numbers (tasks by model and status, queue depth, oldest pending task)
are read from the store when scraped (`TaskStore.counts`, one grouped query), cached for
`STORE_CACHE_SECONDS`.

`Readiness` runs named probes (the store answers `SELECT 1`, the storage answers its cheap
`check()`, the process's generation is up) and lists what is not ready. A `wanserve worker`
has no web server, so `MetricsServer` serves `/metrics`, `/health` and `/ready` for it with
prometheus-client's own WSGI server.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, make_server

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_wsgi_app,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.registry import Collector
from sqlalchemy import Engine, text

from wanserve.clock import Clock, utcnow
from wanserve.errors import NotReady
from wanserve.storage.base import Storage, StorageError
from wanserve.tasks.store import TaskCounter

log = logging.getLogger(__name__)

CONTENT_TYPE = CONTENT_TYPE_LATEST
STORE_CACHE_SECONDS = 1.5  # scrapes from several Prometheus servers share one query
# Generation runs from seconds (tiny models, a fast GPU) to hours (long 1080P videos).
TASK_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
STEP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80)
UNMATCHED_ROUTE = "unmatched"  # 404s: one series, whatever the path


class Metrics:
    """Every metric of one process, and the observer methods the layers call."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.http_requests = Counter(
            "wanserve_http_requests",
            "HTTP requests answered, by route template and status code",
            ["method", "route", "status"],
            registry=r,
        )
        self.http_seconds = Histogram(
            "wanserve_http_request_duration_seconds",
            "Time to answer an HTTP request, by route template",
            ["method", "route"],
            registry=r,
        )
        self.task_seconds = Histogram(
            "wanserve_task_duration_seconds",
            "Wall time of one run of a task by a worker, by model and the status it left",
            ["model", "status"],
            buckets=TASK_BUCKETS,
            registry=r,
        )
        self.step_seconds = Histogram(
            "wanserve_step_duration_seconds",
            "Time between consecutive denoising steps, by model",
            ["model"],
            buckets=STEP_BUCKETS,
            registry=r,
        )
        self.model_loads = Counter(
            "wanserve_model_loads",
            "Checkpoints loaded into memory, by checkpoint",
            ["checkpoint"],
            registry=r,
        )
        self.model_load_seconds = Histogram(
            "wanserve_model_load_duration_seconds",
            "Time to load a checkpoint",
            buckets=(1, 5, 15, 30, 60, 120, 300, 600),
            registry=r,
        )
        self.model_evictions = Counter(
            "wanserve_model_evictions",
            "Checkpoints unloaded to stay within the memory budget, by checkpoint",
            ["checkpoint"],
            registry=r,
        )
        self.engine_resident = Gauge(
            "wanserve_engine_resident_bytes",
            "Memory held by the checkpoints this process keeps loaded",
            registry=r,
        )
        self.webhooks = Counter(
            "wanserve_webhook_deliveries",
            "Webhook attempts by outcome: delivered (2xx), failed (will retry), abandoned "
            "(the last attempt failed)",
            ["outcome"],
            registry=r,
        )
        for outcome in ("delivered", "failed", "abandoned"):
            self.webhooks.labels(outcome=outcome)  # present at 0 before the first attempt

    # -- observers ------------------------------------------------------------------------

    def request_served(self, *, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method=method, route=route, status=str(status)).inc()
        self.http_seconds.labels(method=method, route=route).observe(seconds)

    def model_loaded(self, checkpoint: str, *, nbytes: int, seconds: float) -> None:
        self.model_loads.labels(checkpoint=checkpoint).inc()
        self.model_load_seconds.observe(seconds)

    def model_evicted(self, checkpoint: str) -> None:
        self.model_evictions.labels(checkpoint=checkpoint).inc()

    def step_finished(self, *, model: str, seconds: float) -> None:
        self.step_seconds.labels(model=model).observe(seconds)

    def run_ended(self, *, model: str, status: str, seconds: float) -> None:
        self.task_seconds.labels(model=model, status=status).observe(seconds)

    def webhook_attempted(self, outcome: str) -> None:
        self.webhooks.labels(outcome=str(outcome)).inc()

    # -- sources read at scrape time --------------------------------------------------------

    def watch_engine(self, resident_bytes: Callable[[], int]) -> None:
        """Report the engine's resident memory (the model manager's own count)."""
        self.engine_resident.set_function(lambda: float(resident_bytes()))

    def watch_store(
        self, store: TaskCounter, *, models: Collection[str], clock: Clock = utcnow
    ) -> StoreCollector:
        collector = StoreCollector(store, models=models, clock=clock)
        self.registry.register(collector)
        return collector

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


@dataclass(frozen=True)
class StoreSnapshot:
    tasks: dict[tuple[str, str], int]  # (model, status) -> count
    oldest_pending: dict[str, datetime]  # model -> submit time of its oldest PENDING task
    outbox_pending: int
    taken_at: datetime


class StoreCollector(Collector):
    """Task and outbox gauges read from the store at scrape time, cached briefly."""

    def __init__(self, store: TaskCounter, *, models: Collection[str], clock: Clock) -> None:
        self._store = store
        self._models = sorted(models)
        self._now = clock
        self._lock = threading.Lock()
        self._cached: StoreSnapshot | None = None
        self._cached_at = 0.0

    def snapshot(self) -> StoreSnapshot:
        with self._lock:
            if self._cached is None or time.monotonic() - self._cached_at > STORE_CACHE_SECONDS:
                self._cached = self._read()
                self._cached_at = time.monotonic()
            return self._cached

    def _read(self) -> StoreSnapshot:
        counts = self._store.counts()
        tasks = {(model, status.value): n for (model, status), n in counts.tasks.items()}
        return StoreSnapshot(tasks, counts.oldest_pending, counts.outbox_pending, self._now())

    def describe(self) -> Iterable[Metric]:
        return []  # families depend on the data; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "wanserve_store_up", "Whether the last read of the task store for metrics worked"
        )
        try:
            snap = self.snapshot()
        except Exception as exc:  # a scrape must still answer, and say the store is down
            log.warning("metrics: reading the task store failed: %s", exc)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        tasks = GaugeMetricFamily(
            "wanserve_tasks",
            "Tasks kept in the store (until they expire), by model and status",
            labels=["model", "status"],
        )
        for (model, status), count in sorted(snap.tasks.items()):
            tasks.add_metric([model, status], count)
        yield tasks
        depth = GaugeMetricFamily(
            "wanserve_queue_depth", "PENDING tasks waiting for a worker, by model", labels=["model"]
        )
        age = GaugeMetricFamily(
            "wanserve_queue_oldest_pending_seconds",
            "Seconds since the oldest PENDING task of a model was submitted (0: none)",
            labels=["model"],
        )
        for model in sorted({*self._models, *(m for m, _ in snap.tasks)}):
            depth.add_metric([model], snap.tasks.get((model, "PENDING"), 0))
            first = snap.oldest_pending.get(model)
            waited = (snap.taken_at - first).total_seconds() if first is not None else 0.0
            age.add_metric([model], max(0.0, waited))
        yield depth
        yield age
        yield GaugeMetricFamily(
            "wanserve_webhook_outbox_pending",
            "Webhook messages not yet delivered or abandoned",
            value=snap.outbox_pending,
        )


# -- readiness -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One readiness condition: `check` returns None when it holds, else a short reason
    safe to show anyone (no host names, paths or credentials; details go to the log)."""

    name: str
    check: Callable[[], str | None]


class Readiness:
    def __init__(self, probes: Sequence[Probe]) -> None:
        self._probes = tuple(probes)

    def problems(self) -> list[str]:
        """`name: reason` for every probe that fails; empty when ready."""
        found: list[str] = []
        for probe in self._probes:
            try:
                reason = probe.check()
            except Exception as exc:  # a probe that breaks is a probe that failed
                log.warning("readiness probe %s failed: %s", probe.name, exc)
                reason = "check failed"
            if reason is not None:
                found.append(f"{probe.name}: {reason}")
        return found


def database_probe(db: Engine) -> Probe:
    def check() -> str | None:
        try:
            with db.connect() as conn:
                conn.execute(text("SELECT 1"))
        except Exception as exc:
            log.warning("readiness: the task store did not answer: %s", exc)
            return "the task store does not answer"
        return None

    return Probe("database", check)


def storage_probe(storage: Storage) -> Probe:
    def check() -> str | None:
        try:
            storage.check()
        except StorageError as exc:
            log.warning("readiness: storage: %s", exc.detail)
            return "file storage cannot be reached or written"
        return None

    return Probe("storage", check)


def not_ready_message(problems: Sequence[str]) -> str:
    return "Not ready: " + "; ".join(problems) + "."


# -- the worker's own HTTP endpoint ----------------------------------------------------------


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would drown the worker's log."""


class MetricsServer:
    """`/metrics`, `/health` and `/ready` on their own port (prometheus-client's threading
    WSGI server), for processes that serve no other HTTP."""

    def __init__(self, metrics: Metrics, readiness: Readiness, *, host: str, port: int) -> None:
        self._metrics = metrics
        self._readiness = readiness
        self._server = make_server(
            host, port, self._app, ThreadingWSGIServer, handler_class=_QuietHandler
        )
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="wanserve-metrics", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_port)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        path = environ.get("PATH_INFO", "")
        if path == "/metrics":
            exporter = make_wsgi_app(self._metrics.registry)
            return list(exporter(environ, start_response))
        if path == "/health":
            return _json(start_response, "200 OK", {"status": "ok"})
        if path == "/ready":
            problems = self._readiness.problems()
            if not problems:
                return _json(start_response, "200 OK", {"status": "ready"})
            return _json(start_response, "503 Service Unavailable", _error_body(problems))
        return _json(
            start_response,
            "404 Not Found",
            {
                "request_id": str(uuid.uuid4()),
                "code": "NotFound",
                "message": f"No such endpoint: {path[:200]}; try /metrics, /health or /ready.",
            },
        )


def _error_body(problems: Sequence[str]) -> dict[str, str]:
    # The same shape the API answers its errors in (`api/errors.py`).
    return {
        "request_id": str(uuid.uuid4()),
        "code": NotReady.code,
        "message": not_ready_message(problems),
    }


def _json(start_response: Callable[..., Any], status: str, body: object) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(
        status, [("Content-Type", "application/json"), ("Content-Length", str(len(data)))]
    )
    return [data]
