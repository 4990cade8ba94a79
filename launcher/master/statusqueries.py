"""The status page's database reads for one node's or one job's page (run in a
database thread through DbWork, once per page load: never per tick)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from launcher.state.models import (
    CacheEntry,
    Event,
    Job,
    JobNode,
    LateFile,
    ManifestEntry,
    Node,
    StoredObject,
)

#: Rows a page shows at most of a long list (boot log lines, cache entries,
#: manifest entries); the page says how many there are in all.
PAGE_ROWS = 500


@dataclass(frozen=True)
class NodePage:
    name: str
    state: str
    reason: str | None
    address: str | None
    last_seen: datetime | None
    #: (time, level, message) of its syslog lines and events, newest first
    log: list[tuple[datetime, str, str]]
    #: (sha256, size, cached_at, last_used), most recently used first
    cache: list[tuple[str, int, datetime, datetime]]
    cache_count: int


@dataclass(frozen=True)
class JobPage:
    job: int
    uid: int
    name: str | None
    state: str
    argv: list[str] | None
    submitted: datetime
    started: datetime | None
    ended: datetime | None
    exit_status: int | None
    reason: str | None
    manifest_id: str
    #: (path, kind, mode, size, sha256 or link target)
    entries: list[tuple[str, str, int, int | None, str | None]]
    entry_count: int
    #: per node: name and its fill figures (job_nodes)
    nodes: list[dict[str, Any]]
    #: (path, node, size, fetched_at) of files fetched late
    late: list[tuple[str, str | None, int | None, datetime]]


def node_page(session: Session, name: str) -> NodePage | None:
    node = session.scalars(select(Node).where(Node.name == name)).one_or_none()
    if node is None:
        return None
    log = session.execute(
        select(Event.time, Event.level, Event.message)
        .where(Event.node_id == node.id)
        .order_by(Event.time.desc(), Event.id.desc())
        .limit(PAGE_ROWS)
    ).all()
    cache = session.execute(
        select(
            CacheEntry.object_sha256, StoredObject.size, CacheEntry.cached_at, CacheEntry.last_used
        )
        .join(StoredObject, StoredObject.sha256 == CacheEntry.object_sha256)
        .where(CacheEntry.node_id == node.id)
        .order_by(CacheEntry.last_used.desc())
        .limit(PAGE_ROWS)
    ).all()
    count = session.scalar(
        select(func.count()).select_from(CacheEntry).where(CacheEntry.node_id == node.id)
    )
    return NodePage(
        name,
        node.state,
        node.state_reason,
        node.address,
        node.last_seen,
        [tuple(r) for r in log],  # type: ignore[misc]
        [tuple(r) for r in cache],  # type: ignore[misc]
        count or 0,
    )


def job_owner(session: Session, job_id: int) -> int | None:
    job = session.get(Job, job_id)
    return None if job is None else job.uid


def job_page(session: Session, job_id: int) -> JobPage | None:
    job = session.get(Job, job_id)
    if job is None:
        return None
    entries = session.execute(
        select(
            ManifestEntry.path,
            ManifestEntry.kind,
            ManifestEntry.mode,
            StoredObject.size,
            ManifestEntry.object_sha256,
            ManifestEntry.target,
        )
        .outerjoin(StoredObject, StoredObject.sha256 == ManifestEntry.object_sha256)
        .where(ManifestEntry.manifest_id == job.manifest_id)
        .order_by(ManifestEntry.path)
    ).all()
    nodes = []
    for part, node_name in session.execute(
        select(JobNode, Node.name)
        .join(Node, Node.id == JobNode.node_id)
        .where(JobNode.job_id == job.id)
        .order_by(Node.name)
    ).all():
        nodes.append(
            {
                "name": node_name,
                "objects_total": part.objects_total,
                "objects_hit": part.objects_hit,
                "bytes_total": part.bytes_total,
                "bytes_from_master": part.bytes_from_master,
                "bytes_from_peers": part.bytes_from_peers,
                "fill_seconds": part.fill_seconds,
                "exit_status": part.exit_status,
                "refused": part.refused_reason,
                "lost": part.lost_reason,
            }
        )
    late = session.execute(
        select(LateFile.path, Node.name, StoredObject.size, LateFile.fetched_at)
        .outerjoin(Node, Node.id == LateFile.node_id)
        .outerjoin(StoredObject, StoredObject.sha256 == LateFile.object_sha256)
        .where(LateFile.job_id == job.id)
        .order_by(LateFile.fetched_at)
    ).all()
    return JobPage(
        job.id,
        job.uid,
        job.name,
        job.state,
        job.argv,
        job.submitted_at,
        job.started_at,
        job.ended_at,
        job.exit_status,
        job.reason,
        job.manifest_id,
        [(p, k, m, s, sha or tgt) for p, k, m, s, sha, tgt in entries[:PAGE_ROWS]],
        len(entries),
        nodes,
        [tuple(r) for r in late],  # type: ignore[misc]
    )
