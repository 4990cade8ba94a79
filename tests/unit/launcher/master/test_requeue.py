"""Releasing Beolaunch jobs Slurm requeued held: bounded, counted by events."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from pathlib import Path

from sqlalchemy import select

from launcher.master.requeue import HELD_REASON, release_held
from launcher.slurm.types import Job as SlurmJob
from launcher.state.db import make_engine, transaction
from launcher.state.migrate import upgrade
from launcher.state.models import Event


def _job(job_id: int, comment: str | None, reason: str = HELD_REASON) -> SlurmJob:
    return SlurmJob(job_id, "sbatch", "PENDING", reason, (), None, None, comment, priority=0)


class FakeSlurm:
    """Stand-in for the adapter (unit test of the loop's decisions only)."""

    def __init__(self, jobs: list[SlurmJob], shown: dict[int, SlurmJob] | None = None) -> None:
        self.listed = jobs
        self.shown = shown or {}
        self.calls: list[tuple[str, int, dict[str, str]]] = []

    def jobs(self, job_ids: Collection[int] | None = None) -> list[SlurmJob]:
        return self.listed

    def job(self, job_id: int) -> SlurmJob:
        return self.shown.get(job_id) or next(j for j in self.listed if j.job_id == job_id)

    def release(self, job_id: int) -> None:
        self.calls.append(("release", job_id, {}))

    def update(self, job_id: int, fields: Mapping[str, str]) -> None:
        self.calls.append(("update", job_id, dict(fields)))


def test_held_beolaunch_jobs_are_released_at_most_limit_times(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'db'}")
    upgrade(engine)
    slurm = FakeSlurm(
        [
            _job(7, "beolaunch:manifest=" + "a" * 64),
            _job(8, "someone else's job"),
            _job(9, "beolaunch:manifest=" + "b" * 64, reason="Resources"),
        ]
    )
    assert release_held(engine, slurm, 2) == [7]  # type: ignore[arg-type]
    assert slurm.calls == [("release", 7, {}), ("update", 7, {"StartTime": "now"})]
    assert release_held(engine, slurm, 2) == [7]  # type: ignore[arg-type]
    assert release_held(engine, slurm, 2) == []  # type: ignore[arg-type]
    assert release_held(engine, slurm, 2) == []  # type: ignore[arg-type]
    with transaction(engine, readonly=True) as session:
        messages = [e.message for e in session.scalars(select(Event).order_by(Event.id))]
    assert messages[0].startswith("slurm job 7: released from hold (1 of 2)")
    assert messages[1].startswith("slurm job 7: released from hold (2 of 2)")
    assert len(messages) == 3 and messages[2].startswith("slurm job 7: left held after 2 releases")
    engine.dispose()


def test_squeue_held_reason_is_confirmed_with_scontrol(tmp_path: Path) -> None:
    # squeue --json says JobHeldAdmin for both; scontrol tells a launch failure
    # (released) from a hold an admin put on purpose (left alone)
    engine = make_engine(f"sqlite:///{tmp_path / 'db'}")
    upgrade(engine)
    tag = "beolaunch:manifest=" + "c" * 64
    listed = [_job(3, tag, reason="JobHeldAdmin"), _job(4, tag, reason="JobHeldAdmin")]
    shown = {3: _job(3, tag), 4: _job(4, tag, reason="JobHeldAdmin")}
    slurm = FakeSlurm(listed, shown)
    assert release_held(engine, slurm, 1) == [3]  # type: ignore[arg-type]
    engine.dispose()
