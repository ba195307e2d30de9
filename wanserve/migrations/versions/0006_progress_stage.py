"""progress stage: what a task is doing (queued, loading, denoising, decoding, encoding)

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        # Rows written before the column existed read as queued (PENDING) or denoising
        # (RUNNING: every stage before it reported steps only); see SqlTaskStore.
        batch.add_column(sa.Column("stage", sa.String(length=16), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("stage")
