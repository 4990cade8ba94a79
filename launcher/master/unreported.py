"""Slurm jobs that ended in Slurm while a node's epilog never told the master.

A Beolaunch job under Slurm ends in the state database when every admitted
node's epilog has reported (``slurm_ended``, through the node agent). An
agent killed while the job ran cannot relay its epilog, so without this the
row would stay ``running`` forever, and the objects pinned for it with it.
The master, when this state dir runs Slurm, looks every poll (with the
released-held check, :mod:`launcher.master.requeue`) at its rows of Slurm jobs
that are ``preparing`` or ``running``; one whose Slurm job has ended (or that
Slurm has forgotten) for ``grace_s`` seconds, time enough for a slow epilog,
is ended as Slurm says (NODE_FAIL is ``node_fail``), with the nodes that
never reported in its reason, and its pins in the database dropped.
"""

from __future__ import annotations

import logging
import time

from sqlalchemy import Engine, delete, select

from launcher.errors import SlurmError
from launcher.master.admission import FAILED_STATUS, SLURM_ENDED
from launcher.slurm.adapter import Scheduler as SlurmScheduler
from launcher.slurm.types import Job as SlurmJob
from launcher.state.base import utcnow
from launcher.state.db import transaction
from launcher.state.models import CachePin, Job
from launcher.state.record import record_event

log = logging.getLogger(__name__)

#: Seconds a Slurm job may be over before its unreported row is ended.
GRACE_S = 60
#: Slurm states of a job that is not over (squeue keeps ended jobs MinJobAge s).
NOT_OVER = ("PENDING", "RUNNING", "CONFIGURING", "COMPLETING", "SUSPENDED", "REQUEUED", "RESIZING")


class Unreported:
    """Ends rows of Slurm jobs over in Slurm whose epilogs did not all report."""

    def __init__(self, engine: Engine, *, grace_s: float = GRACE_S) -> None:
        self.engine = engine
        self.grace_s = grace_s
        #: job row id -> when its Slurm job was first seen over (monotonic)
        self._over_since: dict[int, float] = {}

    def sweep(self, slurm: SlurmScheduler, now: float | None = None) -> list[int]:
        """One pass; the job row ids ended. Raises SlurmError when Slurm cannot be asked."""
        now = time.monotonic() if now is None else now
        with transaction(self.engine, readonly=True) as session:
            rows = [
                (job.id, int(job.scheduler_job_id or "0"))
                for job in session.scalars(
                    select(Job).where(
                        Job.scheduler == "slurm", Job.state.in_(("preparing", "running"))
                    )
                )
                if (job.scheduler_job_id or "").isdigit()
            ]
        if not rows:
            self._over_since.clear()
            return []
        known = {j.job_id: j for j in slurm.jobs([sid for _, sid in rows])}
        ended = []
        for job_id, slurm_id in rows:
            found = known.get(slurm_id)
            if found is not None and found.state in NOT_OVER:
                self._over_since.pop(job_id, None)
                continue
            first = self._over_since.setdefault(job_id, now)
            if now - first < self.grace_s:
                continue
            state, status = self._verdict(slurm, slurm_id, found)
            if self._end(job_id, slurm_id, state, status):
                ended.append(job_id)
            self._over_since.pop(job_id, None)
        return ended

    @staticmethod
    def _verdict(
        slurm: SlurmScheduler, slurm_id: int, found: SlurmJob | None
    ) -> tuple[str | None, int]:
        """Slurm's final state of the job and the status it means."""
        state: str | None = None
        code: int | None = None
        signal: int | None = None
        if found is not None:
            state, code, signal = found.state, found.exit_code, found.signal
        else:
            try:
                done = slurm.finished([slurm_id])
            except SlurmError:
                done = []
            if done:
                state, code, signal = done[-1].state, done[-1].exit_code, done[-1].signal
        if signal:
            return state, 128 + signal
        if code:
            return state, code
        return state, 0 if state == "COMPLETED" else FAILED_STATUS

    def _end(self, job_id: int, slurm_id: int, state: str | None, status: int) -> bool:
        with transaction(self.engine) as session:
            job = session.get(Job, job_id)
            if job is None or job.state not in ("preparing", "running"):
                return False
            silent = sorted(
                p.node.name or f"#{p.node_id}"
                for p in job.nodes
                if p.accepted_at is not None and p.exit_status is None
            )
            if not silent:
                return False  # every epilog reported: admission's settle ends it
            said = state or "forgotten by Slurm"
            nodes = ", ".join(silent)
            reason = (
                f"slurm job {slurm_id} ended in Slurm ({said}) but the epilog of "
                f"{nodes} never reported to the master (its node agent was gone?)"
            )
            job.state = SLURM_ENDED.get(state or "", "completed" if status == 0 else "failed")
            job.exit_status = status
            job.ended_at = utcnow()
            job.reason = reason
            session.execute(delete(CachePin).where(CachePin.job_id == job.id))
            record_event(session, f"job {job.id} {job.state}: {reason}", level="warning", job=job)
        log.warning("job %d: %s", job_id, reason)
        return True
