"""Slurm admission on the master: ``admit`` from a node's prolog, ``prepared``
for it, ``slurm_ended`` from its epilog (docs/slurm.md, "Admission").

Slurm owns allocation: a Slurm job's nodes are never marked ``busy`` here and
no all-nodes barrier is kept (Slurm's prolog on every node is the barrier).
Each node is admitted on its own: checks (the manifest is in the store, its
owner is the job's uid, that uid has an account named as Slurm says), the job
row is created by the first node and joined by the others (``scheduler =
"slurm"``, ``scheduler_job_id`` = the Slurm job id), an ordinary ``prepare``
goes to the node, and its ``prepared`` is recorded at once (acceptance, cached
objects, pins) before the node hears ``admission``. A refusal, by a check or
by the node, drains the node with the reason, as the embedded scheduler does
(Slurm drains it too when the prolog exits 1).

The database work runs off the event loop, in one ordered lane of its own
(:class:`launcher.master.heldwrites.HeldWrites` keyed ``admission:``): a node's
``admission`` answer is posted once what it says is written, and the writes
about a job keep the order its messages came in (an admit before its
``prepared``, a node's acceptance before its epilog's end). While the database
is away the lane holds them and tries again; the prolog waits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import pwd
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from cachefs.errors import CachefsError
from cachefs.manifest import Manifest as CachefsManifest
from cachefs.store import Store
from launcher.errors import SlurmError
from launcher.master import fanout as distribution
from launcher.master.dbwork import DbWork
from launcher.master.heldwrites import HeldWrites
from launcher.master.links import NodeLink
from launcher.master.nodehealth import health_drained
from launcher.master.preparation import Preparation, SourcesFor, accept, node_row
from launcher.master.storerepair import StoreChecks
from launcher.slurm.adapter import Scheduler as SlurmScheduler
from launcher.slurm.types import Job as SlurmJob
from launcher.state.base import utcnow
from launcher.state.db import transaction
from launcher.state.models import ENDED_STATES, Job, JobNode, Manifest, Node
from launcher.state.record import (
    record_event,
    record_job,
    record_submitted_manifest,
    unpin_job,
)
from launcher.wire import (
    Admission,
    Admit,
    Error,
    FillReport,
    Message,
    Prepare,
    Prepared,
    SlurmEnded,
)

log = logging.getLogger(__name__)

#: Slurm's states of a job it ended (killed, failed) and what the job row says then.
SLURM_ENDED = {
    "CANCELLED": "cancelled",
    "TIMEOUT": "failed",
    "FAILED": "failed",
    "NODE_FAIL": "node_fail",
    "OUT_OF_MEMORY": "failed",
    "PREEMPTED": "failed",
    "BOOT_FAIL": "failed",
    "DEADLINE": "failed",
}
#: Seconds to wait for slurmctld to finish a job (COMPLETING while epilogs run).
SETTLE_S = 30.0


#: Store checks per (job, node) before a refusal drains the node (storerepair.py).
MAX_REPAIRS = 3
#: A job's status when Slurm failed it without an exit code or signal.
FAILED_STATUS = 1
#: How the reason of a drain made by a refused Slurm job starts (then the job id).
SLURM_REFUSAL = "refused slurm job "
#: The admission lane's key among DbWork's.
LANE = "admission:"


@dataclass(frozen=True)
class Admitted:
    """An admit checked and recorded: what the node's prepare is made of."""

    job_id: int
    late: str | None
    manifest_id: str
    document: dict[str, Any]
    objects: list[str]


