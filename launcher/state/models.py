"""The state database: nodes, boot images, objects, manifests, caches, jobs, events.

Schema changes go only through Alembic revisions in ``migrations/``; a test
checks that autogenerate finds no difference between these models and the head.
Enumerated columns are strings guarded by CHECK constraints (portable, readable
in ``sqlite3``/``psql``), listed once here as tuples.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Float,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from launcher.state.base import Base, UTCDateTime, utcnow

NODE_STATES = ("pending", "booting", "up", "busy", "down", "drained")
IMAGE_KINDS = ("kernel", "stage2", "stage3")
ENTRY_KINDS = ("file", "symlink", "dir")
SCHEDULERS = ("local", "slurm")
#: node_fail: a node of the job was lost while its tasks ran (Slurm's NODE_FAIL)
JOB_STATES = (
    "pending",
    "preparing",
    "running",
    "completed",
    "failed",
    "cancelled",
    "node_fail",
)
#: the states a job ends in
ENDED_STATES = ("completed", "failed", "cancelled", "node_fail")
EVENT_LEVELS = ("debug", "info", "warning", "error")

SHA256 = String(64)


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    quoted = ", ".join(f"'{v}'" for v in values)
    return CheckConstraint(f"{column} IN ({quoted})", name=name)


class BootImage(Base):
    """A kernel, stage-2 ramdisk or stage-3 supervisor root the master can serve."""

    __tablename__ = "boot_images"
    __table_args__ = (_one_of("kind", IMAGE_KINDS, "kind"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    sha256: Mapped[str] = mapped_column(SHA256, unique=True)
    size: Mapped[int] = mapped_column(BigInteger)
    built_from: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Node(Base):
    """A compute node, known by MAC from its first PXE request on."""

    __tablename__ = "nodes"
    __table_args__ = (_one_of("state", NODE_STATES, "state"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str | None] = mapped_column(String(64), unique=True)
    mac: Mapped[str | None] = mapped_column(String(17), unique=True)
    address: Mapped[str | None] = mapped_column(String(45))
    state: Mapped[str] = mapped_column(String(16), default="pending")
    state_reason: Mapped[str | None] = mapped_column(Text)
    hardware: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    boot_image_id: Mapped[int | None] = mapped_column(
        ForeignKey("boot_images.id", ondelete="SET NULL"), index=True
    )
    last_seen: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # sha256 of the node's secret token (issued when an admin accepts the node);
    # the token itself is only ever on the node.
    token_sha256: Mapped[str | None] = mapped_column(SHA256)
    # sha256 of the one-time boot ticket in the node's last iPXE script: stage 3
    # trades it for a control token (POST /boot/enroll) once, before it expires.
    boot_ticket_sha256: Mapped[str | None] = mapped_column(SHA256)
    boot_ticket_expires: Mapped[datetime | None] = mapped_column(UTCDateTime)

    boot_image: Mapped[BootImage | None] = relationship()
    boot_assignments: Mapped[list[BootAssignment]] = relationship(
        back_populates="node", cascade="all, delete-orphan"
    )


class BootAssignment(Base):
    """The image of one kind (kernel, stage2, stage3) an admin chose for a node.

    A node without a row for a kind boots the newest image of that kind.
    """

    __tablename__ = "boot_assignments"
    __table_args__ = (_one_of("kind", IMAGE_KINDS, "kind"),)

    node_id: Mapped[int] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    image_id: Mapped[int] = mapped_column(
        ForeignKey("boot_images.id", ondelete="CASCADE"), index=True
    )

    node: Mapped[Node] = relationship(back_populates="boot_assignments")
    image: Mapped[BootImage] = relationship()


class StoredObject(Base):
    """One content-addressed file body in the master's store."""

    __tablename__ = "objects"

    sha256: Mapped[str] = mapped_column(SHA256, primary_key=True)
    size: Mapped[int] = mapped_column(BigInteger)
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: who first brought it into the store: their store quota counts it
    owner_uid: Mapped[int | None] = mapped_column(Integer, index=True)


