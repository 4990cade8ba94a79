"""Release Beolaunch jobs that Slurm requeued held after a prolog failure.

Slurm 22.05 requeues a batch job whose prolog failed *held*
(``PENDING``, reason ``launch_failed_requeued_held``, priority 0) and drains
the node. The master, when this state dir runs Slurm, looks for its own jobs
(comment ``beolaunch:``) in that state every :data:`POLL_S` seconds and
releases each (``scontrol release``, then ``update StartTime=now``, else
Slurm waits ~120 s) at most ``release_held`` times. Each release is an event
(``slurm job N: released from hold (k of M)``); the count is those events.
Past the bound one warning event says the job is left held.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from sqlalchemy import Engine, func, select
from sqlalchemy.orm import Session

from launcher.errors import SlurmError
from launcher.master.unreported import Unreported
from launcher.slurm.adapter import Scheduler as SlurmScheduler
from launcher.slurm.types import Job as SlurmJob
from launcher.state.db import transaction
from launcher.state.models import Event, Job
from launcher.state.record import record_event

log = logging.getLogger(__name__)

HELD_REASON = "launch_failed_requeued_held"
COMMENT_TAG = "beolaunch:"
POLL_S = 2.0


def held_ours(slurm: SlurmScheduler) -> list[SlurmJob]:
    """The Beolaunch jobs Slurm holds after a launch (prolog) failure.

    ``squeue --json`` (22.05) gives a held job's reason as ``JobHeldAdmin``/
    ``JobHeldUser`` and keeps ``launch_failed_requeued_held`` in its
    description, which only ``scontrol show job`` prints as ``Reason``: held
    candidates from the list are confirmed one by one, so a job a user or
    admin held on purpose is left alone."""
    candidates = [
        j
        for j in slurm.jobs()
        if (j.comment or "").startswith(COMMENT_TAG)
        and j.state == "PENDING"
        and (j.reason == HELD_REASON or j.held)
    ]
    if all(j.reason == HELD_REASON for j in candidates):
        return candidates
    return [j for j in (slurm.job(c.job_id) for c in candidates) if j.reason == HELD_REASON]


def _prefix(slurm_job: int) -> str:
    return f"slurm job {slurm_job}: released from hold"


def _events(session: Session, text: str) -> int:
    return int(
        session.scalar(select(func.count()).select_from(Event).where(Event.message.like(text))) or 0
    )


def release_held(engine: Engine, slurm: SlurmScheduler, limit: int) -> list[int]:
    """One pass: release what may be released; the Slurm job ids released.

    Raises SlurmError when Slurm cannot be asked (the caller retries later)."""
    released = []
    for held in held_ours(slurm):
        with transaction(engine) as session:
            count = _events(session, _prefix(held.job_id) + "%")
            row = session.scalars(
                select(Job).where(
                    Job.scheduler == "slurm", Job.scheduler_job_id == str(held.job_id)
                )
            ).first()
            if count >= limit:
                left = f"slurm job {held.job_id}: left held after {limit} releases"
                if not _events(session, left + "%"):
                    record_event(
                        session,
                        left + "; its prolog kept failing (see the drained nodes' reasons)",
                        level="warning",
                        job=row,
                    )
                continue
            slurm.release(held.job_id)
            slurm.update(held.job_id, {"StartTime": "now"})
            record_event(
                session,
                f"{_prefix(held.job_id)} ({count + 1} of {limit})",
                level="warning",
                job=row,
            )
        log.info("slurm job %d released from hold (%d of %d)", held.job_id, count + 1, limit)
        released.append(held.job_id)
    return released


async def release_held_forever(
    engine: Engine,
    slurm: Callable[[], SlurmScheduler | None],
    limit: int,
    *,
    poll_s: float = POLL_S,
    unreported: Unreported | None = None,
) -> None:
    """:func:`release_held` every ``poll_s`` seconds until cancelled, while
    ``slurm()`` gives a Slurm (None: this master runs without Slurm now); and
    ``unreported``'s sweep (:mod:`launcher.master.unreported`) in the same pass.
    A failing Slurm is logged once per run of failures, not every poll."""
    failing = False
    while True:
        current = slurm()
        if current is not None:
            try:
                await asyncio.to_thread(release_held, engine, current, limit)
                if unreported is not None:
                    await asyncio.to_thread(unreported.sweep, current)
                failing = False
            except SlurmError as exc:
                if not failing:
                    log.warning("cannot look for held Slurm jobs: %s", exc)
                failing = True
            except Exception:  # the loop must outlive one bad pass (a locked DB...)
                if not failing:
                    log.exception("looking for held Slurm jobs failed")
                failing = True
        await asyncio.sleep(poll_s)