class AdmissionRefused(Exception):
    """A check failed: ``reason`` goes to the node, the prolog and the DB."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


def check_admit(store: Store, message: Admit) -> CachefsManifest:
    """The manifest ``message`` names, when the master may admit it; raises
    AdmissionRefused naming what failed (store, owner, account)."""
    try:
        with store.open(message.manifest) as f:
            document = json.loads(f.read())
        manifest = CachefsManifest.from_document(document, expect_id=message.manifest)
    except (CachefsError, OSError, ValueError) as exc:
        raise AdmissionRefused(
            f"manifest {message.manifest} is not in the master's store ({exc}); "
            "submit the job with beosub"
        ) from exc
    if manifest.owner != message.uid:
        raise AdmissionRefused(
            f"manifest {message.manifest} belongs to uid {manifest.owner}, "
            f"not to the job's uid {message.uid}"
        )
    try:
        account = pwd.getpwuid(message.uid)
    except KeyError as exc:
        raise AdmissionRefused(f"uid {message.uid} has no account on the master") from exc
    if account.pw_name != message.user:
        raise AdmissionRefused(
            f"uid {message.uid} is {account.pw_name} on the master, not {message.user}"
        )
    return manifest


def slurm_sources(
    node: str,
    nodes: list[str] | None,
    links: dict[str, NodeLink],
    master: SourcesFor,
    fanout: int,
) -> list[dict[str, str]]:
    """Where ``node`` of a Slurm job on ``nodes`` fills from: [its parent's and
    grandparent's peer services, master] (those connected and serving peers), or
    [master] for the tree's root and for a node outside the list.

    Each node is admitted on its own, at its own time: the tree is laid over
    the sorted node list alone (not over who is connected or holds what, which
    changes between admits), so every admit of the job sees the same parents
    and no two nodes wait for each other's fill."""
    link = links[node]
    names = sorted({n for n in nodes or () if isinstance(n, str)})
    if node not in names:
        return master(link)
    tree = distribution.parents(names, fanout)
    return distribution.peer_sources(node, tree, links) + master(link)


class SlurmAdmission:
    """The master's side of Slurm jobs; :meth:`on_message` takes what is its."""

    def __init__(
        self,
        preparation: Preparation,
        db: DbWork,
        *,
        slurm: Callable[[], SlurmScheduler | None] | None = None,
        on_end: Callable[[int], None] | None = None,
    ) -> None:
        #: prepare messages and acceptance records (shared with the embedded scheduler)
        self.preparation = preparation
        self.engine = preparation.engine
        #: the database work of admissions, in order, in a database thread
        self.held = HeldWrites(db, lane=LANE)
        self.links = preparation.links
        #: asked for a job's final state when its last epilog reported (None: never)
        self.slurm = slurm
        self._settling: set[asyncio.Future[str | None]] = set()
        #: told each job whose last node's epilog reported (late.LateFiles.job_ended)
        self.on_end = on_end
        #: (job id, node) -> Slurm job id, while the node prepares
        self.preparing: dict[tuple[int, str], int] = {}
        #: (job id, node) -> the prepare sent, while the node prepares (sent again
        #: once a damaged store object is repaired: storerepair.py)
        self.prepares: dict[tuple[int, str], Prepare] = {}
        self._checks: set[asyncio.Task[None]] = set()  # kept: the loop holds tasks weakly
        #: checks of objects nodes could not verify (storerepair.py), and how many
        #: each (job, node) asked for: a node that keeps refusing is at fault
        self.store_checks = StoreChecks(preparation.store)
        self._store_checked: Counter[tuple[int, str]] = Counter()

    def on_message(self, node: str, message: Message) -> bool:
        """Handle ``message`` if it is about a Slurm admission; whether it was."""
        if isinstance(message, Admit):
            self.on_admit(node, message)
            return True
        if isinstance(message, Prepared) and (message.job, node) in self.preparing:
            self.on_prepared(node, message)
            return True
        if isinstance(message, SlurmEnded):
            self.on_ended(node, message)
            return True
        return False

    def _post(self, node: str, message: Message) -> None:
        link = self.links.get(node)
        if link is not None:
            link.post(message)

    def on_admit(self, node: str, message: Admit) -> None:
        """Check and record the admit in the lane (reading and checking the
        manifest too: at 1,000 nodes, 1,000 parses of it), then prepare or refuse."""
        slurm_job = message.slurm_job
        self.held.run(
            f"slurm job {slurm_job}: the admit of {node}",
            lambda: self._record_admit(node, message),
            lambda answer: self._admitted(node, message, answer),
            failed=lambda exc: self._refuse(node, slurm_job, None, f"cannot record the job: {exc}"),
        )

    def _record_admit(self, node: str, message: Admit) -> Admitted | AdmissionRefused:
        """In a database thread: the checks (:func:`check_admit`), then the job row
        (made or joined); what the node's prepare needs, or the check that failed."""
        try:
            manifest = check_admit(self.preparation.store, message)
        except AdmissionRefused as exc:
            return exc
        with transaction(self.engine) as session:
            row = node_row(session, node)
            if health_drained(row):  # Slurm cannot know: the node said so to us
                return AdmissionRefused(f"{node} is kept out: {row.state_reason}")
            job = self._job_row(session, message, manifest)
            record_event(
                session,
                f"slurm job {message.slurm_job}: {node} preparing (job {job.id})",
                job=job,
                node=row,
            )
            job_id, late = job.id, job.late_policy
        return Admitted(job_id, late, manifest.id, manifest.document(), list(manifest.objects()))

    def _admitted(self, node: str, message: Admit, answer: Admitted | AdmissionRefused) -> None:
        """On the loop, once the job row is written: send the node its prepare
        (or the refusal of a check)."""
        if isinstance(answer, AdmissionRefused):
            self._refuse(node, message.slurm_job, None, answer.reason)
            return
        link = self.links.get(node)
        if link is None:
            return  # gone meanwhile: its prolog times out
        job_id = answer.job_id
        self.preparing[(job_id, node)] = message.slurm_job
        log.info("slurm job %d: %s preparing as job %d", message.slurm_job, node, job_id)
        prep = self.preparation
        sources = slurm_sources(node, message.nodes, self.links, prep.sources, prep.fanout)
        prepare = prep.prepares(
            job_id,
            answer.manifest_id,
            answer.document,
            answer.objects,
            answer.late,
            {node: sources},
        )[node]
        self.prepares[(job_id, node)] = prepare
        link.post(prepare)

    def _job_row(self, session: Session, message: Admit, manifest: CachefsManifest) -> Job:
        if session.get(Manifest, manifest.id) is None:
            record_submitted_manifest(session, manifest)
        job = session.scalars(
            select(Job).where(
                Job.scheduler == "slurm", Job.scheduler_job_id == str(message.slurm_job)
            )
        ).first()
        if job is None:
            job = record_job(
                session,
                scheduler="slurm",
                uid=message.uid,
                manifest_id=manifest.id,
                scheduler_job_id=str(message.slurm_job),
            )
            job.cwd = message.work_dir
            job.state = "preparing"
            # beosub's program key and --strict came with the manifest (POST /manifests)
            stored = session.get(Manifest, manifest.id)
            if stored is not None:
                job.program_key, job.late_policy = stored.program_key, stored.late_policy
        elif job.state in ENDED_STATES:  # requeued by Slurm
            job.state = "preparing"
            job.ended_at = None
            job.exit_status = None
        return job

    def on_prepared(self, node: str, message: Prepared) -> None:
        slurm_job = self.preparing.pop((message.job, node))
        prepare = self.prepares.pop((message.job, node), None)
        if not message.accepted:
            reason = message.reason or "no reason given"
            checks = self._store_checked[(message.job, node)]
            if message.corrupt is not None and prepare is not None and checks < MAX_REPAIRS:
                self._store_checked[(message.job, node)] += 1
                self._check_store(node, slurm_job, prepare, message.corrupt, reason)
            else:
                self._refuse(node, slurm_job, message.job, reason)
            return
        fill = self.preparation.filled(node, message)
        self.held.run(
            f"slurm job {slurm_job}: {node}'s acceptance",
            lambda: self._record_accept(node, message, slurm_job, fill),
            lambda _: self._post(node, Admission(slurm_job, True, message.job)),
            failed=lambda exc: self._post(node, Error(f"master could not handle prepared: {exc}")),
        )

    def _record_accept(
        self, node: str, message: Prepared, slurm_job: int, fill: FillReport
    ) -> None:
        """In a database thread: ``node`` accepted the job (acceptance, objects, pins)."""
        with transaction(self.engine) as session:
            job = session.get_one(Job, message.job)
            row = node_row(session, node)
            old = session.get(JobNode, (job.id, row.id))
            if old is not None:  # requeued onto a node that had a part already
                session.delete(old)
                session.flush()
            objects = self.preparation.objects(job.manifest_id)
            accept(session, job, {node: (row, fill)}, objects)
            if job.state == "preparing":
                job.state = "running"
            job.started_at = job.started_at or utcnow()
            record_event(
                session, f"slurm job {slurm_job}: {node} accepted job {job.id}", job=job, node=row
            )
            _lift_slurm_drain(session, row, slurm_job)

    def _check_store(
        self, node: str, slurm_job: int, prepare: Prepare, sha256: str, reason: str
    ) -> None:
        """The node could verify no copy of ``sha256``: check the store's first
        (storerepair.py); once it is repaired the node fills again, within its prolog."""
        manifest = CachefsManifest.from_document(prepare.manifest)
        uid = manifest.owner if manifest.owner is not None else -1

        async def check() -> None:
            found, first = await self.store_checks.check(prepare.job, sha256, manifest, uid)
            if not found.damaged:
                self._refuse(node, slurm_job, prepare.job, reason)
                return
            if first:
                self.held.run(
                    f"slurm job {slurm_job}: the store repair",
                    lambda: self._record_repair(prepare.job, found.message),
                )
                log.error("slurm job %d: %s", slurm_job, found.message)
            link = self.links.get(node)
            if found.repaired and link is not None:
                self.preparing[(prepare.job, node)] = slurm_job
                self.prepares[(prepare.job, node)] = prepare
                link.post(prepare)  # the node fills again
            else:
                self._refuse(node, slurm_job, prepare.job, found.message)

        task = asyncio.get_running_loop().create_task(check())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def _refuse(self, node: str, slurm_job: int, job_id: int | None, reason: str) -> None:
        """Drain ``node`` with ``reason`` (in the lane), then tell it the job is refused."""
        log.warning("slurm job %d refused on %s: %s", slurm_job, node, reason)
        answer = Admission(slurm_job, False, job_id, reason)
        self.held.run(
            f"slurm job {slurm_job}: the refusal on {node}",
            lambda: self._record_refusal(node, slurm_job, job_id, reason),
            lambda _: self._post(node, answer),
            failed=lambda _exc: self._post(node, answer),  # refused all the same
        )

    def _record_repair(self, job_id: int, message: str) -> None:
        with transaction(self.engine) as session:
            record_event(session, message, level="error", job=session.get(Job, job_id))

    def _record_refusal(self, node: str, slurm_job: int, job_id: int | None, reason: str) -> None:
        with transaction(self.engine) as session:
            row = node_row(session, node)
            job = session.get(Job, job_id) if job_id is not None else None
            if job is not None:
                part = session.get(JobNode, (job.id, row.id))
                if part is None:
                    session.add(JobNode(job_id=job.id, node_id=row.id, refused_reason=reason))
                else:
                    part.refused_reason = reason
                    part.accepted_at = None
            if not health_drained(row):  # the node's own reason stays: it lifts it
                row.state = "drained"
                row.state_reason = f"{SLURM_REFUSAL}{slurm_job}: {reason}"
            record_event(
                session,
                f"node {node} refused slurm job {slurm_job}: {reason}",
                level="error",
                node=row,
                job=job,
            )

    def on_ended(self, node: str, message: SlurmEnded) -> None:
        """A node's epilog ran: record its exit, unpin, end the job after its last node."""
        ask_slurm = self.slurm is not None
        self.held.run(
            f"slurm job {message.slurm_job}: {node}'s epilog",
            lambda: self._record_end(node, message, ask_slurm),
            lambda status: self._node_ended(message, status, ask_slurm),
        )

    def _record_end(self, node: str, message: SlurmEnded, ask_slurm: bool) -> int | None:
        """In a database thread: ``node``'s exit; the job's worst status once every
        node's is in (its row ended here unless Slurm is asked), else None."""
        with transaction(self.engine) as session:
            job = session.get(Job, message.job)
            if job is None or job.scheduler != "slurm":
                return None
            row = node_row(session, node)
            part = session.get(JobNode, (job.id, row.id))
            if part is None or part.accepted_at is None or part.exit_status is not None:
                return None  # not admitted here, or ended already: idempotent
            part.exit_status = message.status
            unpinned = unpin_job(session, row, job)
            record_event(
                session,
                f"slurm job {message.slurm_job} on {node}: exit {message.status}, "
                f"{unpinned} objects unpinned",
                job=job,
                node=row,
            )
            parts = [p for p in job.nodes if p.accepted_at is not None]
            if not all(p.exit_status is not None for p in parts):
                return None
            status = max(p.exit_status or 0 for p in parts)
            if not ask_slurm:
                self._end(session, job, status, None)
            return status

    def _node_ended(self, message: SlurmEnded, status: int | None, ask_slurm: bool) -> None:
        """On the loop, after :meth:`_record_end`: after the job's last node, no late
        lookup comes; the row ends once Slurm's own final state is known."""
        if status is None:
            return
        if self.on_end is not None:
            self.on_end(message.job)
        if not ask_slurm:
            return
        # slurmd's epilog says exit 0 for a job Slurm killed (scancel, time
        # limit): the row ends once Slurm's own final state is known.
        future = asyncio.ensure_future(
            asyncio.to_thread(self.settle, message.job, message.slurm_job, status)
        )
        self._settling.add(future)
        future.add_done_callback(self._settling.discard)

    async def settled(self) -> None:
        """Wait until what the messages given so far say is written (and answered),
        and every job whose last epilog reported has its row ended."""
        await self.held.run("admission: settled", lambda: None)
        while len(self.held):  # what the follow-ups queued (a check's refusal)
            await self.held.run("admission: settled", lambda: None)
        if self._settling:
            await asyncio.gather(*self._settling, return_exceptions=True)

    @staticmethod
    def _end(session: Session, job: Job, status: int, slurm_state: str | None) -> None:
        job.state = SLURM_ENDED.get(slurm_state or "", "completed" if status == 0 else "failed")
        job.exit_status = status
        job.ended_at = utcnow()
        said = f" (Slurm: {slurm_state})" if slurm_state else ""
        record_event(session, f"job {job.id} {job.state} with status {status}{said}", job=job)

    def settle(
        self, job_id: int, slurm_job: int, status: int, *, wait_s: float = SETTLE_S
    ) -> str | None:
        """End the job row of a Slurm job whose every node's epilog reported
        ``status`` (the worst): as Slurm says when Slurm killed or failed it
        (CANCELLED, TIMEOUT...: that state, status 128+signal or its exit
        code), else from ``status``. Waits up to ``wait_s`` for slurmctld to
        finish the job (COMPLETING while epilogs run); Slurm's state, or None
        when it could not be asked (the epilogs' status is recorded then)."""
        found = self._final(slurm_job, wait_s)
        state = found.state if found is not None else None
        if found is not None and found.state in SLURM_ENDED:
            if found.signal:
                status = 128 + found.signal
            elif found.exit_code:
                status = max(status, found.exit_code)
            else:
                status = max(status, FAILED_STATUS)
        with transaction(self.engine) as session:
            job = session.get(Job, job_id)
            if job is None or job.state in ENDED_STATES:
                return state
            parts = [p for p in job.nodes if p.accepted_at is not None]
            if not parts or any(p.exit_status is None for p in parts):
                return state  # requeued and admitted again meanwhile: its end decides
            self._end(session, job, status, state)
        return state

    def _final(self, slurm_job: int, wait_s: float) -> SlurmJob | None:
        slurm = self.slurm() if self.slurm is not None else None
        if slurm is None:
            return None
        deadline = time.monotonic() + wait_s
        while True:
            try:
                found = slurm.job(slurm_job)
            except SlurmError as exc:
                log.warning("slurm job %d: cannot ask Slurm how it ended: %s", slurm_job, exc)
                return None
            if found.state not in ("COMPLETING", "RUNNING", "CONFIGURING", "SUSPENDED"):
                return found
            if time.monotonic() > deadline:
                return None
            time.sleep(0.2)


def _lift_slurm_drain(session: Session, row: Node, slurm_job: int) -> None:
    """Undo the DB drain a refused Slurm job made, once Slurm sends a job again.

    Slurm drained the node too when its prolog refused; Slurm placing a job there
    means an admin resumed it (``scontrol update ... state=resume``), so the DB
    follows instead of keeping a drain only ``beoctl node resume`` would lift. A
    drain of any other reason (``beoctl node drain``) is the admin's and stays."""
    if row.state != "drained" or not (row.state_reason or "").startswith(SLURM_REFUSAL):
        return
    was = row.state_reason
    row.state, row.state_reason = "up", None
    record_event(
        session,
        f"node {row.name}: resumed in Slurm (it admitted slurm job {slurm_job}); "
        f"the drain '{was}' is lifted",
        node=row,
    )