class Manifest(Base):
    """The exact file set a job was submitted with; id = sha256 of its canonical JSON."""

    __tablename__ = "manifests"
    __table_args__ = (Index("ix_manifests_owner_uid_created_at", "owner_uid", "created_at"),)

    id: Mapped[str] = mapped_column(SHA256, primary_key=True)
    owner_uid: Mapped[int] = mapped_column(Integer)
    root_program: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    #: what runs (cachefs.closure Closure.key) and beosub --strict ("fail"), for
    #: the Slurm jobs that run it (POST /manifests takes them, admission copies them)
    program_key: Mapped[str | None] = mapped_column(Text)
    late_policy: Mapped[str | None] = mapped_column(String(8))

    entries: Mapped[list[ManifestEntry]] = relationship(
        back_populates="manifest", cascade="all, delete-orphan", order_by="ManifestEntry.path"
    )


class ManifestEntry(Base):
    """One path of a manifest: a file (an object), a symlink (a target) or a dir."""

    __tablename__ = "manifest_entries"
    __table_args__ = (
        _one_of("kind", ENTRY_KINDS, "kind"),
        CheckConstraint(
            "(kind = 'file' AND object_sha256 IS NOT NULL AND target IS NULL)"
            " OR (kind = 'symlink' AND target IS NOT NULL AND object_sha256 IS NULL)"
            " OR (kind = 'dir' AND object_sha256 IS NULL AND target IS NULL)",
            name="kind_payload",
        ),
        # "Every version of a path" and "which jobs ran this path" start here.
        Index("ix_manifest_entries_path_object_sha256", "path", "object_sha256"),
    )

    manifest_id: Mapped[str] = mapped_column(
        ForeignKey("manifests.id", ondelete="CASCADE"), primary_key=True
    )
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    kind: Mapped[str] = mapped_column(String(8))
    mode: Mapped[int] = mapped_column(Integer)
    object_sha256: Mapped[str | None] = mapped_column(ForeignKey("objects.sha256"), index=True)
    target: Mapped[str | None] = mapped_column(Text)

    manifest: Mapped[Manifest] = relationship(back_populates="entries")
    object: Mapped[StoredObject | None] = relationship()


class Job(Base):
    """A job as submitted: by whom, with which manifest, and how it ended."""

    __tablename__ = "jobs"
    __table_args__ = (
        _one_of("scheduler", SCHEDULERS, "scheduler"),
        _one_of("state", JOB_STATES, "state"),
        UniqueConstraint("scheduler", "scheduler_job_id", name="uq_jobs_scheduler_job"),
        Index("ix_jobs_state_submitted_at", "state", "submitted_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scheduler: Mapped[str] = mapped_column(String(8))
    scheduler_job_id: Mapped[str | None] = mapped_column(String(64))
    name: Mapped[str | None] = mapped_column(String(128))
    uid: Mapped[int] = mapped_column(Integer, index=True)
    manifest_id: Mapped[str] = mapped_column(ForeignKey("manifests.id"), index=True)
    state: Mapped[str] = mapped_column(String(16), default="pending")
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    exit_status: Mapped[int | None] = mapped_column(Integer)
    #: why it ended when not by its tasks' own exits (a refusal, a lost node...)
    reason: Mapped[str | None] = mapped_column(Text)
    # What to run, as submitted: argv, cwd, environment; how many nodes and tasks.
    argv: Mapped[list[str] | None] = mapped_column(JSON)
    cwd: Mapped[str | None] = mapped_column(Text)
    environment: Mapped[dict[str, str] | None] = mapped_column(JSON)
    nodes_requested: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    tasks: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    # A batch job (``beosub --batch``) writes its output to files, not to a
    # watcher: the paths are absolute Slurm-style patterns (%j job, %n node,
    # %t task); stderr_path None means stderr goes with stdout.
    batch: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    stdout_path: Mapped[str | None] = mapped_column(Text)
    stderr_path: Mapped[str | None] = mapped_column(Text)
    label: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    #: what runs (cachefs.closure Closure.key): late files are learned against it
    program_key: Mapped[str | None] = mapped_column(Text)
    #: "fetch" or "fail" (beosub --strict); None: the config's [envroot] late
    late_policy: Mapped[str | None] = mapped_column(String(8))

    manifest: Mapped[Manifest] = relationship()
    nodes: Mapped[list[JobNode]] = relationship(back_populates="job", cascade="all, delete-orphan")


class JobNode(Base):
    """One node's part in a job: when it accepted, what its cache fill cost, how it ended."""

    __tablename__ = "job_nodes"
    __table_args__ = (
        CheckConstraint("objects_hit <= objects_total", name="hits_le_total"),
        CheckConstraint(
            "bytes_from_master + bytes_from_peers = bytes_fetched", name="fetch_sources"
        ),
    )

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), primary_key=True, index=True)
    accepted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    refused_reason: Mapped[str | None] = mapped_column(Text)
    # Cache fill for this job on this node: objects/bytes the manifest needs, how
    # many were already cached (hits), and where the missing bytes came from.
    objects_total: Mapped[int] = mapped_column(Integer, default=0)
    objects_hit: Mapped[int] = mapped_column(Integer, default=0)
    bytes_total: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_fetched: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_from_master: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_from_peers: Mapped[int] = mapped_column(BigInteger, default=0)
    fill_seconds: Mapped[float | None] = mapped_column(Float)
    exit_status: Mapped[int | None] = mapped_column(Integer)
    #: the node's tasks were lost (the node went silent, or its agent lost them)
    lost_reason: Mapped[str | None] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="nodes")
    node: Mapped[Node] = relationship()


