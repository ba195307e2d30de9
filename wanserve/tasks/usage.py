"""Usage metering: how many tasks each key ran per model and UTC day, and the seconds of
video they delivered.

`meter` is called by `TaskStore` inside the transaction that ends a task, so the count moves
with the status change or not at all; `UsageReader` answers the CLI and the admin API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session, sessionmaker

from wanserve.db.tables import UsageRow
from wanserve.tasks.models import TaskStatus


@dataclass(frozen=True)
class UsageLine:
    api_key_id: str
    day: date  # UTC day on which the tasks ended
    model: str
    succeeded: int
    failed: int
    canceled: int
    video_seconds: int


@dataclass(frozen=True)
class UsageQuery:
    api_key_ids: frozenset[str] | None = None  # None: every key
    since: date | None = None  # inclusive
    until: date | None = None  # inclusive


def meter(
    s: Session,
    *,
    api_key_id: str,
    model: str,
    outcome: TaskStatus,
    day: date,
    video_seconds: int = 0,
) -> None:
    """Add one ended task to its day's line (an upsert: one statement, safe under races)."""
    if not outcome.is_terminal:
        raise ValueError(f"only ended tasks are metered, not {outcome.value}")
    counts = {
        "succeeded": int(outcome is TaskStatus.SUCCEEDED),
        "failed": int(outcome is TaskStatus.FAILED),
        "canceled": int(outcome is TaskStatus.CANCELED),
        "video_seconds": video_seconds if outcome is TaskStatus.SUCCEEDED else 0,
    }
    dialect = s.connection().dialect.name
    insert: Any = postgresql.insert if dialect == "postgresql" else sqlite.insert
    stmt = insert(UsageRow).values(api_key_id=api_key_id, day=day, model=model, **counts)
    s.execute(
        stmt.on_conflict_do_update(
            index_elements=[UsageRow.api_key_id, UsageRow.day, UsageRow.model],
            set_={name: getattr(UsageRow, name) + stmt.excluded[name] for name in counts},
        )
    )


class UsageReader:
    def __init__(self, engine: Engine) -> None:
        self._sessions = sessionmaker(engine)

    def query(self, q: UsageQuery) -> list[UsageLine]:
        """Matching lines, oldest day first."""
        stmt = select(UsageRow).order_by(UsageRow.day, UsageRow.api_key_id, UsageRow.model)
        if q.api_key_ids is not None:
            stmt = stmt.where(UsageRow.api_key_id.in_(sorted(q.api_key_ids)))
        if q.since is not None:
            stmt = stmt.where(UsageRow.day >= q.since)
        if q.until is not None:
            stmt = stmt.where(UsageRow.day <= q.until)
        with self._sessions() as s:
            return [
                UsageLine(
                    api_key_id=r.api_key_id,
                    day=r.day,
                    model=r.model,
                    succeeded=r.succeeded,
                    failed=r.failed,
                    canceled=r.canceled,
                    video_seconds=r.video_seconds,
                )
                for r in s.scalars(stmt)
            ]
