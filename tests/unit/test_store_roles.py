"""The store's role protocols: `SqlTaskStore` implements every one of them, the split is real
(no role, nor two together, is the whole store), and each consumer asks for its own role.

`mypy` checks the same from the other side wherever a composition root hands the store to a
consumer; the assignments in `test_the_sql_store_is_every_role` say it for each role at once
(`mypy tests/unit/test_store_roles.py`).
"""

from __future__ import annotations

import inspect
import itertools
import typing
from datetime import timedelta
from pathlib import Path

import pytest

from wanserve.db.engine import make_engine
from wanserve.observability import StoreCollector
from wanserve.tasks.dispatch import DispatchLog, Recorded
from wanserve.tasks.janitor import Janitor
from wanserve.tasks.service import TaskService
from wanserve.tasks.store import (
    ProgressSink,
    SqlTaskStore,
    TaskClaimer,
    TaskCounter,
    TaskDesk,
    TaskReporter,
    TaskStore,
    TaskSweeper,
)
from wanserve.workers.execute import Execution
from wanserve.workers.loop import WorkerLoop
from wanserve.workers.progress import ProgressReporter

ROLES: list[type] = [
    TaskDesk,
    TaskClaimer,
    ProgressSink,
    TaskReporter,
    TaskSweeper,
    TaskCounter,
    DispatchLog,
]


def methods(protocol: type) -> dict[str, typing.Any]:
    """The methods a protocol asks for, its own and its parent roles'."""
    found: dict[str, typing.Any] = {}
    for cls in reversed(protocol.__mro__):
        if cls in (object, typing.Protocol, typing.Generic):
            continue
        found.update(
            (name, value)
            for name, value in vars(cls).items()
            if not name.startswith("_") and callable(value)
        )
    return found


def test_the_sql_store_is_every_role(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 't.db'}")
    store = SqlTaskStore(engine, ttl=timedelta(hours=1))
    # Checked by mypy: each assignment fails to type-check if the store lacks a role's method
    # or implements it with another signature.
    desk: TaskDesk = store
    claimer: TaskClaimer = store
    sink: ProgressSink = store
    reporter: TaskReporter = store
    sweeper: TaskSweeper = store
    counter: TaskCounter = store
    log: DispatchLog = store
    union: TaskStore = store
    assert all(r is store for r in (desk, claimer, sink, reporter, sweeper, counter, log, union))
    engine.dispose()


@pytest.mark.parametrize("role", ROLES, ids=lambda r: r.__name__)
def test_every_role_method_exists_on_the_sql_store_with_its_signature(role: type) -> None:
    wanted = methods(role)
    assert wanted, f"{role.__name__} asks for nothing"
    for name, declared in wanted.items():
        implemented = getattr(SqlTaskStore, name, None)
        assert implemented is not None, f"SqlTaskStore has no {name} ({role.__name__})"
        assert inspect.signature(implemented) == inspect.signature(declared), (
            f"SqlTaskStore.{name} differs from {role.__name__}.{name}"
        )


def test_the_store_is_exactly_its_roles() -> None:
    """`TaskStore` adds nothing of its own, and every public method of `SqlTaskStore` is some
    caller's: a method no role names is one nobody should be calling."""
    assert set(methods(TaskStore)) == set().union(*(methods(r) for r in ROLES))
    assert [n for n in vars(TaskStore) if not n.startswith("_")] == []
    public = {n for n, v in vars(SqlTaskStore).items() if not n.startswith("_") and callable(v)}
    assert public == set(methods(TaskStore))


def test_the_split_is_real() -> None:
    """No role, nor any two together, asks for the whole store."""
    everything = set(methods(TaskStore))
    for one, two in itertools.combinations(ROLES, 2):
        both = set(methods(one)) | set(methods(two))
        assert both < everything, f"{one.__name__} + {two.__name__} are the whole store"
    assert methods(ProgressSink).keys() == {"report_progress"}


@pytest.mark.parametrize(
    ("consumer", "parameter", "role"),
    [
        (TaskService.__init__, "store", TaskDesk),
        (WorkerLoop.__init__, "store", TaskClaimer),
        (ProgressReporter.__init__, "store", ProgressSink),
        (Execution, "store", TaskReporter),
        (Janitor.__init__, "store", TaskSweeper),
        (StoreCollector.__init__, "store", TaskCounter),
        (Recorded.__init__, "log", DispatchLog),
    ],
    ids=lambda v: getattr(v, "__qualname__", str(v)),
)
def test_each_consumer_takes_its_own_role(consumer: object, parameter: str, role: type) -> None:
    assert typing.get_type_hints(consumer)[parameter] is role
