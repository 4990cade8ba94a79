"""job end reasons, node_fail and lost nodes

Revision ID: 38bdc8f1548c
Revises: 272ff792a0ed
Create Date: 2026-12-07 01:04:08.635933

``objects.owner_uid``: who first brought an object into the store (per-user
store quotas). A job whose node was lost while its tasks ran ends ``node_fail`` (Slurm's
NODE_FAIL); ``jobs.reason`` keeps why a job ended when not by its own exits,
``job_nodes.lost_reason`` why a node's part was lost. Autogenerate does not see
the changed CHECK constraint; it is replaced by hand.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "38bdc8f1548c"
down_revision = "272ff792a0ed"
branch_labels = None
depends_on = None

_OLD = ("pending", "preparing", "running", "completed", "failed", "cancelled")
_NEW = (*_OLD, "node_fail")


def _states(values: tuple[str, ...]) -> str:
    return "state IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade() -> None:
    with op.batch_alter_table("objects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("owner_uid", sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f("ix_objects_owner_uid"), ["owner_uid"], unique=False)

    with op.batch_alter_table("job_nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lost_reason", sa.Text(), nullable=True))

    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch_op.drop_constraint(op.f("ck_jobs_state"), type_="check")
        batch_op.create_check_constraint(op.f("ck_jobs_state"), _states(_NEW))


def downgrade() -> None:
    op.execute("UPDATE jobs SET state = 'failed' WHERE state = 'node_fail'")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_jobs_state"), type_="check")
        batch_op.create_check_constraint(op.f("ck_jobs_state"), _states(_OLD))
        batch_op.drop_column("reason")

    with op.batch_alter_table("job_nodes", schema=None) as batch_op:
        batch_op.drop_column("lost_reason")

    with op.batch_alter_table("objects", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_objects_owner_uid"))
        batch_op.drop_column("owner_uid")
