"""Writing what happened: manifests, jobs, acceptances, cache contents, events.

Functions take a Session inside the caller's transaction (``db.transaction``),
so a multi-row change lands whole or not at all. They validate their input and
raise StateError naming the bad value before writing anything.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select, update
from sqlalchemy.orm import Session

from cachefs.manifest import Manifest as CachefsManifest
from launcher.errors import StateError
from launcher.state.base import utcnow
from launcher.state.models import (
    ENTRY_KINDS,
    EVENT_LEVELS,
    SCHEDULERS,
    CacheEntry,
    CachePin,
    Event,
    Job,
    JobNode,
    Manifest,
    ManifestEntry,
    Node,
    StoredObject,
)
from launcher.wire import FillReport

_SHA256 = re.compile(r"[0-9a-f]{64}")
#: The tables the bulk cache writes insert into as core (no ORM bookkeeping per row).
_CACHE_ENTRIES = cast(Table, CacheEntry.__table__)
_CACHE_PINS = cast(Table, CachePin.__table__)


@dataclass(frozen=True)
class EntryRecord:
    """One manifest entry as the closure resolver produced it."""

    path: str
    kind: str
    mode: int
    sha256: str | None = None
    size: int | None = None
    target: str | None = None


def check_sha256(value: str, what: str = "sha256") -> str:
    if not _SHA256.fullmatch(value):
        raise StateError(f"{what} {value!r}: expected 64 lowercase hex digits")
    return value


def _check_entry(e: EntryRecord) -> None:
    if e.kind not in ENTRY_KINDS:
        raise StateError(f"manifest entry {e.path!r}: kind {e.kind!r} is not one of {ENTRY_KINDS}")
    if not e.path.startswith("/") or "\0" in e.path or "/../" in f"{e.path}/":
        raise StateError(f"manifest entry {e.path!r}: expected an absolute path without '..'")
    if e.kind == "file":
        if e.sha256 is None or e.size is None or e.size < 0:
            raise StateError(f"manifest entry {e.path!r}: a file needs sha256 and size")
        check_sha256(e.sha256, f"manifest entry {e.path!r}: sha256")
    elif e.kind == "symlink" and not e.target:
        raise StateError(f"manifest entry {e.path!r}: a symlink needs a target")


def record_manifest(
    session: Session,
    manifest_id: str,
    owner_uid: int,
    root_program: str,
    entries: Sequence[EntryRecord],
    *,
    created_at: datetime | None = None,
) -> Manifest:
    """Record a manifest and any objects not yet known; idempotent for the same id.

    The id is the sha256 of the canonical manifest document, which includes the
    owner and root program, so a second record of the same id must agree on them.
    Raises StateError on a malformed entry or a conflicting earlier record.
    """
    check_sha256(manifest_id, "manifest id")
    for entry in entries:
        _check_entry(entry)
    existing = session.get(Manifest, manifest_id)
    if existing is not None:
        if (existing.owner_uid, existing.root_program) != (owner_uid, root_program):
            raise StateError(
                f"manifest {manifest_id} is already recorded for uid {existing.owner_uid} "
                f"and {existing.root_program}, not uid {owner_uid} and {root_program}"
            )
        return existing
    now = created_at or utcnow()
    sizes = {e.sha256: e.size for e in entries if e.sha256 is not None and e.size is not None}
    known = set(session.scalars(select(StoredObject.sha256).where(StoredObject.sha256.in_(sizes))))
    session.add_all(
        StoredObject(sha256=sha, size=size, first_seen=now, owner_uid=owner_uid)
        for sha, size in sizes.items()
        if sha not in known
    )
    manifest = Manifest(
        id=manifest_id, owner_uid=owner_uid, root_program=root_program, created_at=now
    )
    manifest.entries = [
        ManifestEntry(
            path=e.path, kind=e.kind, mode=e.mode, object_sha256=e.sha256, target=e.target
        )
        for e in entries
    ]
    session.add(manifest)
    session.flush()
    return manifest


def record_system_objects(session: Session, objects: Mapping[str, int]) -> None:
    """Record objects (sha256 -> size) the master itself put in a manifest (its
    /etc) as nobody's, so no user's store quota is charged for them; objects
    already known keep their owner. Raises StateError for a malformed digest."""
    for sha in objects:
        check_sha256(sha)
    known = set(
        session.scalars(select(StoredObject.sha256).where(StoredObject.sha256.in_(list(objects))))
    )
    now = utcnow()
    session.add_all(
        StoredObject(sha256=sha, size=size, first_seen=now, owner_uid=None)
        for sha, size in objects.items()
        if sha not in known
    )
    session.flush()


def record_submitted_manifest(
    session: Session, manifest: CachefsManifest, *, created_at: datetime | None = None
) -> Manifest:
    """Record a cachefs manifest made for a submission (it must carry its owner)."""
    if manifest.owner is None:
        raise StateError(f"manifest {manifest.id} has no owner; submissions are owned")
    entries = [EntryRecord(e.path, e.kind, e.mode, e.sha256, e.size, e.target) for e in manifest]
    return record_manifest(
        session, manifest.id, manifest.owner, manifest.root, entries, created_at=created_at
    )


def record_job(
    session: Session,
    *,
    scheduler: str,
    uid: int,
    manifest_id: str,
    scheduler_job_id: str | None = None,
    name: str | None = None,
    submitted_at: datetime | None = None,
) -> Job:
    """Record a submitted job. Raises StateError for an unknown scheduler or manifest."""
    if scheduler not in SCHEDULERS:
        raise StateError(f"scheduler {scheduler!r}: expected one of {SCHEDULERS}")
    if session.get(Manifest, manifest_id) is None:
        raise StateError(f"job refers to manifest {manifest_id}, which is not recorded")
    job = Job(
        scheduler=scheduler,
        scheduler_job_id=scheduler_job_id,
        uid=uid,
        manifest_id=manifest_id,
        name=name,
        submitted_at=submitted_at or utcnow(),
    )
    session.add(job)
    session.flush()
    return job


def record_acceptance(
    session: Session, job: Job, node: Node, fill: FillReport, *, at: datetime | None = None
) -> JobNode:
    """Record that ``node`` accepted ``job`` after a cache fill costing ``fill``."""
    (row,) = record_acceptances(session, job, [(node, fill)], at=at)
    return row


def record_acceptances(
    session: Session,
    job: Job,
    fills: Sequence[tuple[Node, FillReport]],
    *,
    at: datetime | None = None,
) -> list[JobNode]:
    """Record that each node accepted ``job`` after a cache fill costing its report
    (one flush for all of them); nothing is written if one report is impossible."""
    for node, fill in fills:
        if not 0 <= fill.objects_hit <= fill.objects_total:
            raise StateError(
                f"fill report for job {job.id} on {node.name}: "
                f"{fill.objects_hit} hits of {fill.objects_total} objects"
            )
    when = at or utcnow()
    rows = [
        JobNode(
            job=job,
            node=node,
            accepted_at=when,
            objects_total=fill.objects_total,
            objects_hit=fill.objects_hit,
            bytes_total=fill.bytes_total,
            bytes_fetched=fill.bytes_from_master + fill.bytes_from_peers,
            bytes_from_master=fill.bytes_from_master,
            bytes_from_peers=fill.bytes_from_peers,
            fill_seconds=fill.fill_seconds,
        )
        for node, fill in fills
    ]
    session.add_all(rows)
    session.flush()
    return rows


#: Node ids per statement of the bulk cache writes (SQLite binds at most 32,766
#: values in one statement; this keeps far below it with 64 digests beside).
NODE_CHUNK = 500


def record_cached(
    session: Session, node: Node, sha256s: Iterable[str], *, at: datetime | None = None
) -> None:
    """Record that ``node``'s cache now holds these objects (touching ones it had)."""
    record_cached_many(session, [node.id], sha256s, at=at)


