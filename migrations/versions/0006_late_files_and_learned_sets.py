"""late files and learned sets

Revision ID: 6c1a2e7f0b13
Revises: 38bdc8f1548c
Create Date: 2026-12-07 03:40:00

Issue 13: a job may fetch from the master a file its manifest lacked
(``late_files``, one row per job and path); each is learned for the user and
the program (``learned_files``), keyed by ``jobs.program_key`` (or
``manifests.program_key`` for Slurm jobs), so the next submission ships it.
``jobs.late_policy``: ``beosub --strict`` (fail) or None (the config's);
``manifests.program_key`` and ``late_policy`` carry both to Slurm jobs.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "6c1a2e7f0b13"
down_revision = "38bdc8f1548c"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN (SQLite has it): a batch copy of manifests would drop a
    # table other tables' rows reference.
    op.add_column("jobs", sa.Column("program_key", sa.Text(), nullable=True))
    op.add_column("jobs", sa.Column("late_policy", sa.String(length=8), nullable=True))
    op.add_column("manifests", sa.Column("program_key", sa.Text(), nullable=True))
    op.add_column("manifests", sa.Column("late_policy", sa.String(length=8), nullable=True))
    op.create_table(
        "late_files",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("object_sha256", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_late_files_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_late_files_node_id_nodes")
        ),
        sa.ForeignKeyConstraint(
            ["object_sha256"],
            ["objects.sha256"],
            name=op.f("fk_late_files_object_sha256_objects"),
        ),
        sa.PrimaryKeyConstraint("job_id", "path", name=op.f("pk_late_files")),
    )
    with op.batch_alter_table("late_files", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_late_files_object_sha256"), ["object_sha256"], unique=False
        )
    op.create_table(
        "learned_files",
        sa.Column("uid", sa.Integer(), nullable=False),
        sa.Column("program_key", sa.Text(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("object_sha256", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("learned_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("uid", "program_key", "path", name=op.f("pk_learned_files")),
    )


def downgrade() -> None:
    op.drop_table("learned_files")
    with op.batch_alter_table("late_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_late_files_object_sha256"))
    op.drop_table("late_files")
    # Plain DROP COLUMN (SQLite 3.35+), for the reason of upgrade().
    op.drop_column("manifests", "late_policy")
    op.drop_column("manifests", "program_key")
    op.drop_column("jobs", "late_policy")
    op.drop_column("jobs", "program_key")
