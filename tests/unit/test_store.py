"""The task state machine and the store that enforces it, on a real SQLite database."""

from __future__ import annotations

import dataclasses
import itertools
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule
from sqlalchemy import Engine

from tests.waiting import scaled
from wanserve.catalog import Catalog
from wanserve.db.engine import make_engine, upgrade
from wanserve.keys import KeyStore
from wanserve.spec import SynthesisRequest, build_spec
from wanserve.tasks.lifecycle import IllegalTransition, can_transition, check_transition, sources_of
from wanserve.tasks.models import (
    Claim,
    CursorQuery,
    Progress,
    PromptExtension,
    TaskError,
    TaskQuery,
    TaskResult,
    TaskStage,
    TaskStatus,
)
from wanserve.tasks.store import Quota, QuotaExceeded, SqlTaskStore, TaskCounts
from wanserve.tasks.usage import UsageLine, UsageQuery, UsageReader

P, R, S, F, C = (
    TaskStatus.PENDING,
    TaskStatus.RUNNING,
    TaskStatus.SUCCEEDED,
    TaskStatus.FAILED,
    TaskStatus.CANCELED,
)
SPEC = build_spec(
    SynthesisRequest(model="wan2.1-t2v-turbo", prompt="a cat", seed=1),
    Catalog.build().get("wan2.1-t2v-turbo"),
)
RESULT = TaskResult(
    video_key="videos/x.mp4", width=1280, height=720, has_audio=False, actual_prompt="a cat"
)


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


_ENGINES: list[Engine] = []


@pytest.fixture(autouse=True)
def _dispose_engines() -> Iterator[None]:
    yield
    while _ENGINES:  # close pooled connections before the test database is dropped
        _ENGINES.pop().dispose()


def make_store(where: Path | str, clock: Clock, ttl: float = 3600) -> tuple[SqlTaskStore, str]:
    engine = make_engine(where if isinstance(where, str) else f"sqlite:///{where}")
    _ENGINES.append(engine)
    upgrade(engine)
    key, _ = KeyStore(engine).create("k")
    return SqlTaskStore(engine, ttl=timedelta(seconds=ttl), clock=clock), key.id


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Each store test runs on the embedded SQLite file and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 't.db'}"
    url: str = request.getfixturevalue("postgres_url")
    return url


@pytest.fixture
def store(db_url: str, clock: Clock) -> tuple[SqlTaskStore, str]:
    return make_store(db_url, clock)


def new_task(store: SqlTaskStore, key: str, task_id: str = "t1") -> str:
    store.create(task_id=task_id, api_key_id=key, request_id="r", spec=SPEC)
    return task_id


# -- lifecycle table --


def test_terminal_statuses() -> None:
    assert {s for s in TaskStatus if s.is_terminal} == {S, F, C}


@pytest.mark.parametrize("current", list(TaskStatus))
@pytest.mark.parametrize("target", list(TaskStatus))
def test_transition_table(current: TaskStatus, target: TaskStatus) -> None:
    legal = {(P, R), (P, C), (P, F), (R, S), (R, F), (R, C), (R, P)}
    assert can_transition(current, target) is ((current, target) in legal)
    if (current, target) not in legal:
        with pytest.raises(IllegalTransition):
            check_transition(current, target)
    assert (current in sources_of(target)) is ((current, target) in legal)


# -- store operations --


def test_create_and_get(store: tuple[SqlTaskStore, str], clock: Clock) -> None:
    s, key = store
    task = s.create(task_id="a", api_key_id=key, request_id="req", spec=SPEC)
    assert task.status is P and task.submit_time == clock.now
    assert task.expires_at == clock.now + timedelta(hours=1)
    got = s.get("a")
    assert got is not None and got.spec == SPEC and got.request_id == "req"
    assert s.get("missing") is None


def test_claim_is_exclusive(store: tuple[SqlTaskStore, str]) -> None:
    s, key = store
    new_task(s, key)
    first = s.claim("t1", worker_id="w1")
    assert first is not None and first.attempt == 1 and first.task.status is R
    assert s.claim("t1", worker_id="w2") is None


