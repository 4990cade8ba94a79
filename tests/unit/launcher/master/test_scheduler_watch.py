"""Watching a job the scheduler does not hold in memory: looked up in a database
thread, and memory checked again once the answer is back."""

from __future__ import annotations

import asyncio
from pathlib import Path

from cachefs.manifest import Entry, build
from launcher.master.dbwork import DbWork
from launcher.master.preparation import Preparation
from launcher.master.scheduler import Scheduler
from launcher.state.db import transaction
from launcher.state.record import record_job, record_submitted_manifest
from launcher.wire import Done, Message
from tests.unit.launcher.master.bareprep import bare_preparation


def _jobs(tmp_path: Path) -> tuple[Preparation, int, int]:
    """A Preparation on a fresh database with an ended job and a pending one."""
    prep, _store = bare_preparation(tmp_path)
    manifest = build("/bin/prog", [Entry("/bin/prog", "file", 0o755, 1, "a" * 64)], owner=0)
    with transaction(prep.engine) as session:
        record_submitted_manifest(session, manifest)
        ended = record_job(session, scheduler="local", uid=0, manifest_id=manifest.id)
        ended.state, ended.exit_status, ended.reason = "failed", 3, "it broke"
        pending = record_job(session, scheduler="local", uid=0, manifest_id=manifest.id)
        ids = ended.id, pending.id
    return prep, *ids


def test_a_job_not_in_memory_is_looked_up_off_the_loop(tmp_path: Path) -> None:
    prep, ended, pending = _jobs(tmp_path)

    async def main() -> tuple[object, object, object]:
        db = DbWork(prep.engine)
        try:
            scheduler = Scheduler(prep, db)
            return (
                await scheduler.watch(ended),
                await scheduler.watch(pending),
                await scheduler.watch(pending + 100),
            )
        finally:
            await db.close()

    done, queue, unknown = asyncio.run(main())
    assert done == Done(ended, 3, "it broke")
    assert isinstance(queue, asyncio.Queue)  # told when it starts or ends
    assert unknown is None


def test_a_job_that_ended_while_the_database_answered_gets_its_done(tmp_path: Path) -> None:
    prep, _ended, pending = _jobs(tmp_path)

    async def main() -> object:
        db = DbWork(prep.engine)
        try:
            scheduler = Scheduler(prep, db)
            real = db.read

            async def slow_read(fn: object) -> object:
                answer: object = await real(fn)  # type: ignore[arg-type]
                scheduler.ended[pending] = Done(pending, 0, None)  # ended meanwhile
                return answer

            db.read = slow_read  # type: ignore[method-assign, assignment]
            watched = await scheduler.watch(pending)
            early: set[asyncio.Queue[Message]] = scheduler._early.get(pending, set())
            assert not early  # no queue left behind that nothing would ever end
            return watched
        finally:
            await db.close()

    assert asyncio.run(main()) == Done(pending, 0, None)
