"""The agent's Slurm jobs: admit waits for the master's admission, the root is
looked up by its uid only, release tells the master once (Jobs and the outbox
are stand-ins; the real ones run in tests/integration/test_slurm_admission.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any, cast

import pytest

from launcher import wire
from launcher.errors import LocalSocketError
from launcher.node.jobs import Jobs
from launcher.node.outbox import Outbox
from launcher.node.slurmjobs import SlurmJobs

REQUEST = {
    "op": "admit",
    "slurm_job": 7,
    "manifest": "f" * 64,
    "uid": 1000,
    "gid": 1000,
    "user": "ann",
    "work_dir": None,
    "timeout": 5.0,
}


class FakeOutbox:
    def __init__(self) -> None:
        self.sent: list[wire.Message] = []

    async def send(self, message: wire.Message) -> bool:
        self.sent.append(message)
        return True


class FakeRoot:
    path = Path("/roots/3")
    binds = ("/scratch",)


class FakeJobs:
    def __init__(self) -> None:
        self.released: list[int] = []

    def prepared(self, job_id: int) -> object:
        return object()

    async def build_root(
        self, job: object, owner: tuple[int, int], home: str | None, cwds: list[Any]
    ) -> Any:
        self.owner = owner
        return FakeRoot(), Path("/roots/3.tmp")

    async def release(self, job_id: int) -> None:
        self.released.append(job_id)


def _rig() -> tuple[SlurmJobs, FakeOutbox, FakeJobs]:
    outbox, jobs = FakeOutbox(), FakeJobs()
    return SlurmJobs(cast(Jobs, jobs), cast(Outbox, outbox)), outbox, jobs


def test_admit_answers_after_the_masters_admission_and_release_reports_once() -> None:
    slurm, outbox, jobs = _rig()

    async def main() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        pending = asyncio.create_task(slurm.admit(dict(REQUEST)))
        await asyncio.sleep(0)
        assert outbox.sent == [wire.Admit(7, "f" * 64, 1000, 1000, "ann", None)]
        slurm.on_admission(wire.Admission(7, True, 3))
        answer = await pending
        with pytest.raises(LocalSocketError, match="uid 1001"):
            slurm.root({"slurm_job": 7}, 1001)
        found = slurm.root({"slurm_job": 7}, 1000)
        first = await slurm.release({"slurm_job": 7, "status": 2})
        second = await slurm.release({"slurm_job": 7, "status": 2})
        assert first == {"released": True, "job": 3}
        return answer, found, second

    answer, found, second = asyncio.run(main())
    assert answer == {"accepted": True, "job": 3, "root": "/roots/3"}
    assert found["root"] == "/roots/3" and found["tmp"] == "/roots/3.tmp"
    assert found["binds"] == ["/scratch"]  # for the steps: the root's mount points
    assert second == {"released": False}
    assert outbox.sent[-1] == wire.SlurmEnded(7, 3, 2, {})
    assert jobs.released == [3]


def test_a_refusal_or_silence_is_an_answer_with_the_reason() -> None:
    slurm, _outbox, jobs = _rig()

    async def main() -> tuple[dict[str, Any], dict[str, Any]]:
        pending = asyncio.create_task(slurm.admit(dict(REQUEST)))
        await asyncio.sleep(0)
        slurm.on_admission(wire.Admission(7, False, None, "bad owner"))
        refused = await pending
        silent = await slurm.admit({**REQUEST, "timeout": 0.05})
        slurm.on_admission(wire.Admission(7, True, 4))  # too late: released, not kept
        await asyncio.sleep(0.01)
        return refused, silent

    refused, silent = asyncio.run(main())
    assert refused == {"accepted": False, "reason": "bad owner"}
    assert silent["accepted"] is False and "within 0.05 s" in silent["reason"]
    assert jobs.released == [4]