def test_concurrent_claims_one_winner(db_url: str, clock: Clock) -> None:
    s, key = make_store(db_url, clock)
    for i in range(6):
        new_task(s, key, f"t{i}")
    wins: list[Claim] = []
    lock = threading.Lock()

    def worker(n: int) -> None:
        while (claim := s.claim_next(worker_id=f"w{n}")) is not None:
            with lock:
                wins.append(claim)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(c.task.id for c in wins) == [f"t{i}" for i in range(6)]


def test_quota_refuses_at_the_limit(db_url: str, clock: Clock) -> None:
    s, key = make_store(db_url, clock)
    other, _ = KeyStore(_ENGINES[-1]).create("other")
    quota = Quota(per_key=2, total=3)
    for n in range(2):
        s.create(task_id=f"a{n}", api_key_id=key, request_id="r", spec=SPEC, quota=quota)
    with pytest.raises(QuotaExceeded) as caught:
        s.create(task_id="a2", api_key_id=key, request_id="r", spec=SPEC, quota=quota)
    assert (caught.value.scope, caught.value.limit) == ("key", 2)
    s.create(task_id="b0", api_key_id=other.id, request_id="r", spec=SPEC, quota=quota)
    with pytest.raises(QuotaExceeded) as caught:
        s.create(task_id="b1", api_key_id=other.id, request_id="r", spec=SPEC, quota=quota)
    assert caught.value.scope == "server"
    assert s.get("a2") is None and s.get("b1") is None
    assert s.cancel_pending("a0")  # finished tasks free their place
    s.create(task_id="a3", api_key_id=key, request_id="r", spec=SPEC, quota=quota)


def submit_concurrently(stores: list[SqlTaskStore], key: str, *, n: int, quota: Quota) -> int:
    """`n` threads submit at once, spread over `stores`, each through its own session and
    connection; returns how many were accepted."""
    accepted: list[str] = []
    refused: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(n)

    def submit(i: int) -> None:
        start.wait()
        store = stores[i % len(stores)]
        try:
            store.create(task_id=f"c{i}", api_key_id=key, request_id="r", spec=SPEC, quota=quota)
        except QuotaExceeded:
            with lock:
                refused.append(f"c{i}")
        else:
            with lock:
                accepted.append(f"c{i}")

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(accepted) + len(refused) == n
    return len(accepted)


def test_concurrent_submissions_never_exceed_the_quota(db_url: str, clock: Clock) -> None:
    s, key = make_store(db_url, clock)
    assert submit_concurrently([s], key, n=50, quota=Quota(per_key=10, total=1000)) == 10
    assert s.count_unfinished(key) == 10


def test_replicas_on_one_database_share_the_quotas(db_url: str, clock: Clock) -> None:
    """Two stores with two engines (two API replicas) on one database."""
    one, key = make_store(db_url, clock)
    engine = make_engine(db_url)
    _ENGINES.append(engine)
    two = SqlTaskStore(engine, ttl=timedelta(hours=1), clock=clock)
    assert submit_concurrently([one, two], key, n=40, quota=Quota(per_key=100, total=7)) == 7
    assert one.count_unfinished() == two.count_unfinished() == 7


def test_claim_next_is_fifo_and_skips_canceled(
    store: tuple[SqlTaskStore, str], clock: Clock
) -> None:
    s, key = store
    for name in ("a", "b", "c"):
        new_task(s, key, name)
        clock.advance(1)
    assert s.cancel_pending("a")
    claim = s.claim_next(worker_id="w")
    assert claim is not None and claim.task.id == "b"


def test_cancel_pending_only(store: tuple[SqlTaskStore, str]) -> None:
    s, key = store
    new_task(s, key)
    assert s.cancel_pending("t1")
    assert s.get("t1").status is C  # type: ignore[union-attr]
    assert not s.cancel_pending("t1")
    assert s.claim("t1", worker_id="w") is None  # a canceled task never runs


def test_finish_is_fenced_by_attempt(store: tuple[SqlTaskStore, str], clock: Clock) -> None:
    s, key = store
    new_task(s, key)
    stale = s.claim("t1", worker_id="w1")
    assert stale is not None
    clock.advance(120)
    report = s.reap(stale_after=timedelta(seconds=60), max_attempts=3)
    assert report.requeued == ["t1"]
    fresh = s.claim("t1", worker_id="w2")
    assert fresh is not None and fresh.attempt == 2
    # The first worker wakes up late: none of its writes land.
    assert not s.succeed(stale, RESULT)
    assert not s.heartbeat(stale).owned
    assert not s.release(stale)
    assert s.succeed(fresh, RESULT)
    task = s.get("t1")
    assert task is not None and task.status is S and task.result == RESULT


