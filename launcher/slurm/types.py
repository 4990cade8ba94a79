"""What the scheduler adapter answers with, whichever backend asked Slurm."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Job:
    """A job slurmctld knows (pending, running, or recently ended)."""

    job_id: int
    name: str
    state: str  # Slurm's base state: PENDING, RUNNING, COMPLETED, FAILED, CANCELLED, ...
    reason: str | None  # why it waits or ended (None: Slurm says "None")
    nodes: tuple[str, ...]  # host names, expanded from Slurm's node list
    exit_code: int | None  # the batch script's exit status; None while it runs
    signal: int | None  # the signal that ended it, if any
    comment: str | None
    user_id: int | None = None
    partition: str | None = None
    priority: int | None = None  # 0: held

    @property
    def held(self) -> bool:
        return self.state == "PENDING" and self.priority == 0


@dataclass(frozen=True)
class NodeInfo:
    """A node as slurmctld sees it."""

    name: str
    state: str  # lower case base state: idle, allocated, mixed, down, ...
    flags: tuple[str, ...]  # upper case: DRAIN, NOT_RESPONDING, ...
    reason: str | None
    address: str | None
    cpus: int | None
    features: tuple[str, ...] = ()

    @property
    def drained(self) -> bool:
        return "DRAIN" in self.flags or self.state in ("drained", "draining")


@dataclass(frozen=True)
class FinishedJob:
    """One line of accounting (jobcomp/filetxt): a job that ended."""

    job_id: int
    name: str
    state: str
    user: str | None
    user_id: int | None
    exit_code: int | None
    signal: int | None
    nodes: tuple[str, ...]
    start: str | None  # Slurm's local ISO time, as written
    end: str | None


@dataclass(frozen=True)
class StepResult:
    """An ``srun`` that ran to its end."""

    command: str
    returncode: int
    stdout: str
    stderr: str
