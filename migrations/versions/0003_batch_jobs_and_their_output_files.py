"""batch jobs and their output files

Revision ID: e4811d7da0de
Revises: 27c5562f2314
Create Date: 2026-11-25 14:05:41.006209
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "e4811d7da0de"
down_revision = "27c5562f2314"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        # sa.false() renders as 0 on SQLite and false on PostgreSQL (a literal
        # '0' is an integer there, not a boolean). Older jobs were interactive.
        batch_op.add_column(
            sa.Column("batch", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
        batch_op.add_column(sa.Column("stdout_path", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("stderr_path", sa.Text(), nullable=True))
        batch_op.add_column(
            sa.Column("label", sa.Boolean(), server_default=sa.false(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("label")
        batch_op.drop_column("stderr_path")
        batch_op.drop_column("stdout_path")
        batch_op.drop_column("batch")