def test_reap_fails_after_max_attempts(store: tuple[SqlTaskStore, str], clock: Clock) -> None:
    s, key = store
    new_task(s, key)
    for _ in range(2):
        assert s.claim("t1", worker_id="w") is not None
        clock.advance(61)
        s.reap(stale_after=timedelta(seconds=60), max_attempts=2)
    task = s.get("t1")
    assert task is not None and task.status is F
    assert task.error is not None and task.error.code == "InternalError"
    assert "stopped responding 2 time(s)" in task.error.message


def test_heartbeat_keeps_a_claim_alive(store: tuple[SqlTaskStore, str], clock: Clock) -> None:
    s, key = store
    new_task(s, key)
    claim = s.claim("t1", worker_id="w")
    assert claim is not None
    for _ in range(5):
        clock.advance(30)
        assert s.heartbeat(claim).owned
        assert s.reap(stale_after=timedelta(seconds=60), max_attempts=2).requeued == []


def test_release_does_not_count_as_lost(store: tuple[SqlTaskStore, str], clock: Clock) -> None:
    s, key = store
    new_task(s, key)
    for _ in range(3):  # graceful hand-backs, e.g. restarts, never fail the task
        claim = s.claim("t1", worker_id="w")
        assert claim is not None and s.release(claim)
    task = s.get("t1")
    assert task is not None and task.status is P and task.scheduled_time is None


def test_a_cancel_is_never_lost_by_requeueing(
    store: tuple[SqlTaskStore, str], clock: Clock
) -> None:
    s, key = store
    for task_id in ("crashed", "shut-down"):
        new_task(s, key, task_id)
    crashed = s.claim("crashed", worker_id="w")
    shut_down = s.claim("shut-down", worker_id="w")
    assert crashed is not None and shut_down is not None
    assert s.request_cancel("crashed") and s.request_cancel("shut-down")
    # The worker dies: the reaper ends the task CANCELED instead of queueing it again.
    clock.advance(120)
    assert s.heartbeat(shut_down).owned  # this one's worker is alive
    report = s.reap(stale_after=timedelta(seconds=60), max_attempts=3)
    assert (report.canceled, report.requeued) == (["crashed"], [])
    # The worker shuts down: the hand-back ends it CANCELED too.
    assert s.release(shut_down) is TaskStatus.CANCELED
    for task_id in ("crashed", "shut-down"):
        task = s.get(task_id)
        assert task is not None and task.status is C and task.end_time is not None
    assert s.claim_next(worker_id="w2") is None


def test_progress_and_cancel_request(store: tuple[SqlTaskStore, str]) -> None:
    s, key = store
    new_task(s, key)
    claim = s.claim("t1", worker_id="w")
    assert claim is not None
    control = s.report_progress(
        claim, Progress(TaskStage.DENOISING, step=3, total_steps=50, percent=7)
    )
    assert control.owned and not control.cancel_requested
    assert s.get("t1").progress == Progress(TaskStage.DENOISING, 3, 50, 7)  # type: ignore[union-attr]
    assert s.request_cancel("t1")
    assert s.heartbeat(claim).cancel_requested
    assert s.cancel_running(claim)
    assert s.get("t1").status is C  # type: ignore[union-attr]
    assert not s.request_cancel("t1")


def test_fail_records_code_and_message(store: tuple[SqlTaskStore, str]) -> None:
    s, key = store
    new_task(s, key)
    claim = s.claim("t1", worker_id="w")
    assert claim is not None
    assert s.fail(claim, TaskError("InvalidParameter", "bad image"))
    task = s.get("t1")
    assert task is not None and task.error == TaskError("InvalidParameter", "bad image")
    assert task.end_time is not None


def test_success_extends_expiry_and_expired_tasks_are_listed(
    store: tuple[SqlTaskStore, str], clock: Clock
) -> None:
    s, key = store
    new_task(s, key)
    clock.advance(1800)
    claim = s.claim("t1", worker_id="w")
    assert claim is not None and s.succeed(claim, RESULT)
    task = s.get("t1")
    assert task is not None and task.expires_at == clock.now + timedelta(hours=1)
    clock.advance(3599)
    assert s.expired() == []
    clock.advance(2)
    assert s.expired() == [("t1", "videos/x.mp4")]
    assert s.delete(["t1"]) == 1 and s.get("t1") is None


