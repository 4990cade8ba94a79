"""Slurm admission on the master: the checks, the job row, acceptance and refusal
recorded per node, the epilog's end (SQLite, a real store; nodes are stand-ins)."""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import pwd
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import pytest
from sqlalchemy import Engine, select

from cachefs.manifest import Entry, Manifest, build
from cachefs.store import Store
from launcher.errors import DatabaseUnavailable
from launcher.master.admission import AdmissionRefused, SlurmAdmission, check_admit
from launcher.master.capability import CapabilityAuthorizer
from launcher.master.dbwork import DbWork
from launcher.master.links import NodeLink
from launcher.master.nodehealth import HEALTH_REASON
from launcher.master.preparation import Preparation
from launcher.state.db import make_engine, transaction
from launcher.state.migrate import upgrade
from launcher.state.models import CachePin, Job, JobNode, Node
from launcher.wire import Admission, Admit, Message, Prepare, Prepared, SlurmEnded

BODY = b"#!/bin/sh\necho hi\n"
SHA = hashlib.sha256(BODY).hexdigest()
ME = os.getuid()
NAME = pwd.getpwuid(ME).pw_name
T = TypeVar("T")


class FakeLink:
    def __init__(self) -> None:
        self.sent: list[Message] = []

    def post(self, message: Message) -> None:
        self.sent.append(message)


def _manifest(store: Store, owner: int) -> Manifest:
    entry = Entry("/bin/prog", "file", 0o755, len(BODY), SHA)
    manifest = build("/bin/prog", [entry], owner=owner)
    store.ingest_bytes(BODY)
    store.ingest_bytes(manifest.canonical())
    return manifest


def _admit(manifest: Manifest, uid: int = ME, user: str = NAME, job: int = 40) -> Admit:
    return Admit(job, manifest.id, uid, 0, user, "/tmp")


@pytest.fixture
def engine(tmp_path: Path) -> Any:
    engine = make_engine(f"sqlite:///{tmp_path / 'db'}")
    upgrade(engine)
    with transaction(engine) as session:
        session.add_all([Node(name="node1", state="up"), Node(name="node2", state="up")])
    yield engine
    engine.dispose()


def _rig(engine: Engine, store: Store, db: DbWork) -> tuple[SlurmAdmission, dict[str, FakeLink]]:
    links = {"node1": FakeLink(), "node2": FakeLink()}
    preparation = Preparation(
        engine,
        store,
        cast(dict[str, NodeLink], links),
        sources=lambda _link: [{"url": "http://master", "kind": "master"}],
        capabilities=CapabilityAuthorizer("t", store),
    )
    admission = SlurmAdmission(preparation, db)
    return admission, links


