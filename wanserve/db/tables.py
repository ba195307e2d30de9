"""SQL tables. They never leave `wanserve.tasks.store` and `wanserve.keys`: those return
domain objects."""

from __future__ import annotations

from datetime import UTC, date, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    false,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (SQLite keeps no time zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


class Base(DeclarativeBase):
    metadata = metadata


class ApiKeyRow(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    # SHA-256 of the whole key; the key itself is shown once and never stored.
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # May read every key's usage (`GET /api/v1/admin/usage`).
    admin: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class UploadRow(Base):
    """A file a client uploaded through the SDK's policy flow, referenced as oss://<key>."""

    __tablename__ = "uploads"

    key: Mapped[str] = mapped_column(String(512), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    model: Mapped[str] = mapped_column(String(64))
    content_type: Mapped[str] = mapped_column(String(128))
    size: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())

    __table_args__ = (Index(None, "expires_at"),)


class TaskRow(Base):
    __tablename__ = "tasks"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"))
    request_id: Mapped[str] = mapped_column(String(36))
    model: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    spec: Mapped[str] = mapped_column(Text)
    submit_time: Mapped[datetime] = mapped_column(UTCDateTime())
    scheduled_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    # Execution bookkeeping: `attempts` doubles as the fencing token of the current claim.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Times a worker died holding the task (graceful hand-backs do not count).
    lost: Mapped[int] = mapped_column(Integer, default=0)
    worker_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    # When a message carrying this PENDING task's id last left for the broker; NULL: none has
    # since the task was created or handed back. The janitor re-sends from it (see janitor.py).
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    # Deleted by its owner (DELETE /v1/videos/{id}): invisible at once, purged with its video
    # by the janitor once it has ended (a running one is asked to stop first).
    deleted: Mapped[bool] = mapped_column(Boolean, default=False)
    step: Mapped[int] = mapped_column(Integer, default=0)
    total_steps: Mapped[int] = mapped_column(Integer, default=0)
    progress: Mapped[int] = mapped_column(Integer, default=0)
    # A `TaskStage` value; NULL in rows older than the column (read as queued / denoising).
    stage: Mapped[str | None] = mapped_column(String(16), nullable=True)
    # Outcome.
    error_code: Mapped[str | None] = mapped_column(String(64), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    video_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    actual_prompt: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Transformer block evaluations the run computed and a block cache skipped; None: uncounted.
    blocks_computed: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    blocks_skipped: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
    # Seconds delivered, where the length was decided while running; None: the spec's.
    duration: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The extended prompt or shot plan (JSON), recorded at the first attempt.
    extension: Mapped[str | None] = mapped_column(Text, nullable=True)
    has_audio: Mapped[bool] = mapped_column(Boolean, default=False)
    width: Mapped[int | None] = mapped_column(Integer, nullable=True)
    height: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # Where the task's end is POSTed (a webhook), checked at submission; None: nowhere.
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (
        Index(None, "api_key_id", "submit_time"),
        Index(None, "status", "submit_time"),
        Index(None, "expires_at"),
    )


class UsageRow(Base):
    """Tasks that ended, per key, model and UTC day of their end. Tasks are purged after their
    TTL; these rows are kept, so usage outlives them."""

    __tablename__ = "usage_daily"

    api_key_id: Mapped[str] = mapped_column(ForeignKey("api_keys.id"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    model: Mapped[str] = mapped_column(String(64), primary_key=True)
    succeeded: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    canceled: Mapped[int] = mapped_column(Integer, default=0)
    # Seconds of video delivered (succeeded tasks only).
    video_seconds: Mapped[int] = mapped_column(Integer, default=0)

    __table_args__ = (Index(None, "day"),)


class WebhookOutboxRow(Base):
    """A callback owed for a task that ended, written in the same transaction as the terminal
    status (so a crash cannot lose it) and deleted with its task."""

    __tablename__ = "webhook_outbox"

    # The message id (`webhook-id`): unique per message, the same on every retry.
    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    task_id: Mapped[str] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    api_key_id: Mapped[str] = mapped_column(String(32))  # whose secret signs it
    url: Mapped[str] = mapped_column(Text)
    # pending -> delivered | abandoned
    state: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    # Due time when pending; a claimed message is pushed past its attempt's deadline, so a
    # sender that dies mid-attempt leaves it due again later rather than claimed forever.
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_at: Mapped[datetime] = mapped_column(UTCDateTime())
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime(), nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)

    __table_args__ = (Index(None, "state", "next_attempt_at"), Index(None, "task_id"))