def test_unfinished_tasks_do_not_expire(store: tuple[SqlTaskStore, str], clock: Clock) -> None:
    s, key = store
    new_task(s, key)
    clock.advance(10 * 3600)
    assert s.expired() == []


def test_query_filters_and_pages(
    store: tuple[SqlTaskStore, str], clock: Clock, db_url: str
) -> None:
    s, key = store
    other_engine = make_engine(db_url)
    _ENGINES.append(other_engine)
    engine_key, _ = KeyStore(other_engine).create("other")
    for i in range(7):
        new_task(s, key, f"t{i}")
        clock.advance(60)
    new_task(s, engine_key.id, "theirs")
    assert s.cancel_pending("t2")
    page = s.query(TaskQuery(api_key_id=key, page_no=1, page_size=3))
    assert page.total == 7 and [t.id for t in page.tasks] == ["t6", "t5", "t4"]
    page3 = s.query(TaskQuery(api_key_id=key, page_no=3, page_size=3))
    assert [t.id for t in page3.tasks] == ["t0"]
    canceled = s.query(TaskQuery(api_key_id=key, status=C))
    assert [t.id for t in canceled.tasks] == ["t2"]
    start = datetime(2026, 1, 1, 0, 2, tzinfo=UTC)
    window = s.query(TaskQuery(api_key_id=key, start=start, end=start + timedelta(minutes=2)))
    assert [t.id for t in window.tasks] == ["t4", "t3", "t2"]
    assert s.query(TaskQuery(api_key_id=key, model="wan2.6-t2v")).total == 0
    assert s.count_unfinished(key) == 6 and s.count_unfinished() == 7


def test_cursor_pages_are_keyset_ordered_and_stable(
    store: tuple[SqlTaskStore, str], clock: Clock
) -> None:
    s, key = store
    other, _ = KeyStore(_ENGINES[-1]).create("other")
    # Three tasks share a submission time: the id breaks the tie, so none is skipped or
    # repeated across pages.
    for task_id, step in [("a", 60), ("c", 0), ("b", 0), ("d", 60), ("e", 60)]:
        clock.advance(step)
        new_task(s, key, task_id)
    new_task(s, other.id, "theirs")

    def walk(newest_first: bool, limit: int) -> list[list[str]]:
        pages, after = [], None
        while True:
            page = s.page(CursorQuery(key, limit, after=after, newest_first=newest_first))
            pages.append([t.id for t in page.tasks])
            if not page.has_more:
                return pages
            after = page.tasks[-1].id

    assert walk(False, 2) == [["a", "b"], ["c", "d"], ["e"]]
    assert walk(True, 2) == [["e", "d"], ["c", "b"], ["a"]]
    assert walk(True, 5) == [["e", "d", "c", "b", "a"]]  # exactly full: no empty page after
    # Tasks added after the cursor do not shift the pages behind it.
    first = s.page(CursorQuery(key, 2, newest_first=True))
    clock.advance(60)
    new_task(s, key, "f")
    rest = s.page(CursorQuery(key, 10, after=first.tasks[-1].id, newest_first=True))
    assert [t.id for t in rest.tasks] == ["c", "b", "a"] and not rest.has_more
    for cursor in ("theirs", "missing"):
        with pytest.raises(LookupError):
            s.page(CursorQuery(key, 2, after=cursor))


def test_deleted_tasks_are_hidden_and_purged_once_ended(
    store: tuple[SqlTaskStore, str], clock: Clock
) -> None:
    s, key = store
    for task_id in ("done", "running", "kept"):
        new_task(s, key, task_id)
    claim = s.claim("done", worker_id="w")
    assert claim is not None and s.succeed(claim, RESULT)
    running = s.claim("running", worker_id="w")
    assert running is not None
    assert s.mark_deleted("done") and s.mark_deleted("running")
    assert not s.mark_deleted("done") and not s.mark_deleted("missing")
    loaded = s.get("running")
    assert loaded is not None and loaded.deleted  # the worker still sees its task
    assert [t.id for t in s.query(TaskQuery(api_key_id=key)).tasks] == ["kept"]
    assert [t.id for t in s.page(CursorQuery(key, 10)).tasks] == ["kept"]
    with pytest.raises(LookupError):
        s.page(CursorQuery(key, 10, after="done"))
    # Only an ended task is purged (long before its expiry); a running one first ends.
    assert s.expired() == [("done", RESULT.video_key)]
    assert s.request_cancel("running") and s.heartbeat(running).cancel_requested
    assert s.cancel_running(running)
    assert sorted(task_id for task_id, _ in s.expired()) == ["done", "running"]


