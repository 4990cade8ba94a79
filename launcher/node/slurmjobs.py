"""Slurm jobs on this node: admission for the prolog, root lookup for steps,
release for the epilog (docs/slurm.md, "Admission").

``admit`` sends the master ``admit`` and waits for its ``admission``; in
between the master sends an ordinary ``prepare`` that :class:`Jobs` fills and
answers. Once admitted the job's env root is built (with the user's home and
the work dir seeded in its tmp) and kept until ``release``. Slurm steps run
as children of slurmstepd and enter that root themselves (``beonode step``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from launcher import wire
from launcher.errors import BeolaunchError, LocalSocketError
from launcher.node.jobs import Jobs
from launcher.node.outbox import Outbox

log = logging.getLogger(__name__)

#: How long an admit waits for the master when the prolog gives no bound, seconds.
DEFAULT_ADMIT_S = 60.0


@dataclass(frozen=True)
class Admitted:
    slurm_job: int
    job: int  # the master's job id
    uid: int
    root: Path
    tmp: Path
    home: str | None
    #: the root's mount points for host dirs (EnvRoot.binds), for the steps
    binds: tuple[str, ...] = ()


class SlurmJobs:
    """The Slurm jobs this agent admitted, keyed by Slurm job id."""

    def __init__(self, jobs: Jobs, outbox: Outbox) -> None:
        self.jobs = jobs
        self.outbox = outbox
        self._waiting: dict[int, asyncio.Future[wire.Admission]] = {}
        self._admitted: dict[int, Admitted] = {}
        self._late: set[asyncio.Task[None]] = set()  # kept: the loop holds tasks weakly

    def on_admission(self, message: wire.Admission) -> None:
        """The master's answer to an ``admit`` this agent sent."""
        future = self._waiting.get(message.slurm_job)
        if future is not None and not future.done():
            future.set_result(message)
            return
        log.warning("admission for slurm job %d that nobody waits for", message.slurm_job)
        if message.job is not None:  # its prolog gave up: do not keep its pins
            task = asyncio.get_running_loop().create_task(self.jobs.release(message.job))
            self._late.add(task)
            task.add_done_callback(self._late.discard)

    async def admit(self, request: dict[str, Any]) -> dict[str, Any]:
        """Admit the Slurm job of a prolog request: ``{accepted, reason?, job?}``."""
        slurm_job = int(request["slurm_job"])
        timeout = request.get("timeout")
        bound = float(timeout) if isinstance(timeout, (int, float)) else DEFAULT_ADMIT_S
        if slurm_job in self._admitted:  # a requeued job back on this node: start afresh
            await self._release_local(self._admitted.pop(slurm_job))
        if slurm_job in self._waiting:
            return refused("another prolog for this job is waiting already")
        future: asyncio.Future[wire.Admission] = asyncio.get_running_loop().create_future()
        self._waiting[slurm_job] = future
        try:
            message = wire.Admit(
                slurm_job,
                str(request["manifest"]),
                int(request["uid"]),
                int(request["gid"]),
                str(request["user"]),
                request.get("work_dir"),
                _nodes(request.get("nodes")),
            )
            if not await self.outbox.send(message):
                return refused("the master is not connected to this node's agent")
            try:
                answer = await asyncio.wait_for(future, bound)
            except TimeoutError:
                return refused(f"the master did not admit the job within {bound:g} s")
        finally:
            self._waiting.pop(slurm_job, None)
        if not answer.accepted or answer.job is None:
            return refused(answer.reason or "refused without a reason")
        job = self.jobs.prepared(answer.job)
        if job is None:
            return refused(f"job {answer.job} was admitted but not prepared on this node")
        home = _home_of(int(request["uid"]))
        work_dir = request.get("work_dir")
        cwds = [(work_dir, int(request["uid"]), int(request["gid"]))] if work_dir else []
        try:
            owner = (int(request["uid"]), int(request["gid"]))
            root, tmp = await self.jobs.build_root(job, owner, home, cwds)
        except (BeolaunchError, OSError) as exc:
            await self.jobs.release(answer.job)
            return refused(f"cannot build the env root: {exc}")
        self._admitted[slurm_job] = Admitted(
            slurm_job, answer.job, int(request["uid"]), root.path, tmp, home, root.binds
        )
        log.info("slurm job %d admitted as job %d in %s", slurm_job, answer.job, root.path)
        return {"accepted": True, "job": answer.job, "root": str(root.path)}

    def root(self, request: dict[str, Any], uid: int) -> dict[str, Any]:
        """Where an admitted Slurm job's root is (for its uid or root only)."""
        slurm_job = int(request["slurm_job"])
        found = self._admitted.get(slurm_job)
        if found is None or (uid != 0 and uid != found.uid):
            # the same answer for "not here" and "not yours": no probing of others' jobs
            raise LocalSocketError(
                "local", f"slurm job {slurm_job} has no env root here for uid {uid}"
            )
        return {
            "root": str(found.root),
            "tmp": str(found.tmp),
            "home": found.home,
            "job": found.job,
            "binds": list(found.binds),
        }

    async def release(self, request: dict[str, Any]) -> dict[str, Any]:
        """The epilog: end what is left, unpin, keep or remove the root, tell the
        master. A job not admitted here (or released already) is a no-op."""
        found = self._admitted.pop(int(request["slurm_job"]), None)
        if found is None:
            return {"released": False}
        await self._release_local(found)
        status = int(request["status"])
        await self.outbox.send(wire.SlurmEnded(found.slurm_job, found.job, status, {}))
        return {"released": True, "job": found.job}

    async def _release_local(self, found: Admitted) -> None:
        killed = await asyncio.to_thread(_kill_inside, found.root)
        if killed:
            log.warning(
                "slurm job %d: killed %d processes left in its root", found.slurm_job, killed
            )
        await self.jobs.release(found.job)


def _nodes(value: Any) -> list[str] | None:
    """The prolog's node list when it is a list of names, else None (no peers)."""
    if isinstance(value, list) and value and all(isinstance(n, str) and n for n in value):
        return [str(n) for n in value]
    return None


def refused(reason: str) -> dict[str, Any]:
    return {"accepted": False, "reason": reason}


def _home_of(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_dir or None
    except KeyError:
        return None


def _kill_inside(root: Path) -> int:
    """SIGKILL every process whose root is ``root`` (steps Slurm did not end)."""
    top = os.path.realpath(root)
    killed = 0
    for proc in psutil.process_iter():
        try:
            if os.readlink(f"/proc/{proc.pid}/root") == top:
                proc.kill()
                killed += 1
        except (OSError, psutil.Error):
            continue
    return killed
