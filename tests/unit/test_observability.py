"""The store gauges of `/metrics`, read through the store's `TaskCounter` role: a fake
stands in for the database, so the rendering is checked without one (the query itself is
tested in `test_store.py` on SQLite and PostgreSQL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from prometheus_client.parser import text_string_to_metric_families

from wanserve.observability import Metrics
from wanserve.tasks.models import TaskStatus
from wanserve.tasks.store import TaskCounts

NOW = datetime(2026, 1, 1, tzinfo=UTC)


@dataclass
class FakeCounter:
    """A `TaskCounter`: the one method the metrics call."""

    answer: TaskCounts | None

    def counts(self) -> TaskCounts:
        if self.answer is None:
            raise OSError("the database is gone")
        return self.answer


def scrape(counter: FakeCounter, *, models: list[str]) -> dict[str, dict[frozenset[str], float]]:
    metrics = Metrics()
    metrics.watch_store(counter, models=models, clock=lambda: NOW)
    found: dict[str, dict[frozenset[str], float]] = {}
    for family in text_string_to_metric_families(metrics.exposition().decode()):
        for sample in family.samples:
            labels = frozenset(f"{k}={v}" for k, v in sample.labels.items())
            found.setdefault(sample.name, {})[labels] = sample.value
    return found


def test_store_gauges_come_from_the_counts() -> None:
    counts = TaskCounts(
        tasks={
            ("wan2.1-t2v-turbo", TaskStatus.PENDING): 2,
            ("wan2.1-t2v-turbo", TaskStatus.SUCCEEDED): 5,
            ("wan2.2-i2v-plus", TaskStatus.RUNNING): 1,
        },
        oldest_pending={"wan2.1-t2v-turbo": NOW - timedelta(seconds=30)},
        outbox_pending=3,
    )
    found = scrape(FakeCounter(counts), models=["wan2.1-t2v-turbo", "wan2.6-t2v"])
    assert found["wanserve_store_up"] == {frozenset(): 1}
    assert found["wanserve_tasks"] == {
        frozenset({"model=wan2.1-t2v-turbo", "status=PENDING"}): 2,
        frozenset({"model=wan2.1-t2v-turbo", "status=SUCCEEDED"}): 5,
        frozenset({"model=wan2.2-i2v-plus", "status=RUNNING"}): 1,
    }
    # Every served model has a queue series, at 0 when nothing waits, and so does a model
    # that only has tasks left in the store.
    assert found["wanserve_queue_depth"] == {
        frozenset({"model=wan2.1-t2v-turbo"}): 2,
        frozenset({"model=wan2.2-i2v-plus"}): 0,
        frozenset({"model=wan2.6-t2v"}): 0,
    }
    assert found["wanserve_queue_oldest_pending_seconds"] == {
        frozenset({"model=wan2.1-t2v-turbo"}): 30,
        frozenset({"model=wan2.2-i2v-plus"}): 0,
        frozenset({"model=wan2.6-t2v"}): 0,
    }
    assert found["wanserve_webhook_outbox_pending"] == {frozenset(): 3}


def test_a_store_that_cannot_be_read_is_reported_down() -> None:
    found = scrape(FakeCounter(None), models=["wan2.1-t2v-turbo"])
    assert found["wanserve_store_up"] == {frozenset(): 0}
    assert "wanserve_tasks" not in found and "wanserve_queue_depth" not in found