def record_cached_many(
    session: Session, node_ids: Sequence[int], sha256s: Iterable[str], *, at: datetime | None = None
) -> None:
    """Record that each of ``node_ids``' caches now holds these objects (touching
    the ones it had): a few statements whatever the number of nodes, not one per
    node and object (a job on 1,000 nodes starts with one such call)."""
    now = at or utcnow()
    wanted = sorted(set(sha256s))
    if not wanted:
        return
    session.flush()
    for chunk in _chunks(sorted(set(node_ids))):
        present = CacheEntry.node_id.in_(chunk) & CacheEntry.object_sha256.in_(wanted)
        have = {
            (n, sha)
            for n, sha in session.execute(
                select(CacheEntry.node_id, CacheEntry.object_sha256).where(present)
            )
        }
        if have:
            session.execute(
                update(CacheEntry).where(present).values(last_used=now),
                execution_options={"synchronize_session": False},
            )
        rows = [
            {"node_id": n, "object_sha256": sha, "cached_at": now, "last_used": now}
            for n in chunk
            for sha in wanted
            if (n, sha) not in have
        ]
        if rows:
            session.execute(insert(_CACHE_ENTRIES), rows)


def pin(session: Session, node: Node, job: Job, sha256s: Iterable[str]) -> None:
    """Pin cached objects on ``node`` for ``job``; each must be cached there."""
    pin_many(session, {node.id: node.name or f"#{node.id}"}, job.id, sha256s)


