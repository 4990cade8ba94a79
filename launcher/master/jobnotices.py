"""Notices a node sends about a job (``wire.Notice``): one of the job's events.

A node says once per job what its submitter should know that is no failure
(a site bind or the home missing there: launcher/node/roots/sitebinds.py). The
scheduler relays it to the job's watchers (``beosub`` prints it); this records
it, for Slurm jobs too, which nobody watches. A node may only speak of a job
it has a part in (an accepted ``job_nodes`` row): another job's record is
not its to write.
"""

from __future__ import annotations

import logging

from sqlalchemy import Engine, select

from launcher.state.db import transaction
from launcher.state.models import JobNode, Node
from launcher.state.record import record_event
from launcher.wire import Notice

log = logging.getLogger(__name__)


def record_notice(engine: Engine, node: str, notice: Notice) -> None:
    """Record ``notice`` from ``node`` as a warning event of its job; only a log
    line when the node has no accepted part in that job. Raises
    DatabaseUnavailable (the caller holds the write until the database is back)."""
    with transaction(engine) as session:
        row = session.scalars(select(Node).where(Node.name == node)).one_or_none()
        part = session.get(JobNode, (notice.job, row.id)) if row is not None else None
        if row is None or part is None or part.accepted_at is None:
            log.warning("node %s: a notice about job %d, not its own: ignored", node, notice.job)
            return
        record_event(
            session,
            f"job {notice.job} on {node}: {notice.text}",
            level="warning",
            node=row,
            job=part.job,
        )
    log.info("job %d: node %s: %s", notice.job, node, notice.text)
