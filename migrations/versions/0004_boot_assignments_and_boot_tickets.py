"""boot assignments and boot tickets

Revision ID: 272ff792a0ed
Revises: e4811d7da0de
Create Date: 2026-11-25 16:54:45.037875
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "272ff792a0ed"
down_revision = "e4811d7da0de"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "boot_assignments",
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.CheckConstraint(
            "kind IN ('kernel', 'stage2', 'stage3')", name=op.f("ck_boot_assignments_kind")
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["boot_images.id"],
            name=op.f("fk_boot_assignments_image_id_boot_images"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_boot_assignments_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", "kind", name=op.f("pk_boot_assignments")),
    )
    with op.batch_alter_table("boot_assignments", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_boot_assignments_image_id"), ["image_id"], unique=False
        )

    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("boot_ticket_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("boot_ticket_expires", sa.DateTime(timezone=True), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("boot_ticket_expires")
        batch_op.drop_column("boot_ticket_sha256")

    with op.batch_alter_table("boot_assignments", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_boot_assignments_image_id"))

    op.drop_table("boot_assignments")
