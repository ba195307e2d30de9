"""Start-up checks of the process model, the janitor's one-at-a-time lock on PostgreSQL, and
the embedded loop honouring the models it serves."""

from __future__ import annotations

import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import Engine

from tests.conftest import ShiftedClock, make_settings
from tests.waiting import scaled, wait_event, wait_until
from wanserve.catalog import Catalog
from wanserve.cli import main
from wanserve.compose.shared import ProcessKind, StartupError, check_process_model
from wanserve.db.engine import make_engine, upgrade
from wanserve.db.lock import exclusive
from wanserve.keys import KeyStore
from wanserve.spec import GenerationSpec, SynthesisRequest, build_spec
from wanserve.storage.local import LocalStorage
from wanserve.storage.signing import UrlSigner
from wanserve.tasks.janitor import Janitor
from wanserve.tasks.models import Claim, TaskStatus
from wanserve.tasks.store import SqlTaskStore
from wanserve.workers.loop import WorkerLoop

PG = "postgresql+psycopg://u@db/x"


def spec(model: str) -> GenerationSpec:
    return build_spec(SynthesisRequest(model=model, prompt="a cat"), Catalog.build().get(model))


@pytest.mark.parametrize(
    ("kind", "overrides", "message"),
    [
        (ProcessKind.EMBEDDED, {"broker_url": "redis://h:6379/0"}, "--workers 0"),
        (ProcessKind.API, {"secret_key": None}, "WANSERVE_SECRET_KEY"),
        (ProcessKind.WORKER, {"secret_key": None}, "WANSERVE_SECRET_KEY"),
        (ProcessKind.API, {"broker_url": "redis://h:6379/0"}, "PostgreSQL"),
        (ProcessKind.WORKER, {"broker_url": "amqp://g:g@h//"}, "PostgreSQL"),
    ],
)
def test_incoherent_process_models_are_refused(
    tmp_path: Path, kind: ProcessKind, overrides: dict[str, object], message: str
) -> None:
    settings = make_settings(tmp_path, **overrides)
    with pytest.raises(StartupError, match=message) as info:
        check_process_model(settings, kind=kind)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("kind", "overrides"),
    [
        (ProcessKind.EMBEDDED, {"secret_key": None}),  # one process: a generated key is fine
        (ProcessKind.API, {}),  # SQLite shared with workers on this host
        (ProcessKind.WORKER, {"broker_url": "redis://h:6379/0", "database_url": PG}),
    ],
)
def test_coherent_process_models_pass(
    tmp_path: Path, kind: ProcessKind, overrides: dict[str, object]
) -> None:
    check_process_model(make_settings(tmp_path, **overrides), kind=kind)


def test_worker_command_refuses_sqlite_with_a_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WANSERVE_SECRET_KEY", "k" * 32)
    code = main(["worker", "--data-dir", str(tmp_path), "--broker-url", "redis://127.0.0.1:1/0"])
    err = capsys.readouterr().err
    assert code == 2 and "PostgreSQL" in err and err.count("\n") == 1


@dataclass
class Recorder:
    """A `Dispatcher` that records what it was asked to send."""

    sent: list[tuple[str, str]] = field(default_factory=list)

    def submit(self, task_id: str, *, model: str) -> None:
        self.sent.append((task_id, model))


@pytest.fixture
def pg_store(
    postgres_url: str, tmp_path: Path
) -> Iterator[tuple[SqlTaskStore, Engine, str, ShiftedClock]]:
    db = make_engine(postgres_url)
    upgrade(db)
    key, _ = KeyStore(db).create("k")
    clock = ShiftedClock()
    yield SqlTaskStore(db, ttl=timedelta(hours=1), clock=clock), db, key.id, clock
    db.dispose()


@pytest.mark.postgres
def test_one_janitor_sweeps_at_a_time(
    pg_store: tuple[SqlTaskStore, Engine, str, ShiftedClock], tmp_path: Path
) -> None:
    store, db, key_id, clock = pg_store
    task = store.create(
        task_id="t1", api_key_id=key_id, request_id="r", spec=spec("wan2.1-t2v-turbo")
    )
    assert store.claim(task.id, worker_id="dead") is not None
    clock.offset += timedelta(seconds=1)  # its heartbeat is now older than stale_after

    def janitor(dispatcher: Recorder) -> Janitor:
        return Janitor(
            store=store,
            storage=LocalStorage(tmp_path / "files", signer=UrlSigner(b"k" * 32)),
            interval_seconds=60,
            stale_after=timedelta(seconds=0.1),
            max_attempts=3,
            dispatcher=dispatcher,
            exclusive=lambda: exclusive(db, "janitor"),
        )

    first, second = Recorder(), Recorder()
    # Another replica is mid-sweep (holds the lock on its own connection): this one skips.
    with exclusive(db, "janitor") as held:
        assert held
        assert janitor(second).run_once() is False
        got = store.get(task.id)
        assert got is not None and got.status is TaskStatus.RUNNING and second.sent == []
    # Free again: the sweep requeues the dead worker's task and sends its id again.
    assert janitor(first).run_once() is True
    got = store.get(task.id)
    assert got is not None and got.status is TaskStatus.PENDING
    assert first.sent == [(task.id, "wan2.1-t2v-turbo")]


class PollCounter(SqlTaskStore):
    """A store that counts the polls (`claim_next`) that found nothing to claim."""

    empty_polls = 0

    def claim_next(self, *, worker_id: str, models: Collection[str] | None = None) -> Claim | None:
        claim = super().claim_next(worker_id=worker_id, models=models)
        if claim is None:
            self.empty_polls += 1
        return claim


def test_worker_loop_claims_only_the_models_it_serves(tmp_path: Path) -> None:
    db = make_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    upgrade(db)
    key, _ = KeyStore(db).create("k")
    store = PollCounter(db, ttl=timedelta(hours=1))
    other = store.create(
        task_id="b", api_key_id=key.id, request_id="r", spec=spec("wan2.2-t2v-plus")
    )
    mine = store.create(
        task_id="a", api_key_id=key.id, request_id="r", spec=spec("wan2.1-t2v-turbo")
    )
    ran: list[Claim] = []
    done = threading.Event()

    def run(claim: Claim) -> None:
        ran.append(claim)
        done.set()

    stopping = threading.Event()
    loop = WorkerLoop(
        store=store,
        run=run,
        stopping=stopping,
        worker_prefix="t",
        models=["wan2.1-t2v-turbo"],
        poll_seconds=0.05,
    )
    loop.submit(other.id, model=other.model)  # not this loop's model: ignored
    loop.start()
    try:
        wait_event(done, what="a run of the task of the loop's model")
        # Past the point where it would have claimed the other task: several more polls
        # after the run (each would have claimed it) came back empty.
        wait_until(lambda: store.empty_polls, lambda n: n >= 3, what="three more polls")
    finally:
        loop.stop(timeout=scaled(60))
    assert [c.task.id for c in ran] == [mine.id]
    got = store.get(other.id)
    assert got is not None and got.status is TaskStatus.PENDING
    db.dispose()
