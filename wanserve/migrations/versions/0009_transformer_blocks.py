"""transformer blocks: how many block evaluations a SUCCEEDED task computed and skipped

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        # NULL: not counted (rows older than the columns, or an engine that does not count).
        batch.add_column(sa.Column("blocks_computed", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("blocks_skipped", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch:
        batch.drop_column("blocks_skipped")
        batch.drop_column("blocks_computed")