# -- state-machine property test --


class StoreMachine(RuleBasedStateMachine):
    """Random interleavings of API, worker and reaper actions never produce an illegal status
    sequence, never change a finished task, and never let a fenced-out claim write."""

    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self._dir = tempfile.TemporaryDirectory()
        self.clock = Clock()
        self.store, self.key = make_store(Path(self._dir.name) / "m.db", self.clock)
        self.history: dict[str, list[TaskStatus]] = {}
        self.claims: list[Claim] = []
        self.n = 0

    def teardown(self) -> None:
        self._dir.cleanup()

    def _observe(self) -> None:
        for task_id, seen in self.history.items():
            task = self.store.get(task_id)
            assert task is not None
            if task.status is not seen[-1]:
                seen.append(task.status)

    @rule()
    def create(self) -> None:
        self.n += 1
        task_id = f"t{self.n}"
        new_task(self.store, self.key, task_id)
        self.history[task_id] = [P]

    @precondition(lambda self: self.history)
    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.history)))
        claim = self.store.claim(task_id, worker_id="w")
        if claim is not None:
            self.claims.append(claim)
        self._observe()

    @precondition(lambda self: self.history)
    @rule(data=st.data())
    def cancel(self, data: st.DataObject) -> None:
        task_id = data.draw(st.sampled_from(sorted(self.history)))
        self.store.cancel_pending(task_id)
        self.store.request_cancel(task_id)
        self._observe()

    @precondition(lambda self: self.claims)
    @rule(data=st.data(), outcome=st.sampled_from(["succeed", "fail", "cancel", "release", "beat"]))
    def finish(self, data: st.DataObject, outcome: str) -> None:
        claim = data.draw(st.sampled_from(self.claims))
        before = self.store.get(claim.task.id)
        assert before is not None
        owned = before.status is R and before.attempts == claim.attempt
        wrote = {
            "succeed": lambda: self.store.succeed(claim, RESULT),
            "fail": lambda: self.store.fail(claim, TaskError("InternalError", "x")),
            "cancel": lambda: self.store.cancel_running(claim),
            "release": lambda: self.store.release(claim) is not None,
            "beat": lambda: self.store.heartbeat(claim).owned,
        }[outcome]()
        assert wrote is owned  # a claim writes iff it is the current one
        self._observe()

    @rule(seconds=st.integers(0, 120))
    def time_passes_and_reaper_runs(self, seconds: int) -> None:
        self.clock.advance(seconds)
        self.store.reap(stale_after=timedelta(seconds=60), max_attempts=2)
        self._observe()

    @invariant()
    def histories_are_legal(self) -> None:
        for seen in self.history.values():
            for a, b in itertools.pairwise(seen):
                assert can_transition(a, b), f"illegal {a} -> {b} in {seen}"
            terminal_at = next((i for i, s in enumerate(seen) if s.is_terminal), None)
            assert terminal_at is None or terminal_at == len(seen) - 1


TestStoreMachine = StoreMachine.TestCase
TestStoreMachine.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


# -- usage metering --


def usage_of(db_url: str, **query: object) -> list[UsageLine]:
    engine = make_engine(db_url)
    _ENGINES.append(engine)
    return UsageReader(engine).query(UsageQuery(**query))  # type: ignore[arg-type]


