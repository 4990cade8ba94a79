"""Each job's submission, start and cache fill totals: what ``beoacct report`` plots.

One statement: the accepting nodes' fill figures summed per job in a subquery,
joined to the jobs (a job no node accepted yet keeps zeros). On 100,000
job-node records this is one pass over ``job_nodes`` (docs/observability.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from launcher.state.models import Job, JobNode


@dataclass(frozen=True)
class JobTimelineRow:
    """One job: when it was submitted and started, and its cache fill summed over
    the nodes that accepted it."""

    job: int
    uid: int
    scheduler: str
    submitted_at: datetime
    started_at: datetime | None
    nodes: int
    objects_total: int
    objects_hit: int
    bytes_from_master: int
    bytes_from_peers: int


def job_timeline(
    session: Session, *, since: datetime | None = None, uid: int | None = None
) -> list[JobTimelineRow]:
    """Every job submitted at or after ``since`` (None: every job), of ``uid``
    only when given, by job id."""
    fill = (
        select(
            JobNode.job_id.label("job_id"),
            func.count(JobNode.node_id).label("nodes"),
            func.sum(JobNode.objects_total).label("objects_total"),
            func.sum(JobNode.objects_hit).label("objects_hit"),
            func.sum(JobNode.bytes_from_master).label("bytes_from_master"),
            func.sum(JobNode.bytes_from_peers).label("bytes_from_peers"),
        )
        .where(JobNode.accepted_at.is_not(None))
        .group_by(JobNode.job_id)
        .subquery()
    )
    stmt = (
        select(
            Job.id,
            Job.uid,
            Job.scheduler,
            Job.submitted_at,
            Job.started_at,
            fill.c.nodes,
            fill.c.objects_total,
            fill.c.objects_hit,
            fill.c.bytes_from_master,
            fill.c.bytes_from_peers,
        )
        .outerjoin(fill, fill.c.job_id == Job.id)
        .order_by(Job.id)
    )
    if since is not None:
        stmt = stmt.where(Job.submitted_at >= since)
    if uid is not None:
        stmt = stmt.where(Job.uid == uid)
    return [
        JobTimelineRow(job, owner, sched, submitted, started, *(int(v or 0) for v in sums))
        for job, owner, sched, submitted, started, *sums in session.execute(stmt)
    ]