def pin_many(
    session: Session, nodes: Mapping[int, str], job_id: int, sha256s: Iterable[str]
) -> None:
    """Pin cached objects for job ``job_id`` on each node of ``nodes`` (id -> name,
    for the error); each object must be cached there. A few statements whatever
    the number of nodes."""
    wanted = sorted(set(sha256s))
    if not wanted:
        return
    session.flush()
    for chunk in _chunks(sorted(nodes)):
        cached = _pairs(
            session.execute(
                select(CacheEntry.node_id, CacheEntry.object_sha256).where(
                    CacheEntry.node_id.in_(chunk), CacheEntry.object_sha256.in_(wanted)
                )
            )
        )
        pinned = _pairs(
            session.execute(
                select(CachePin.node_id, CachePin.object_sha256).where(
                    CachePin.job_id == job_id, CachePin.node_id.in_(chunk)
                )
            )
        )
        rows = []
        for n in chunk:
            for sha in wanted:
                if (n, sha) not in cached:
                    raise StateError(f"cannot pin {sha} for job {job_id}: not cached on {nodes[n]}")
                if (n, sha) not in pinned:
                    rows.append({"node_id": n, "object_sha256": sha, "job_id": job_id})
        if rows:
            session.execute(insert(_CACHE_PINS), rows)


def _pairs(rows: Iterable[Any]) -> set[tuple[int, str]]:
    return {(int(n), str(sha)) for n, sha in rows}


def _chunks(ids: list[int]) -> Iterator[list[int]]:
    for i in range(0, len(ids), NODE_CHUNK):
        yield ids[i : i + NODE_CHUNK]


def unpin_job(session: Session, node: Node, job: Job) -> int:
    """Drop every pin ``job`` holds on ``node``; returns how many. Idempotent."""
    result = session.execute(
        delete(CachePin).where(CachePin.node_id == node.id, CachePin.job_id == job.id)
    )
    return int(result.rowcount)  # type: ignore[attr-defined]


def record_event(
    session: Session,
    message: str,
    *,
    level: str = "info",
    source: str = "master",
    node: Node | None = None,
    job: Job | None = None,
    at: datetime | None = None,
) -> Event:
    if level not in EVENT_LEVELS:
        raise StateError(f"event level {level!r}: expected one of {EVENT_LEVELS}")
    event = Event(
        message=message,
        level=level,
        source=source,
        time=at or utcnow(),
        node_id=node.id if node else None,
        job_id=job.id if job else None,
    )
    session.add(event)
    return event
