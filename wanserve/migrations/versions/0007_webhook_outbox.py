"""webhooks: the task's callback URL and the delivery outbox

Revision ID: 0007
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.add_column(sa.Column("callback_url", sa.Text(), nullable=True))
    op.create_table(
        "webhook_outbox",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("task_id", sa.String(length=36), nullable=False),
        sa.Column("api_key_id", sa.String(length=32), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["task_id"],
            ["tasks.id"],
            name=op.f("fk_webhook_outbox_task_id_tasks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_outbox")),
    )
    op.create_index(
        op.f("ix_webhook_outbox_state_next_attempt_at"),
        "webhook_outbox",
        ["state", "next_attempt_at"],
    )
    op.create_index(op.f("ix_webhook_outbox_task_id"), "webhook_outbox", ["task_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_webhook_outbox_task_id"), table_name="webhook_outbox")
    op.drop_index(op.f("ix_webhook_outbox_state_next_attempt_at"), table_name="webhook_outbox")
    op.drop_table("webhook_outbox")
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("callback_url")