def test_every_way_a_task_ends_is_metered_once(db_url: str, clock: Clock) -> None:
    s, key = make_store(db_url, clock)
    for name in ("ok", "bad", "stopped", "never-ran", "lost", "cancel-then-lost", "handed-back"):
        new_task(s, key, name)
    ok = s.claim("ok", worker_id="w")
    assert ok is not None and s.succeed(ok, RESULT)
    assert not s.succeed(ok, RESULT)  # a repeated report changes nothing, counts nothing
    bad = s.claim("bad", worker_id="w")
    assert bad is not None and s.fail(bad, TaskError(code="InvalidURL", message="x"))
    stopped = s.claim("stopped", worker_id="w")
    assert stopped is not None and s.cancel_running(stopped)
    assert s.cancel_pending("never-ran")
    handed_back = s.claim("handed-back", worker_id="w")
    assert handed_back is not None and s.release(handed_back) is P  # not an end
    assert s.claim("lost", worker_id="w") is not None
    assert s.claim("cancel-then-lost", worker_id="w") is not None
    assert s.request_cancel("cancel-then-lost")
    clock.advance(61)
    report = s.reap(stale_after=timedelta(seconds=60), max_attempts=2)
    assert report.requeued == ["lost"] and report.canceled == ["cancel-then-lost"]
    assert s.claim("lost", worker_id="w") is not None
    clock.advance(61)
    assert s.reap(stale_after=timedelta(seconds=60), max_attempts=2).failed == ["lost"]
    [line] = usage_of(db_url)
    assert (line.api_key_id, line.model, line.day) == (key, SPEC.model, clock.now.date())
    assert (line.succeeded, line.failed, line.canceled) == (1, 2, 3)
    assert line.video_seconds == SPEC.duration


def test_a_fenced_out_worker_is_not_metered(db_url: str, clock: Clock) -> None:
    s, key = make_store(db_url, clock)
    new_task(s, key)
    stale = s.claim("t1", worker_id="w1")
    assert stale is not None and s.release(stale) is P
    fresh = s.claim("t1", worker_id="w2")
    assert fresh is not None
    assert not s.succeed(stale, RESULT)
    assert usage_of(db_url) == []
    assert s.succeed(fresh, RESULT)
    assert [u.succeeded for u in usage_of(db_url)] == [1]


def test_usage_is_kept_per_day_and_model_and_outlives_the_tasks(db_url: str, clock: Clock) -> None:
    s, key = make_store(db_url, clock, ttl=60)
    other, _ = KeyStore(_ENGINES[-1]).create("other")
    i2v = dataclasses.replace(SPEC, model="wan2.2-i2v-plus", duration=10)
    for n, (owner, spec) in enumerate([(key, SPEC), (key, SPEC), (key, i2v), (other.id, SPEC)]):
        s.create(task_id=f"d1-{n}", api_key_id=owner, request_id="r", spec=spec)
        claim = s.claim(f"d1-{n}", worker_id="w")
        assert claim is not None and s.succeed(claim, RESULT)
    clock.advance(24 * 3600)  # the next UTC day
    new_task(s, key, "d2")
    claim = s.claim("d2", worker_id="w")
    assert claim is not None and s.succeed(claim, RESULT)
    clock.advance(120)
    assert s.delete(task_id for task_id, _ in s.expired()) == 5  # purged, as the janitor does
    day1, day2 = date(2026, 1, 1), date(2026, 1, 2)
    lines = usage_of(db_url, api_key_ids=frozenset({key}))
    assert [(u.day, u.model, u.succeeded, u.video_seconds) for u in lines] == [
        (day1, SPEC.model, 2, 2 * SPEC.duration),
        (day1, "wan2.2-i2v-plus", 1, 10),
        (day2, SPEC.model, 1, SPEC.duration),
    ]
    assert [u.day for u in usage_of(db_url, since=day2)] == [day2]
    assert {u.api_key_id for u in usage_of(db_url, until=day1)} == {key, other.id}


def migrator(engine: Engine, db_url: str) -> Callable[[Callable[..., None], str], None]:
    """`migrate(command.upgrade | command.downgrade, revision)` on `engine`'s database."""
    from wanserve.db.engine import alembic_config

    def migrate(step: Callable[..., None], revision: str) -> None:
        with engine.begin() as conn:
            cfg = alembic_config(db_url)
            cfg.attributes["connection"] = conn
            step(cfg, revision)

    return migrate


def test_migration_0004_keeps_existing_keys_as_plain_keys(db_url: str) -> None:
    from alembic import command
    from sqlalchemy import text

    engine = make_engine(db_url)
    _ENGINES.append(engine)
    migrate = migrator(engine, db_url)

    migrate(command.upgrade, "0003")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO api_keys (id, name, key_hash, prefix, created_at) "
                "VALUES ('key_old', 'old', 'h', 'sk-', CURRENT_TIMESTAMP)"
            )
        )
    upgrade(engine)
    [key] = KeyStore(engine).list()
    assert key.id == "key_old" and not key.admin
    assert usage_of(db_url) == []
    migrate(command.downgrade, "0003")
    migrate(command.upgrade, "head")