class CacheEntry(Base):
    """An object a node's cache holds now."""

    __tablename__ = "cache_entries"

    node_id: Mapped[int] = mapped_column(
        ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True
    )
    object_sha256: Mapped[str] = mapped_column(
        ForeignKey("objects.sha256"), primary_key=True, index=True
    )
    cached_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_used: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    pins: Mapped[list[CachePin]] = relationship(
        back_populates="entry", cascade="all, delete-orphan"
    )


class CachePin(Base):
    """A job holding a cached object on a node: a pinned object is never evicted."""

    __tablename__ = "cache_pins"
    __table_args__ = (
        ForeignKeyConstraint(
            ["node_id", "object_sha256"],
            ["cache_entries.node_id", "cache_entries.object_sha256"],
            ondelete="CASCADE",
        ),
    )

    node_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    object_sha256: Mapped[str] = mapped_column(SHA256, primary_key=True)
    job_id: Mapped[int] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True, index=True
    )

    entry: Mapped[CacheEntry] = relationship(back_populates="pins")


class Event(Base):
    """A log line or state change: where nodes' network logs land."""

    __tablename__ = "events"
    __table_args__ = (
        _one_of("level", EVENT_LEVELS, "level"),
        Index("ix_events_node_id_time", "node_id", "time"),
        Index("ix_events_job_id_time", "job_id", "time"),
    )

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    time: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id", ondelete="SET NULL"))
    job_id: Mapped[int | None] = mapped_column(ForeignKey("jobs.id", ondelete="SET NULL"))
    level: Mapped[str] = mapped_column(String(8), default="info")
    source: Mapped[str] = mapped_column(String(32), default="master")
    message: Mapped[str] = mapped_column(Text)


class LateFile(Base):
    """A file a job fetched from the master while it ran: its manifest lacked it."""

    __tablename__ = "late_files"

    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    object_sha256: Mapped[str] = mapped_column(ForeignKey("objects.sha256"), index=True)
    mode: Mapped[int] = mapped_column(Integer)
    #: the first node that asked for it
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"))
    fetched_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LearnedFile(Base):
    """A path a user's program fetched late: its next submission ships it ahead."""

    __tablename__ = "learned_files"

    uid: Mapped[int] = mapped_column(Integer, primary_key=True)
    program_key: Mapped[str] = mapped_column(Text, primary_key=True)
    path: Mapped[str] = mapped_column(Text, primary_key=True)
    #: the version last fetched, and by which job
    object_sha256: Mapped[str] = mapped_column(SHA256)
    job_id: Mapped[int | None] = mapped_column(Integer)
    learned_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
