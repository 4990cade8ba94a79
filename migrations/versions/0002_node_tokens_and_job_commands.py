"""node tokens and job commands

Revision ID: 27c5562f2314
Revises: 8d3c953ffda5
Create Date: 2026-11-25 12:53:01.628174
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "27c5562f2314"
down_revision = "8d3c953ffda5"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("argv", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("cwd", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("environment", sa.JSON(), nullable=True))
        # Jobs recorded before this revision asked for one node, one task.
        batch_op.add_column(
            sa.Column("nodes_requested", sa.Integer(), server_default="1", nullable=False)
        )
        batch_op.add_column(sa.Column("tasks", sa.Integer(), server_default="1", nullable=False))

    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("token_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("token_sha256")

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_column("tasks")
        batch_op.drop_column("nodes_requested")
        batch_op.drop_column("environment")
        batch_op.drop_column("cwd")
        batch_op.drop_column("argv")