def test_migration_0006_old_rows_read_their_stage_from_their_status(
    db_url: str, clock: Clock
) -> None:
    from alembic import command
    from sqlalchemy import text

    s, key = make_store(db_url, clock)
    engine = make_engine(db_url)
    _ENGINES.append(engine)
    migrate = migrator(engine, db_url)
    new_task(s, key, "waiting")
    new_task(s, key, "running")
    assert s.claim("running", worker_id="w") is not None
    migrate(command.downgrade, "0005")
    migrate(command.upgrade, "head")
    with engine.begin() as conn:  # what the upgrade leaves in rows written before it
        assert conn.execute(text("SELECT count(*) FROM tasks WHERE stage IS NULL")).scalar() == 2
    assert s.watch("waiting").progress.stage is TaskStage.QUEUED  # type: ignore[union-attr]
    assert s.watch("running").progress.stage is TaskStage.DENOISING  # type: ignore[union-attr]


# -- prompt extension record --


def test_a_recorded_extension_comes_back_as_it_was_written(
    store: tuple[SqlTaskStore, str],
) -> None:
    s, key = store
    for n, extension in enumerate(
        [
            PromptExtension(prompt="a cat, at dusk, 35 mm"),
            PromptExtension(subject="a tabby cat", shots=("wide: it runs", "close: it stops")),
        ]
    ):
        task_id = new_task(s, key, f"x{n}")
        claim = s.claim(task_id, worker_id="w")
        assert claim is not None and claim.task.extension is None
        assert s.record_extension(claim, extension)
        assert s.release(claim) is P
        again = s.claim(task_id, worker_id="w2")
        assert again is not None and again.task.extension == extension


def test_an_extension_is_a_prompt_or_a_plan() -> None:
    with pytest.raises(ValueError):
        PromptExtension()
    with pytest.raises(ValueError):
        PromptExtension(prompt="p", subject="s", shots=("a",))


def test_queue_position_counts_pending_tasks_of_the_model_ahead(
    store: tuple[SqlTaskStore, str], clock: Clock
) -> None:
    s, key = store
    other = build_spec(
        SynthesisRequest(model="wan2.2-t2v-plus", prompt="a dog", seed=1),
        Catalog.build().get("wan2.2-t2v-plus"),
    )
    for name in ("a", "b", "c"):
        new_task(s, key, name)
        s.create(task_id=f"other-{name}", api_key_id=key, request_id="r", spec=other)
        clock.advance(1)
    assert [s.get(t).queue_position for t in ("a", "b", "c")] == [0, 1, 2]  # type: ignore[union-attr]
    watched = s.watch("c")
    assert watched is not None and watched.queue_position == 2
    assert watched.progress.stage is TaskStage.QUEUED
    claim = s.claim("a", worker_id="w")
    assert claim is not None
    assert s.get("a").queue_position is None  # type: ignore[union-attr]
    assert [s.watch(t).queue_position for t in ("b", "c")] == [0, 1]  # type: ignore[union-attr]
    assert s.cancel_pending("b")
    assert s.watch("c").queue_position == 0  # type: ignore[union-attr]
    assert s.watch("missing") is None


def test_stage_follows_claim_progress_and_hand_back(store: tuple[SqlTaskStore, str]) -> None:
    s, key = store
    new_task(s, key)
    claim = s.claim("t1", worker_id="w")
    assert claim is not None
    state = s.watch("t1")
    assert state is not None and state.status is R and state.attempts == 1
    assert state.progress.stage is TaskStage.LOADING
    s.report_progress(claim, Progress(TaskStage.ENCODING, step=4, total_steps=4, percent=95))
    assert s.watch("t1").progress == Progress(TaskStage.ENCODING, 4, 4, 95)  # type: ignore[union-attr]
    assert s.release(claim) is P
    state = s.watch("t1")
    assert state is not None and state.progress == Progress(TaskStage.QUEUED, 0, 4, 0)
    assert state.queue_position == 0


