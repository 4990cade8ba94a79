"""initial schema

Revision ID: 8d3c953ffda5
Revises:
Create Date: 2026-11-25 11:48:33.173514
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "8d3c953ffda5"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "boot_images",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("built_from", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "kind IN ('kernel', 'stage2', 'stage3')", name=op.f("ck_boot_images_kind")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_boot_images")),
        sa.UniqueConstraint("name", name=op.f("uq_boot_images_name")),
        sa.UniqueConstraint("sha256", name=op.f("uq_boot_images_sha256")),
    )
    op.create_table(
        "manifests",
        sa.Column("id", sa.String(length=64), nullable=False),
        sa.Column("owner_uid", sa.Integer(), nullable=False),
        sa.Column("root_program", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_manifests")),
    )
    with op.batch_alter_table("manifests", schema=None) as batch_op:
        batch_op.create_index(
            "ix_manifests_owner_uid_created_at", ["owner_uid", "created_at"], unique=False
        )

    op.create_table(
        "objects",
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("sha256", name=op.f("pk_objects")),
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("scheduler", sa.String(length=8), nullable=False),
        sa.Column("scheduler_job_id", sa.String(length=64), nullable=True),
        sa.Column("name", sa.String(length=128), nullable=True),
        sa.Column("uid", sa.Integer(), nullable=False),
        sa.Column("manifest_id", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("exit_status", sa.Integer(), nullable=True),
        sa.CheckConstraint("scheduler IN ('local', 'slurm')", name=op.f("ck_jobs_scheduler")),
        sa.CheckConstraint(
            "state IN ('pending', 'preparing', 'running', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_jobs_state"),
        ),
        sa.ForeignKeyConstraint(
            ["manifest_id"], ["manifests.id"], name=op.f("fk_jobs_manifest_id_manifests")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_jobs")),
        sa.UniqueConstraint("scheduler", "scheduler_job_id", name="uq_jobs_scheduler_job"),
    )
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_jobs_manifest_id"), ["manifest_id"], unique=False)
        batch_op.create_index("ix_jobs_state_submitted_at", ["state", "submitted_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_jobs_uid"), ["uid"], unique=False)

    op.create_table(
        "manifest_entries",
        sa.Column("manifest_id", sa.String(length=64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("mode", sa.Integer(), nullable=False),
        sa.Column("object_sha256", sa.String(length=64), nullable=True),
        sa.Column("target", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "(kind = 'file' AND object_sha256 IS NOT NULL AND target IS NULL) OR (kind = 'symlink' AND target IS NOT NULL AND object_sha256 IS NULL) OR (kind = 'dir' AND object_sha256 IS NULL AND target IS NULL)",
            name=op.f("ck_manifest_entries_kind_payload"),
        ),
        sa.CheckConstraint(
            "kind IN ('file', 'symlink', 'dir')", name=op.f("ck_manifest_entries_kind")
        ),
        sa.ForeignKeyConstraint(
            ["manifest_id"],
            ["manifests.id"],
            name=op.f("fk_manifest_entries_manifest_id_manifests"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["object_sha256"],
            ["objects.sha256"],
            name=op.f("fk_manifest_entries_object_sha256_objects"),
        ),
        sa.PrimaryKeyConstraint("manifest_id", "path", name=op.f("pk_manifest_entries")),
    )
    with op.batch_alter_table("manifest_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_manifest_entries_object_sha256"), ["object_sha256"], unique=False
        )
        batch_op.create_index(
            "ix_manifest_entries_path_object_sha256", ["path", "object_sha256"], unique=False
        )

    op.create_table(
        "nodes",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=True),
        sa.Column("mac", sa.String(length=17), nullable=True),
        sa.Column("address", sa.String(length=45), nullable=True),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column("hardware", sa.JSON(), nullable=True),
        sa.Column("boot_image_id", sa.Integer(), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.CheckConstraint(
            "state IN ('pending', 'booting', 'up', 'busy', 'down', 'drained')",
            name=op.f("ck_nodes_state"),
        ),
        sa.ForeignKeyConstraint(
            ["boot_image_id"],
            ["boot_images.id"],
            name=op.f("fk_nodes_boot_image_id_boot_images"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodes")),
        sa.UniqueConstraint("mac", name=op.f("uq_nodes_mac")),
        sa.UniqueConstraint("name", name=op.f("uq_nodes_name")),
    )
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_nodes_boot_image_id"), ["boot_image_id"], unique=False)

    op.create_table(
        "cache_entries",
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("object_sha256", sa.String(length=64), nullable=False),
        sa.Column("cached_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_used", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"],
            ["nodes.id"],
            name=op.f("fk_cache_entries_node_id_nodes"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["object_sha256"],
            ["objects.sha256"],
            name=op.f("fk_cache_entries_object_sha256_objects"),
        ),
        sa.PrimaryKeyConstraint("node_id", "object_sha256", name=op.f("pk_cache_entries")),
    )
    with op.batch_alter_table("cache_entries", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_cache_entries_object_sha256"), ["object_sha256"], unique=False
        )

    op.create_table(
        "events",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=True),
        sa.Column("job_id", sa.Integer(), nullable=True),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.CheckConstraint(
            "level IN ('debug', 'info', 'warning', 'error')", name=op.f("ck_events_level")
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_events_job_id_jobs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_events_node_id_nodes"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_events")),
    )
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.create_index("ix_events_job_id_time", ["job_id", "time"], unique=False)
        batch_op.create_index("ix_events_node_id_time", ["node_id", "time"], unique=False)
        batch_op.create_index(batch_op.f("ix_events_time"), ["time"], unique=False)

    op.create_table(
        "job_nodes",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("accepted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("refused_reason", sa.Text(), nullable=True),
        sa.Column("objects_total", sa.Integer(), nullable=False),
        sa.Column("objects_hit", sa.Integer(), nullable=False),
        sa.Column("bytes_total", sa.BigInteger(), nullable=False),
        sa.Column("bytes_fetched", sa.BigInteger(), nullable=False),
        sa.Column("bytes_from_master", sa.BigInteger(), nullable=False),
        sa.Column("bytes_from_peers", sa.BigInteger(), nullable=False),
        sa.Column("fill_seconds", sa.Float(), nullable=True),
        sa.Column("exit_status", sa.Integer(), nullable=True),
        sa.CheckConstraint(
            "bytes_from_master + bytes_from_peers = bytes_fetched",
            name=op.f("ck_job_nodes_fetch_sources"),
        ),
        sa.CheckConstraint("objects_hit <= objects_total", name=op.f("ck_job_nodes_hits_le_total")),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_job_nodes_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(["node_id"], ["nodes.id"], name=op.f("fk_job_nodes_node_id_nodes")),
        sa.PrimaryKeyConstraint("job_id", "node_id", name=op.f("pk_job_nodes")),
    )
    with op.batch_alter_table("job_nodes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_nodes_node_id"), ["node_id"], unique=False)

    op.create_table(
        "cache_pins",
        sa.Column("node_id", sa.Integer(), nullable=False),
        sa.Column("object_sha256", sa.String(length=64), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["job_id"], ["jobs.id"], name=op.f("fk_cache_pins_job_id_jobs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["node_id", "object_sha256"],
            ["cache_entries.node_id", "cache_entries.object_sha256"],
            name=op.f("fk_cache_pins_node_id_cache_entries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("node_id", "object_sha256", "job_id", name=op.f("pk_cache_pins")),
    )
    with op.batch_alter_table("cache_pins", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cache_pins_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("cache_pins", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cache_pins_job_id"))

    op.drop_table("cache_pins")
    with op.batch_alter_table("job_nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_nodes_node_id"))

    op.drop_table("job_nodes")
    with op.batch_alter_table("events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_events_time"))
        batch_op.drop_index("ix_events_node_id_time")
        batch_op.drop_index("ix_events_job_id_time")

    op.drop_table("events")
    with op.batch_alter_table("cache_entries", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cache_entries_object_sha256"))

    op.drop_table("cache_entries")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nodes_boot_image_id"))

    op.drop_table("nodes")
    with op.batch_alter_table("manifest_entries", schema=None) as batch_op:
        batch_op.drop_index("ix_manifest_entries_path_object_sha256")
        batch_op.drop_index(batch_op.f("ix_manifest_entries_object_sha256"))

    op.drop_table("manifest_entries")
    with op.batch_alter_table("jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_jobs_uid"))
        batch_op.drop_index("ix_jobs_state_submitted_at")
        batch_op.drop_index(batch_op.f("ix_jobs_manifest_id"))

    op.drop_table("jobs")
    op.drop_table("objects")
    with op.batch_alter_table("manifests", schema=None) as batch_op:
        batch_op.drop_index("ix_manifests_owner_uid_created_at")

    op.drop_table("manifests")
    op.drop_table("boot_images")
