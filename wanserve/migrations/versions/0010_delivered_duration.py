"""delivered duration: the seconds a SUCCEEDED task's video lasts, where it was decided while
running (wan2.7-videoedit's duration 0 takes its source's length)

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        # NULL: the spec's duration (rows older than the column, and every video whose length
        # was known at submission).
        batch.add_column(sa.Column("duration", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("duration")
