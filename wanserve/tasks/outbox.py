"""The webhook outbox: callbacks owed for tasks that ended, durable until delivered.

`enqueue` is called by `TaskStore` inside the transaction that writes a terminal status, so
the status change and the callback it owes commit together or not at all: a crash between
them cannot lose a delivery, and a rolled-back change sends nothing.

`SqlOutbox` is the sender's side. A message is claimed by a conditional UPDATE that moves its
due time past the attempt's deadline (`next_attempt_at <= now` in the WHERE clause), so of
several API replicas polling the table exactly one claims each attempt, on SQLite and
PostgreSQL alike, without a lock held across the HTTP call. A sender that dies mid-attempt
leaves the message due again once that deadline passes: delivery is at least once. The
claim's attempt number fences the outcome write, as a task claim's does.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, Engine, func, select, update
from sqlalchemy.orm import Session, sessionmaker

from wanserve.clock import Clock, utcnow
from wanserve.db.tables import WebhookOutboxRow

# Errors are kept for the operator (`last_error`); a receiver's text is not ours to store whole.
_MAX_ERROR = 500


class DeliveryState(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    ABANDONED = "abandoned"  # every attempt failed


@dataclass(frozen=True)
class OutboxMessage:
    """One claimed attempt at one callback."""

    id: str  # the `webhook-id`
    task_id: str
    api_key_id: str
    url: str
    attempt: int  # 1 for the first attempt; fences the outcome write


def enqueue(s: Session, *, task_id: str, api_key_id: str, url: str, now: datetime) -> str:
    """Owe a callback for `task_id`, in the caller's transaction; returns the message id."""
    message_id = str(uuid.uuid4())
    s.add(
        WebhookOutboxRow(
            id=message_id,
            task_id=task_id,
            api_key_id=api_key_id,
            url=url,
            state=DeliveryState.PENDING.value,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )
    return message_id


def count_pending(conn: Connection | Session) -> int:
    """Messages not yet delivered or abandoned (the task store's metrics read it too)."""
    count = conn.scalar(
        select(func.count())
        .select_from(WebhookOutboxRow)
        .where(WebhookOutboxRow.state == DeliveryState.PENDING.value)
    )
    return int(count or 0)


class SqlOutbox:
    def __init__(self, engine: Engine, *, clock: Clock = utcnow) -> None:
        self._sessions = sessionmaker(engine, expire_on_commit=False)
        self._now = clock

    def claim_due(self, *, limit: int, lease: timedelta) -> list[OutboxMessage]:
        """Claim up to `limit` messages that are due, oldest first. Each is invisible to other
        claimers for `lease` (longer than one attempt may take)."""
        now = self._now()
        pending = WebhookOutboxRow.state == DeliveryState.PENDING.value
        with self._sessions() as s:
            rows = s.execute(
                select(WebhookOutboxRow.id, WebhookOutboxRow.attempts)
                .where(pending, WebhookOutboxRow.next_attempt_at <= now)
                .order_by(WebhookOutboxRow.next_attempt_at, WebhookOutboxRow.id)
                .limit(limit)
            ).all()
        claimed: list[OutboxMessage] = []
        for message_id, attempts in rows:
            with self._sessions.begin() as s:
                row = s.execute(
                    update(WebhookOutboxRow)
                    .where(
                        WebhookOutboxRow.id == message_id,
                        WebhookOutboxRow.attempts == attempts,
                        pending,
                        WebhookOutboxRow.next_attempt_at <= now,
                    )
                    .values(attempts=attempts + 1, next_attempt_at=now + lease)
                    .returning(
                        WebhookOutboxRow.task_id, WebhookOutboxRow.api_key_id, WebhookOutboxRow.url
                    )
                ).first()
            if row is not None:  # else another replica claimed it first
                claimed.append(
                    OutboxMessage(
                        id=message_id,
                        task_id=row.task_id,
                        api_key_id=row.api_key_id,
                        url=row.url,
                        attempt=attempts + 1,
                    )
                )
        return claimed

    def delivered(self, message: OutboxMessage) -> bool:
        return self._settle(
            message, state=DeliveryState.DELIVERED, finished_at=self._now(), last_error=None
        )

    def retry(self, message: OutboxMessage, *, after: timedelta, error: str) -> bool:
        return self._settle(
            message,
            state=DeliveryState.PENDING,
            next_attempt_at=self._now() + after,
            last_error=error[:_MAX_ERROR],
        )

    def abandon(self, message: OutboxMessage, *, error: str) -> bool:
        return self._settle(
            message,
            state=DeliveryState.ABANDONED,
            finished_at=self._now(),
            last_error=error[:_MAX_ERROR],
        )

    def drop(self, message: OutboxMessage) -> bool:
        """Forget a message that can no longer be rendered (its task is gone)."""
        return self._settle(
            message,
            state=DeliveryState.ABANDONED,
            finished_at=self._now(),
            last_error="the task no longer exists",
        )

    def pending(self) -> int:
        with self._sessions() as s:
            return count_pending(s)

    def _settle(self, message: OutboxMessage, **values: Any) -> bool:
        """Record an attempt's outcome, unless the claim was lost (the lease ran out and
        another sender took the message: its outcome is the one that counts)."""
        values["state"] = values["state"].value
        with self._sessions.begin() as s:
            res = s.execute(
                update(WebhookOutboxRow)
                .where(
                    WebhookOutboxRow.id == message.id,
                    WebhookOutboxRow.attempts == message.attempt,
                    WebhookOutboxRow.state == DeliveryState.PENDING.value,
                )
                .values(**values)
            )
            return int(res.rowcount) == 1  # type: ignore[attr-defined]