# -- dispatch bookkeeping (the janitor's re-sends) --


def test_stranded_tasks_are_unsent_ones_after_a_grace_and_sent_ones_after_a_period(
    store: tuple[SqlTaskStore, str], clock: Clock
) -> None:
    s, key = store
    grace, period = timedelta(seconds=5), timedelta(seconds=60)

    def stranded() -> list[str]:
        return [q.task_id for q in s.stranded(unsent_after=grace, resend_after=period)]

    new_task(s, key, "unsent")
    clock.advance(1)
    new_task(s, key, "sent")
    assert s.mark_dispatched("sent")
    assert stranded() == []  # a fresh task is not stranded before its producer had a chance
    clock.advance(5)
    assert stranded() == ["unsent"]
    assert [q.model for q in s.stranded(unsent_after=grace, resend_after=period)] == [SPEC.model]
    assert s.mark_dispatched("unsent")
    assert stranded() == []
    clock.advance(61)
    assert stranded() == ["unsent", "sent"]  # oldest first

    # Only PENDING tasks: a claimed one needs no message, and cannot be marked.
    claim = s.claim("sent", worker_id="w")
    assert claim is not None and not s.mark_dispatched("sent")
    assert stranded() == ["unsent"]
    # Handed back, its message is spent: it is unsent again at once.
    assert s.release(claim) is TaskStatus.PENDING
    assert stranded() == ["unsent", "sent"]
    assert s.cancel_pending("unsent") and stranded() == ["sent"]


# -- metrics (read through the store, never around it) --


def test_counts_group_every_kept_task_by_model_status_and_oldest_pending(
    store: tuple[SqlTaskStore, str], clock: Clock
) -> None:
    """What `/metrics` reads at scrape time: tasks by (model, status), deleted and expired
    ones included until they are purged, each model's oldest PENDING task, and the webhooks
    still owed."""
    s, key = store
    assert s.counts() == TaskCounts(tasks={}, oldest_pending={}, outbox_pending=0)
    other = dataclasses.replace(SPEC, model="wan2.2-t2v-plus")
    start = clock.now
    for name in ("running", "done", "waiting", "later"):
        new_task(s, key, name)
        clock.advance(1)
    s.create(
        task_id="failed",
        api_key_id=key,
        request_id="r",
        spec=other,
        callback_url="https://hooks.example.com/done",
    )
    assert s.claim("running", worker_id="w") is not None
    done = s.claim("done", worker_id="w")
    assert done is not None and s.succeed(done, RESULT) and s.mark_deleted("done")
    failed = s.claim("failed", worker_id="w")
    assert failed is not None and s.fail(failed, TaskError("InternalError", "boom"))

    counts = s.counts()
    assert counts.tasks == {
        (SPEC.model, R): 1,
        (SPEC.model, S): 1,  # deleted, not yet purged: still kept
        (SPEC.model, P): 2,
        (other.model, F): 1,
    }
    # "running" and "done" were older, but no longer PENDING; "other" has nothing waiting.
    assert counts.oldest_pending == {SPEC.model: start + timedelta(seconds=2)}
    assert counts.outbox_pending == 1  # the failed task's callback

    s.delete(["done"])
    assert s.claim("waiting", worker_id="w") is not None
    counts = s.counts()
    assert (SPEC.model, S) not in counts.tasks and counts.tasks[(SPEC.model, R)] == 2
    assert counts.oldest_pending == {SPEC.model: start + timedelta(seconds=3)}


def test_processes_migrating_a_fresh_database_at_once_do_not_collide(postgres_url: str) -> None:
    """A fleet starts several processes together, each migrating at start-up: on a fresh
    PostgreSQL database they must take turns (without the lock, two CREATE TABLEs collide)."""
    engines = [make_engine(postgres_url) for _ in range(4)]
    _ENGINES.extend(engines)
    barrier = threading.Barrier(len(engines))
    failures: list[BaseException] = []

    def migrate(engine: Engine) -> None:
        barrier.wait()
        try:
            upgrade(engine)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=migrate, args=(e,), daemon=True) for e in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=scaled(120))  # unlocked, they block each other on CREATE TABLE
    assert not any(t.is_alive() for t in threads), "the migrations blocked each other"
    assert failures == []
    assert KeyStore(engines[0]).list() == []  # the schema is there, once
