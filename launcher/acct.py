"""What ``beoacct`` shows, and to whom.

Accounting names files (paths under people's homes), digests and jobs. As
Slurm's ``PrivateData=jobs,usage``: root sees everything; any other user sees
only their own jobs, their own manifests' paths, the usage of their own jobs,
and the nodes holding objects of their own manifests. Root reads the state
database itself (it is root's only, mode 0600); a user asks the master on the
user socket (``POST /acct``), which knows the caller from ``SO_PEERCRED`` and
applies these rules (:func:`table` with ``viewer`` set).

A job that exists but is not the viewer's is answered like one that does not:
"no job 'N' of yours", so a user cannot probe other users' job ids.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from launcher.errors import AcctRequestError, NotFoundError
from launcher.state import queries
from launcher.state.models import Job, Manifest, ManifestEntry
from launcher.state.record import check_sha256
from launcher.state.timeline import JobTimelineRow, job_timeline

COMMANDS = ("jobs", "files", "holders", "versions", "diff", "usage", "timeline")
_JOB_COLUMNS = ("job_id", "scheduler", "scheduler_job_id", "uid", "node", "path", "sha256")
_USAGE_COLUMNS = (
    "jobs",
    "nodes",
    "objects_total",
    "objects_hit",
    "hit_rate",
    "bytes_total",
    "bytes_fetched",
    "bytes_from_master",
    "bytes_from_peers",
    "fill_seconds",
)

_USAGE_FIELDS = tuple(f.name for f in dataclasses.fields(queries.UsageRow))


@dataclass(frozen=True)
class Table:
    """Rows (dicts keyed by ``columns``) and what to say when there are none."""

    rows: list[dict[str, Any]]
    columns: tuple[str, ...]
    empty: str

    def document(self) -> dict[str, Any]:
        return {"rows": self.rows, "columns": list(self.columns), "empty": self.empty}


def _ref(scheduler: str, scheduler_job_id: str | None) -> str | None:
    """``slurm:1234``: how a job is named to Slurm users (and accepted back as JOB)."""
    return None if scheduler_job_id is None else f"{scheduler}:{scheduler_job_id}"


def _arg(args: dict[str, Any], name: str, *, required: bool = True) -> Any:
    value = args.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise AcctRequestError(f"acct: '{name}' must be a non-empty string")
    return value


def _restricted(viewer: int | None) -> bool:
    return viewer is not None and viewer != 0


def _own_job(session: Session, ref: str, viewer: int | None) -> Job:
    job = queries.find_job(session, ref)
    if _restricted(viewer) and job.uid != viewer:
        raise NotFoundError(f"no job '{ref}' of yours in the state database")
    return job


def _own_manifests(session: Session, viewer: int) -> Any:
    return select(Manifest.id).where(Manifest.owner_uid == viewer)


def table(session: Session, command: str, args: dict[str, Any], viewer: int | None) -> Table:
    """The rows of ``beoacct COMMAND`` with ``args`` as ``viewer`` may see them
    (None or 0: everything). Raises AcctRequestError for an unknown command or a
    bad argument, NotFoundError for a job not found (or not the viewer's)."""
    answer = _COMMANDS.get(command)
    if answer is None:
        raise AcctRequestError(
            f"acct: unknown command {command!r}; expected one of {', '.join(COMMANDS)}"
        )
    return answer(session, args, viewer)


def _files(session: Session, args: dict[str, Any], viewer: int | None) -> Table:
    job = _own_job(session, _arg(args, "job"), viewer)
    rows = queries.job_versions(session, str(job.id), _arg(args, "path", required=False))
    out = [
        {**dataclasses.asdict(r), "scheduler_job": _ref(r.scheduler, r.scheduler_job_id)}
        for r in rows
    ]
    cols = ("job_id", "scheduler_job", "node", "path", "sha256", "late", "accepted_at")
    return Table(out, cols, f"job {args['job']} has no such file on an accepting node")


def _holders(session: Session, args: dict[str, Any], viewer: int | None) -> Table:
    sha = check_sha256(_arg(args, "sha256"))
    holders = queries.nodes_holding(session, sha)
    if viewer is not None and _restricted(viewer):
        mine = session.scalars(
            select(ManifestEntry.manifest_id)
            .where(ManifestEntry.object_sha256 == sha)
            .where(ManifestEntry.manifest_id.in_(_own_manifests(session, viewer)))
        ).first()
        own_jobs = set(session.scalars(select(Job.id).where(Job.uid == viewer)))
        holders = [
            dataclasses.replace(h, pinned_by=tuple(j for j in h.pinned_by if j in own_jobs))
            for h in holders
            if mine is not None
        ]
    cols = ("node", "sha256", "cached_at", "last_used", "pinned_by")
    return Table([dataclasses.asdict(r) for r in holders], cols, "no node holds it")


def _versions(session: Session, args: dict[str, Any], viewer: int | None) -> Table:
    path = _arg(args, "path")
    owner = viewer if _restricted(viewer) else None
    rows = queries.path_versions(session, path, owner_uid=owner)
    cols = ("path", "sha256", "size", "first_seen", "last_seen", "manifests", "jobs")
    return Table([dataclasses.asdict(r) for r in rows], cols, f"no manifest has {path}")


def _diff(session: Session, args: dict[str, Any], viewer: int | None) -> Table:
    a, b = (_own_job(session, _arg(args, k), viewer) for k in ("job_a", "job_b"))
    rows = queries.manifest_diff(session, str(a.id), str(b.id))
    return Table(
        [dataclasses.asdict(r) for r in rows],
        ("path", "old", "new"),
        "the two jobs ran the same files",
    )


def _jobs(session: Session, args: dict[str, Any], viewer: int | None) -> Table:
    sha256, path = args.get("sha256"), args.get("path")
    if (sha256 is None) == (path is None):
        raise AcctRequestError("give exactly one of --sha256 or --path")
    if sha256 is not None:
        rows = queries.jobs_with_object(session, check_sha256(_arg(args, "sha256")))
    else:
        rows = queries.jobs_with_path(session, _arg(args, "path"))
    scheduler = args.get("scheduler")
    if scheduler is not None:
        rows = [r for r in rows if r.scheduler == scheduler]
    if _restricted(viewer):
        rows = [r for r in rows if r.uid == viewer]
    cols = (*_JOB_COLUMNS, "started_at")
    return Table([dataclasses.asdict(r) for r in rows], cols, "no job ran it")


def _usage(session: Session, args: dict[str, Any], viewer: int | None) -> Table:
    refs_in = args.get("jobs") or []
    if not isinstance(refs_in, list) or not all(isinstance(r, str) for r in refs_in):
        raise AcctRequestError("acct: 'jobs' must be a list of job references")
    by = "job" if refs_in else args.get("by", "job")
    if by not in ("job", "node"):
        raise AcctRequestError("acct: 'by' must be job or node")
    uid = viewer if _restricted(viewer) else None
    refs: dict[int, str | None] = {}
    if by == "job":
        ids = [_own_job(session, ref, viewer).id for ref in refs_in] or None
        rows = queries.usage_by_job(session, ids, uid=uid)
        refs = queries.scheduler_refs(session, ids, uid=uid)
    else:
        rows = queries.usage_by_node(session, uid=uid)
    cols: tuple[str, ...] = (by, "scheduler_job") if by == "job" else (by,)
    # A job is its numeric id everywhere else (beostat jobs --json): keep it so here.
    # Fields read one by one: dataclasses.asdict deep-copies each value, 0.3 s over
    # 12,000 jobs for rows that hold only numbers and strings.
    out = [
        {
            **{name: getattr(r, name) for name in _USAGE_FIELDS},
            by: int(r.key) if by == "job" else r.key,
            "hit_rate": r.hit_rate,
        }
        for r in rows
    ]
    if by == "job":
        for row in out:
            row["scheduler_job"] = refs.get(row["job"])
    return Table(out, cols + _USAGE_COLUMNS, "no job has been accepted yet")


_TIMELINE_FIELDS = tuple(f.name for f in dataclasses.fields(JobTimelineRow))


def _since(args: dict[str, Any]) -> datetime | None:
    """The ``since`` argument: an ISO 8601 time with its UTC offset, or absent."""
    text = _arg(args, "since", required=False)
    if text is None:
        return None
    try:
        when = datetime.fromisoformat(text)
    except ValueError as exc:
        raise AcctRequestError(f"acct: 'since' {text!r} is not an ISO 8601 time") from exc
    if when.tzinfo is None:
        raise AcctRequestError(f"acct: 'since' {text!r} needs its UTC offset (+00:00)")
    return when


def _timeline(session: Session, args: dict[str, Any], viewer: int | None) -> Table:
    """Each job submitted since ``since``, with its cache fill: ``beoacct report``'s
    data (the viewer's jobs only, unless root)."""
    uid = viewer if _restricted(viewer) else None
    rows = job_timeline(session, since=_since(args), uid=uid)
    # Read field by field, as in _usage: asdict's deep copy is slow on 10,000 rows.
    out = [{name: getattr(r, name) for name in _TIMELINE_FIELDS} for r in rows]
    return Table(out, _TIMELINE_FIELDS, "no job yet")


_COMMANDS = {
    "jobs": _jobs,
    "files": _files,
    "holders": _holders,
    "versions": _versions,
    "diff": _diff,
    "usage": _usage,
    "timeline": _timeline,
}