def test_checks_name_what_failed(tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    manifest = _manifest(store, ME)
    assert check_admit(store, _admit(manifest)).id == manifest.id
    with pytest.raises(AdmissionRefused, match="not in the master's store"):
        check_admit(store, Admit(1, "e" * 64, ME, 0, NAME))
    with pytest.raises(AdmissionRefused, match=f"belongs to uid {ME}, not to the job's uid"):
        check_admit(store, _admit(manifest, uid=ME + 1))
    with pytest.raises(AdmissionRefused, match=f"is {NAME} on the master, not someone"):
        check_admit(store, _admit(manifest, user="someone"))


def _with_db(engine: Engine, body: Callable[[DbWork], Awaitable[T]]) -> T:
    """``body(db)`` on an event loop, with a DbWork closed after it."""

    async def main() -> T:
        db = DbWork(engine)
        try:
            return await body(db)
        finally:
            await db.close()

    return asyncio.run(main())


def test_every_node_is_admitted_on_its_own_and_the_last_epilog_ends_the_job(
    engine: Engine, tmp_path: Path
) -> None:
    store = Store(tmp_path / "store")
    manifest = _manifest(store, ME)

    async def body(db: DbWork) -> None:
        admission, links = _rig(engine, store, db)
        for node in ("node1", "node2"):
            assert admission.on_message(node, _admit(manifest))
        assert links["node1"].sent == []  # sent once the job row is written
        await admission.settled()
        prepares = [links[n].sent[0] for n in ("node1", "node2")]
        assert all(isinstance(p, Prepare) for p in prepares)
        job_id = cast(Prepare, prepares[0]).job
        assert cast(Prepare, prepares[1]).job == job_id  # the second node joined the same row
        fill = {"objects_total": 1, "objects_hit": 0, "bytes_total": len(BODY)}
        assert admission.on_message("node1", Prepared(job_id, True, None, fill))
        await admission.settled()
        # recorded before node2 answered: Slurm's prolog is the barrier
        assert links["node1"].sent[-1] == Admission(40, True, job_id)
        with transaction(engine, readonly=True) as session:
            job = session.get_one(Job, job_id)
            assert (job.scheduler, job.scheduler_job_id, job.state) == ("slurm", "40", "running")
            assert len(list(session.scalars(select(CachePin)))) == 1
            node1 = session.scalars(select(Node).where(Node.name == "node1")).one()
            assert node1.state == "up"  # Slurm owns allocation: never busy here
        admission.on_message("node2", Prepared(job_id, True, None, fill))
        for _ in range(2):  # the epilog twice: the same result
            admission.on_message("node1", SlurmEnded(40, job_id, 0))
        admission.on_message("node2", SlurmEnded(40, job_id, 3))
        await admission.settled()
        with transaction(engine, readonly=True) as session:
            job = session.get_one(Job, job_id)
            assert (job.state, job.exit_status) == ("failed", 3)
            parts = {p.node.name: p.exit_status for p in session.scalars(select(JobNode))}
            assert parts == {"node1": 0, "node2": 3}
            assert list(session.scalars(select(CachePin))) == []

    _with_db(engine, body)


def test_a_refusal_drains_the_node_with_the_reason(engine: Engine, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    manifest = _manifest(store, ME)

    async def body(db: DbWork) -> None:
        admission, links = _rig(engine, store, db)
        admission.on_message("node1", _admit(manifest, uid=ME + 1))
        await admission.settled()
        assert links["node1"].sent == [
            Admission(
                40,
                False,
                None,
                f"manifest {manifest.id} belongs to uid {ME}, not to the job's uid {ME + 1}",
            )
        ]
        admission.on_message("node2", _admit(manifest))
        await admission.settled()
        job_id = cast(Prepare, links["node2"].sent[0]).job
        admission.on_message("node2", Prepared(job_id, False, "object damaged"))
        await admission.settled()
        assert links["node2"].sent[-1] == Admission(40, False, job_id, "object damaged")

    _with_db(engine, body)
    with transaction(engine, readonly=True) as session:
        nodes = {n.name: (n.state, n.state_reason) for n in session.scalars(select(Node))}
        part = session.scalars(select(JobNode)).one()
    assert nodes["node2"] == ("drained", "refused slurm job 40: object damaged")
    assert nodes["node1"][0] == "drained" and f"uid {ME + 1}" in (nodes["node1"][1] or "")
    assert part.refused_reason == "object damaged" and part.accepted_at is None


def test_a_node_kept_out_by_its_own_problems_refuses_slurm_jobs_and_keeps_its_reason(
    engine: Engine, tmp_path: Path
) -> None:
    """Slurm does not know node1's /home failed to mount; the master does: the job
    is refused before anything is prepared, and the drain stays the node's own
    (lifted when its mount comes back), not turned into a Slurm refusal."""
    store = Store(tmp_path / "store")
    manifest = _manifest(store, ME)
    reason = HEALTH_REASON + "mount /home failed: Connection refused"
    with transaction(engine) as session:
        row = session.scalars(select(Node).where(Node.name == "node1")).one()
        row.state, row.state_reason = "drained", reason

    async def body(db: DbWork) -> None:
        admission, links = _rig(engine, store, db)
        admission.on_message("node1", _admit(manifest))
        await admission.settled()
        assert links["node1"].sent == [Admission(40, False, None, f"node1 is kept out: {reason}")]

    _with_db(engine, body)
    with transaction(engine, readonly=True) as session:
        row = session.scalars(select(Node).where(Node.name == "node1")).one()
        assert (row.state, row.state_reason) == ("drained", reason)
        assert session.scalars(select(Job)).first() is None


def test_admissions_wait_in_their_lane_while_the_database_is_away(
    engine: Engine, tmp_path: Path
) -> None:
    store = Store(tmp_path / "store")
    manifest = _manifest(store, ME)
    away = {"tries": 2}
    real = SlurmAdmission._record_admit

    def flaky(self: SlurmAdmission, node: str, message: Admit) -> Any:
        if away["tries"]:
            away["tries"] -= 1
            raise DatabaseUnavailable("sqlite://", "gone")
        return real(self, node, message)

    async def body(db: DbWork) -> None:
        db.retry_s = 0.01
        admission, links = _rig(engine, store, db)
        admission._record_admit = functools.partial(flaky, admission)  # type: ignore[method-assign]
        admission.on_message("node1", _admit(manifest))
        admission.on_message("node1", _admit(manifest, uid=ME + 1, job=41))  # behind it
        await admission.settled()
        assert [type(m).__name__ for m in links["node1"].sent] == ["Prepare", "Admission"]
        assert db.recoveries["admission:"] == 1

    _with_db(engine, body)


def test_messages_of_local_jobs_are_not_taken(engine: Engine, tmp_path: Path) -> None:
    async def body(db: DbWork) -> None:
        admission, _links = _rig(engine, Store(tmp_path / "store"), db)
        assert not admission.on_message("node1", Prepared(99, True))

    _with_db(engine, body)


class FakeSlurm:
    def __init__(self, *states: tuple[str, int | None, int | None]) -> None:
        self.states = list(states)

    def job(self, job_id: int) -> Any:
        from launcher.slurm.types import Job as SlurmJob

        state, code, sig = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return SlurmJob(job_id, "j", state, None, (), code, sig, None)


def _ended_job(
    engine: Engine, tmp_path: Path, slurm: FakeSlurm, db: DbWork
) -> Awaitable[tuple[SlurmAdmission, int]]:
    store = Store(tmp_path / "store")
    manifest = _manifest(store, ME)
    admission, links = _rig(engine, store, db)
    admission.slurm = lambda: slurm  # type: ignore[assignment]

    async def admitted() -> tuple[SlurmAdmission, int]:
        admission.on_message("node1", _admit(manifest))
        await admission.settled()
        job_id = cast(Prepare, links["node1"].sent[0]).job
        admission.on_message("node1", Prepared(job_id, True, None, {}))
        await admission.settled()
        return admission, job_id

    return admitted()


def test_a_job_slurm_cancelled_is_recorded_as_slurm_says(engine: Engine, tmp_path: Path) -> None:
    # slurmd's epilog reports exit 0 for a cancelled job; Slurm's own state wins
    slurm = FakeSlurm(("COMPLETING", None, None), ("CANCELLED", 0, 15))

    async def end(db: DbWork) -> int:
        admission, job_id = await _ended_job(engine, tmp_path, slurm, db)
        admission.on_message("node1", SlurmEnded(40, job_id, 0))
        await admission.settled()
        return job_id

    job_id = _with_db(engine, end)
    with transaction(engine, readonly=True) as session:
        job = session.get_one(Job, job_id)
        assert (job.state, job.exit_status) == ("cancelled", 143)


def test_a_job_slurm_completed_keeps_the_epilogs_status(engine: Engine, tmp_path: Path) -> None:
    async def end(db: DbWork) -> int:
        slurm = FakeSlurm(("COMPLETED", 0, None))
        admission, job_id = await _ended_job(engine, tmp_path, slurm, db)
        admission.on_message("node1", SlurmEnded(40, job_id, 2))
        await admission.settled()
        return job_id

    job_id = _with_db(engine, end)
    with transaction(engine, readonly=True) as session:
        job = session.get_one(Job, job_id)
        assert (job.state, job.exit_status) == ("failed", 2)
