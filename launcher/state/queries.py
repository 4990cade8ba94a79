"""Accounting queries over the state database, as plain functions over a Session.

``beoacct`` prints these; tests assert their exact rows on a fixture cluster.
Each returns a list of frozen dataclasses (rows), ordered deterministically.
"Ran" means the job started (``started_at`` is set) on a node that accepted it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from launcher.errors import NotFoundError
from launcher.state.models import (
    CacheEntry,
    CachePin,
    Event,
    Job,
    JobNode,
    LateFile,
    LearnedFile,
    Manifest,
    ManifestEntry,
    Node,
    StoredObject,
)


@dataclass(frozen=True)
class JobFileRow:
    """A job that ran a file version on a node."""

    job_id: int
    scheduler: str
    scheduler_job_id: str | None
    uid: int
    node: str
    path: str
    sha256: str
    started_at: datetime


@dataclass(frozen=True)
class JobVersionRow:
    """The version of a path one job used on one node that accepted it."""

    job_id: int
    scheduler: str
    scheduler_job_id: str | None
    node: str
    path: str
    sha256: str
    accepted_at: datetime
    #: fetched from the master while the job ran (its manifest lacked it)
    late: bool = False


@dataclass(frozen=True)
class HolderRow:
    """A node whose cache holds an object now."""

    node: str
    sha256: str
    cached_at: datetime
    last_used: datetime
    pinned_by: tuple[int, ...]


@dataclass(frozen=True)
class VersionRow:
    """One version (object) a path has had across all manifests."""

    path: str
    sha256: str
    size: int
    first_seen: datetime
    last_seen: datetime
    manifests: int
    jobs: int


@dataclass(frozen=True)
class DiffRow:
    """A path whose content differs between two jobs' manifests.

    ``old``/``new`` are a sha256 for a file, ``-> target`` for a symlink, ``dir``
    for a directory, or None where the path is absent on that side.
    """

    path: str
    old: str | None
    new: str | None


@dataclass(frozen=True)
class UsageRow:
    """Cache fill totals for one job or one node."""

    key: str
    jobs: int
    nodes: int
    objects_total: int
    objects_hit: int
    bytes_total: int
    bytes_fetched: int
    bytes_from_master: int
    bytes_from_peers: int
    fill_seconds: float

    @property
    def hit_rate(self) -> float | None:
        """Fraction of needed objects already in cache; None when nothing was needed."""
        return self.objects_hit / self.objects_total if self.objects_total else None


def find_job(session: Session, ref: str) -> Job:
    """The job named by ``ref``: a Beolaunch job id (``42``) or ``SCHEDULER:ID``
    (``slurm:1234``, ``local:7``) for the scheduler's own id.

    Raises NotFoundError naming the reference.
    """
    scheduler, sep, sched_id = ref.partition(":")
    if sep:
        job = session.scalars(
            select(Job).where(Job.scheduler == scheduler, Job.scheduler_job_id == sched_id)
        ).first()
    elif ref.isdigit():
        job = session.get(Job, int(ref))
    else:
        raise NotFoundError(f"job '{ref}': expected a job id (42) or SCHEDULER:ID (slurm:1234)")
    if job is None:
        raise NotFoundError(f"no job '{ref}' in the state database")
    return job


def _ran(
    session: Session, versions: dict[str, list[tuple[str, str]]], manifests: Select[Any]
) -> list[JobFileRow]:
    """Rows for every started job on every node that accepted it, whose manifest is
    in the ``manifests`` subquery; ``versions`` maps manifest id -> (path, sha256)."""
    wanted = manifests.distinct().subquery()
    stmt = (
        select(
            Job.id,
            Job.scheduler,
            Job.scheduler_job_id,
            Job.uid,
            Node.name,
            Node.id,
            Job.started_at,
            Job.manifest_id,
        )
        .join(wanted, wanted.c.manifest_id == Job.manifest_id)
        .join(JobNode, JobNode.job_id == Job.id)
        .join(Node, Node.id == JobNode.node_id)
        .where(Job.started_at.is_not(None), JobNode.accepted_at.is_not(None))
    )
    rows = [
        JobFileRow(job_id, sched, sched_id, uid, name or f"#{node_id}", path, sha, started)  # type: ignore[arg-type]
        for job_id, sched, sched_id, uid, name, node_id, started, mid in session.execute(stmt)
        for path, sha in versions.get(mid, ())
    ]
    return sorted(rows, key=lambda r: (r.job_id, r.node, r.path))


def jobs_with_object(session: Session, sha256: str) -> list[JobFileRow]:
    """Every (job, node, path) that ran the object ``sha256``, under any path."""
    manifests = select(ManifestEntry.manifest_id).where(ManifestEntry.object_sha256 == sha256)
    versions: dict[str, list[tuple[str, str]]] = {}
    for mid, path in session.execute(manifests.add_columns(ManifestEntry.path)):
        versions.setdefault(mid, []).append((path, sha256))
    return _ran(session, versions, manifests)


def jobs_with_path(session: Session, path: str) -> list[JobFileRow]:
    """Every (job, node) that ran ``path``, with the version (sha256) each job had.

    A symlink in a manifest is followed to the file it names in the same manifest,
    so asking for ``libfoo.so.1`` reports the version ``libfoo.so.1.2.3`` had.
    """
    manifests = select(ManifestEntry.manifest_id).where(ManifestEntry.path == path)
    versions = {mid: [(path, sha)] for mid, sha in _resolve(session, path).items()}
    return _ran(session, versions, manifests)


_MAX_SYMLINKS = 40  # Linux's MAXSYMLINKS


def _resolve(session: Session, path: str) -> dict[str, str]:
    """For each manifest holding ``path``: the sha256 it resolves to there.

    A symlink is followed within its manifest (relative targets against the
    link's directory), up to Linux's limit of 40 links; a dangling link or a
    directory gives no version. Plain columns, no ORM objects: this runs once
    per manifest that ever had the path.
    """
    out: dict[str, str] = {}
    stmt = select(
        ManifestEntry.manifest_id,
        ManifestEntry.kind,
        ManifestEntry.object_sha256,
        ManifestEntry.target,
    ).where(ManifestEntry.path == path)
    for mid, kind, sha, target in session.execute(stmt):
        current = path
        for _ in range(_MAX_SYMLINKS):
            if kind == "file" and sha is not None:
                out[mid] = sha
                break
            if kind != "symlink" or target is None:
                break
            base = current.rsplit("/", 1)[0] or "/"
            current = _normpath(target if target.startswith("/") else f"{base}/{target}")
            row = session.execute(
                select(ManifestEntry.kind, ManifestEntry.object_sha256, ManifestEntry.target).where(
                    ManifestEntry.manifest_id == mid, ManifestEntry.path == current
                )
            ).first()
            if row is None:
                break
            kind, sha, target = row
    return out


def job_versions(session: Session, ref: str, path: str | None = None) -> list[JobVersionRow]:
    """Which version (sha256) of ``path`` (default: of every file) job ``ref`` used,
    on each node that accepted it; ``ref`` as for :func:`find_job` (``slurm:1234``).
    Files the job fetched late are rows with ``late`` set, on the node that
    fetched them first.

    A symlink is followed within the job's manifest, as in :func:`jobs_with_path`.
    Raises NotFoundError for an unknown job.
    """
    job = find_job(session, ref)
    if path is None:
        versions = [
            (p, sha)
            for p, sha in session.execute(
                select(ManifestEntry.path, ManifestEntry.object_sha256).where(
                    ManifestEntry.manifest_id == job.manifest_id, ManifestEntry.kind == "file"
                )
            )
            if sha is not None
        ]
    else:
        found = _resolve(session, path).get(job.manifest_id)
        versions = [] if found is None else [(path, found)]
    late_stmt = select(LateFile.path, LateFile.object_sha256, LateFile.node_id).where(
        LateFile.job_id == job.id
    )
    if path is not None:
        late_stmt = late_stmt.where(LateFile.path == path)
    late = session.execute(late_stmt).all()
    nodes = session.execute(
        select(Node.name, Node.id, JobNode.accepted_at)
        .join(JobNode, JobNode.node_id == Node.id)
        .where(JobNode.job_id == job.id, JobNode.accepted_at.is_not(None))
    ).all()
    rows = [
        JobVersionRow(job.id, job.scheduler, job.scheduler_job_id, name or f"#{nid}", p, sha, at)
        for name, nid, at in nodes
        if at is not None
        for p, sha in versions
    ]
    rows += [
        JobVersionRow(
            job.id, job.scheduler, job.scheduler_job_id, name or f"#{nid}", p, sha, at, late=True
        )
        for name, nid, at in nodes
        if at is not None
        for p, sha, fetched_by in late
        if fetched_by in (None, nid)
    ]
    return sorted(rows, key=lambda r: (r.node, r.path))


def learned_paths(session: Session, uid: int, program_key: str) -> list[str]:
    """The paths ``uid``'s program ``program_key`` fetched late before, sorted."""
    return list(
        session.scalars(
            select(LearnedFile.path)
            .where(LearnedFile.uid == uid, LearnedFile.program_key == program_key)
            .order_by(LearnedFile.path)
        )
    )


def _normpath(path: str) -> str:
    parts: list[str] = []
    for part in path.split("/"):
        if part in ("", "."):
            continue
        if part == "..":
            if parts:
                parts.pop()
        else:
            parts.append(part)
    return "/" + "/".join(parts)


def nodes_holding(session: Session, sha256: str) -> list[HolderRow]:
    """The nodes whose caches hold ``sha256`` now, with the jobs pinning it."""
    stmt = (
        select(CacheEntry, Node)
        .join(Node, Node.id == CacheEntry.node_id)
        .where(CacheEntry.object_sha256 == sha256)
        .order_by(Node.name)
    )
    out = []
    for entry, node in session.execute(stmt):
        pins = tuple(sorted(p.job_id for p in entry.pins))
        out.append(
            HolderRow(node.name or f"#{node.id}", sha256, entry.cached_at, entry.last_used, pins)
        )
    return out


def path_versions(session: Session, path: str, *, owner_uid: int | None = None) -> list[VersionRow]:
    """Every version of ``path`` seen in any manifest (with ``owner_uid``, in that
    user's manifests only), oldest first: when the first and last manifest holding
    it were made, and how many manifests and jobs had it. A symlink is followed
    within its manifest, as in :func:`jobs_with_path`."""
    by_manifest = _resolve(session, path)
    if owner_uid is not None:
        owned = set(
            session.scalars(
                select(Manifest.id).where(
                    Manifest.owner_uid == owner_uid, Manifest.id.in_(list(by_manifest))
                )
            )
        )
        by_manifest = {mid: sha for mid, sha in by_manifest.items() if mid in owned}
    holding = select(ManifestEntry.manifest_id).where(ManifestEntry.path == path).subquery()
    jobs_per_manifest: dict[str, int] = {
        mid: n
        for mid, n in session.execute(
            select(Job.manifest_id, func.count(Job.id))
            .join(holding, holding.c.manifest_id == Job.manifest_id)
            .group_by(Job.manifest_id)
        )
    }
    created: dict[str, datetime] = {
        mid: at
        for mid, at in session.execute(
            select(Manifest.id, Manifest.created_at).join(
                holding, holding.c.manifest_id == Manifest.id
            )
        )
    }
    seen: dict[str, list[datetime]] = {}
    jobs: dict[str, int] = {}
    for mid, sha in by_manifest.items():
        seen.setdefault(sha, []).append(created[mid])
        jobs[sha] = jobs.get(sha, 0) + jobs_per_manifest.get(mid, 0)
    sizes: dict[str, int] = {
        sha: size
        for sha, size in session.execute(
            select(StoredObject.sha256, StoredObject.size).where(StoredObject.sha256.in_(seen))
        )
    }
    rows = [
        VersionRow(path, sha, sizes[sha], min(times), max(times), len(times), jobs[sha])
        for sha, times in seen.items()
    ]
    return sorted(rows, key=lambda r: (r.first_seen, r.sha256))


def _describe(entry: ManifestEntry | None) -> str | None:
    if entry is None:
        return None
    if entry.kind == "file":
        return entry.object_sha256
    if entry.kind == "symlink":
        return f"-> {entry.target}"
    return "dir"


def _job_paths(session: Session, job: Job) -> dict[str, str | None]:
    """Each path of the job's manifest, and each file it fetched late, described."""
    out = {
        e.path: _describe(e)
        for e in session.scalars(
            select(ManifestEntry).where(ManifestEntry.manifest_id == job.manifest_id)
        )
    }
    for path, sha in session.execute(
        select(LateFile.path, LateFile.object_sha256).where(LateFile.job_id == job.id)
    ):
        out.setdefault(path, f"{sha} (late)")
    return out


def manifest_diff(session: Session, job_a: str, job_b: str) -> list[DiffRow]:
    """What differs between the files of two jobs (their manifests and the files
    they fetched late, marked ``(late)``): changed, added (old None) and removed
    (new None) paths, by path. Raises NotFoundError for a bad job."""
    a = _job_paths(session, find_job(session, job_a))
    b = _job_paths(session, find_job(session, job_b))
    rows = [DiffRow(p, a.get(p), b.get(p)) for p in sorted(set(a) | set(b))]
    return [r for r in rows if r.old != r.new]


def usage_by_job(
    session: Session, job_ids: Sequence[int] | None = None, *, uid: int | None = None
) -> list[UsageRow]:
    """Bytes moved and cache hits per job (summed over its nodes), by job id; with
    ``uid``, that user's jobs only."""
    stmt = _usage_select(Job.id).join(Job, Job.id == JobNode.job_id).group_by(Job.id)
    if job_ids is not None:
        stmt = stmt.where(Job.id.in_(job_ids))
    if uid is not None:
        stmt = stmt.where(Job.uid == uid)
    return [_usage_row(str(row[0]), row[1:]) for row in session.execute(stmt.order_by(Job.id))]


def scheduler_refs(
    session: Session, job_ids: Sequence[int] | None = None, *, uid: int | None = None
) -> dict[int, str | None]:
    """``SCHEDULER:ID`` (``slurm:1234``) of each job in ``job_ids`` (None: of every
    job; with ``uid``, that user's), None where the scheduler gave none.

    For every job, ask with None rather than listing them: one bound parameter a
    job is slow to send, and SQLite refuses more than 32,766 in a statement."""
    stmt = select(Job.id, Job.scheduler, Job.scheduler_job_id)
    if job_ids is not None:
        stmt = stmt.where(Job.id.in_(job_ids))
    if uid is not None:
        stmt = stmt.where(Job.uid == uid)
    return {
        jid: None if sid is None else f"{sched}:{sid}" for jid, sched, sid in session.execute(stmt)
    }


def usage_by_node(session: Session, *, uid: int | None = None) -> list[UsageRow]:
    """Bytes moved and cache hits per node (summed over the jobs it accepted); with
    ``uid``, over that user's jobs only."""
    stmt = (
        _usage_select(Node.name)
        .join(Node, Node.id == JobNode.node_id)
        .group_by(Node.name)
        .order_by(Node.name)
    )
    if uid is not None:
        stmt = stmt.join(Job, Job.id == JobNode.job_id).where(Job.uid == uid)
    return [_usage_row(str(row[0]), row[1:]) for row in session.execute(stmt)]


def _usage_select(key: Any) -> Any:
    return (
        select(
            key,
            func.count(func.distinct(JobNode.job_id)),
            func.count(func.distinct(JobNode.node_id)),
            func.coalesce(func.sum(JobNode.objects_total), 0),
            func.coalesce(func.sum(JobNode.objects_hit), 0),
            func.coalesce(func.sum(JobNode.bytes_total), 0),
            func.coalesce(func.sum(JobNode.bytes_fetched), 0),
            func.coalesce(func.sum(JobNode.bytes_from_master), 0),
            func.coalesce(func.sum(JobNode.bytes_from_peers), 0),
            func.coalesce(func.sum(JobNode.fill_seconds), 0.0),
        )
        .select_from(JobNode)
        .where(JobNode.accepted_at.is_not(None))
    )


def _usage_row(key: str, values: Sequence[Any]) -> UsageRow:
    jobs, nodes, o_total, o_hit, b_total, b_fetched, b_master, b_peers, seconds = values
    return UsageRow(
        key,
        int(jobs),
        int(nodes),
        int(o_total),
        int(o_hit),
        int(b_total),
        int(b_fetched),
        int(b_master),
        int(b_peers),
        float(seconds),
    )


def objects_in_use(session: Session, since: datetime) -> set[str]:
    """Objects the store must keep: those of manifests made since ``since`` (the
    retention period), of manifests whose jobs have not finished, and pinned in
    any node's cache. What is left may be garbage collected."""
    unfinished = select(Job.manifest_id).where(Job.state.in_(("pending", "preparing", "running")))
    stmt = (
        select(ManifestEntry.object_sha256)
        .join(Manifest, Manifest.id == ManifestEntry.manifest_id)
        .where(
            ManifestEntry.object_sha256.is_not(None),
            (Manifest.created_at >= since) | Manifest.id.in_(unfinished),
        )
        .distinct()
    )
    keep = {sha for sha in session.scalars(stmt) if sha is not None}
    keep.update(session.scalars(select(CachePin.object_sha256).distinct()))
    return keep


UNFINISHED_STATES = ("pending", "preparing", "running")


def job_summaries(session: Session, *, finished: bool) -> list[dict[str, Any]]:
    """One row per job, oldest first (unfinished ones only unless ``finished``):
    what ``beostat jobs`` prints, from the master or straight from the database.

    ``reason``: why a job that did not complete ended (its last warning event,
    without the leading ``job N``), None otherwise."""
    stmt = select(Job).order_by(Job.id)
    if not finished:
        stmt = stmt.where(Job.state.in_(UNFINISHED_STATES))
    jobs = list(session.scalars(stmt))
    reasons = _end_reasons(session, [j.id for j in jobs if j.state in ("failed", "cancelled")])
    return [
        {
            "job": j.id,
            "scheduler": j.scheduler,
            "scheduler_id": j.scheduler_job_id,
            "name": j.name,
            "uid": j.uid,
            "state": j.state,
            "nodes": j.nodes_requested,
            "tasks": j.tasks,
            "manifest": j.manifest_id[:12],
            "submitted": j.submitted_at,
            "exit": j.exit_status,
            "reason": j.reason or reasons.get(j.id),
        }
        for j in jobs
    ]


def _end_reasons(session: Session, job_ids: list[int]) -> dict[int, str]:
    """job id -> the message of its last warning or error event, ``job N `` cut off."""
    reasons: dict[int, str] = {}
    for start in range(0, len(job_ids), 500):  # bounded IN lists
        rows = session.execute(
            select(Event.job_id, Event.message)
            .where(Event.job_id.in_(job_ids[start : start + 500]))
            .where(Event.level.in_(("warning", "error")))
            .order_by(Event.time, Event.id)
        )
        for job_id, message in rows:
            if job_id is not None:
                reasons[job_id] = message.removeprefix(f"job {job_id} ")
    return reasons
