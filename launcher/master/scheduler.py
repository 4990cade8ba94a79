"""The embedded FIFO scheduler: nodes for each job, prepare, exec, results, release.

Strict FIFO: the oldest pending job waits until ``nodes_requested`` connected
nodes are ``up`` (not busy, drained or down), and nothing behind it starts
first. A job runs only after every chosen node answered ``prepared`` accepted
(its cache holds and verified every file); one refusal drains that node with
the reason and fails the job, releasing the others.

The event loop never waits for the database: each change is written in a
database thread through one ordered lane (:mod:`launcher.master.heldwrites`),
and what follows from it (the ``exec``, the ``release``, the next placement)
happens on the loop once it is written; messages are posted to per-peer
queues (:mod:`launcher.master.links`).
A node that disconnects while its tasks run leaves the job running; its results
come with its next ``hello`` (``held``), also after a master restart, which keeps
running jobs and rebuilds their task placement from ``job_nodes``. Not forever:
a node not heard from for ``node_timeout_s`` (:mod:`launcher.master.silence`),
or back with an agent that no longer holds the job (it was killed and
restarted: ``hello.jobs`` lacks it), has its tasks lost; the job ends
``node_fail`` with the reason and its other nodes are released. Such a job is
not requeued: a rerun could repeat what the lost tasks already did (appended
output, files written); the user resubmits.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import pwd
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from cachefs.manifest import Manifest as CachefsManifest
from launcher.errors import DatabaseUnavailable, StateError
from launcher.master import fanout as distribution
from launcher.master.dbwork import DbWork
from launcher.master.heldwrites import HeldWrites
from launcher.master.jobnotices import record_notice
from launcher.master.jobs import JobRun
from launcher.master.outputbuffers import WatchQueue
from launcher.master.preparation import Preparation, accept, node_row, node_rows
from launcher.master.silence import NODE_TIMEOUT_S, SWEEP_S, Silence
from launcher.master.storerepair import StoreChecks
from launcher.state.base import utcnow
from launcher.state.db import transaction
from launcher.state.models import ENDED_STATES, CachePin, Job, JobNode, Node
from launcher.state.record import record_event
from launcher.wire import (
    Done,
    Error,
    Exec,
    Exited,
    FillReport,
    Message,
    Notice,
    Output,
    Prepared,
    Progress,
    Release,
    Signal,
    WireError,
    decode,
    encode_sharing,
)

log = logging.getLogger(__name__)

UNFINISHED = ("pending", "preparing", "running")
#: Ended jobs whose Done (with its reason) is kept in memory for late watchers.
ENDED_KEPT = 1000
#: How a master-side failure (refusal, lost node, unknown user) ends a job.
FAILED_STATUS = 1
#: Damaged store objects repaired per job before a refusal drains the node.
MAX_REPAIRS = 3
#: Nodes lost while a job prepares that free nodes replace before it fails.
MAX_REPLACEMENTS = 3
#: Why a job the master was preparing when it stopped ended (at its restart).
INTERRUPTED = "the master restarted while the job was being prepared; nothing ran: submit it again"

#: (run) -> None to start it at once, or an awaitable of the reason not to start it
#: (None: start). Asked once every node accepted, before exec (batch output files).
Gate = Callable[[JobRun], Awaitable[str | None] | None]


class Scheduler:
    """Jobs from submission to ``done``; nodes between ``up`` and ``busy``."""

    def __init__(
        self,
        preparation: Preparation,
        db: DbWork,
        *,
        node_timeout_s: float = NODE_TIMEOUT_S,
        gate: Gate | None = None,
        admission: Callable[[str, Message], bool] | None = None,
        late: Callable[[str, Message], bool] | None = None,
        on_end: Callable[[int], None] | None = None,
        on_launch: Callable[[float], None] | None = None,
    ) -> None:
        #: prepare messages and acceptance records (shared with Slurm admission)
        self.preparation = preparation
        self.engine = preparation.engine
        self.links = preparation.links
        #: when each node was last heard from: a silent node's tasks are lost
        self.silence = Silence(timeout_s=node_timeout_s)
        #: the database work of jobs, in order, in a database thread (heldwrites.py)
        self.held = HeldWrites(db, on_drained=self.schedule)
        #: a placement of the queue's oldest job is on its way through :attr:`held`
        self._scheduling = False
        self.queue: deque[int] = deque()
        self.runs: dict[int, JobRun] = {}
        self.ended: dict[int, Done] = {}
        #: watchers of jobs still queued; moved onto the run when it starts
        self._early: dict[int, set[asyncio.Queue[Message]]] = {}
        self.gate = gate
        #: Slurm jobs' messages (admission.SlurmAdmission.on_message): True when taken
        self.admission = admission
        #: late lookups (late.LateFiles.on_message): True when taken
        self.late = late
        #: told each job id that ends here (late.LateFiles.job_ended)
        self.on_end = on_end
        #: told the seconds from each job's submission to its exec sent to every
        #: node (metrics.Metrics.launched); jobs queued before a restart are not timed
        self.on_launch = on_launch
        #: job id -> time.monotonic() at its submission, until its exec is sent or it ends
        self._submitted: dict[int, float] = {}
        self._gating: set[asyncio.Future[str | None]] = set()  # kept: the loop holds tasks weakly
        self._checks: set[asyncio.Task[None]] = set()  # store checks, release lookups: kept too
        #: checks of objects nodes could not verify (storerepair.py)
        self.store_checks = StoreChecks(preparation.store)
        #: jobs :meth:`recover` ended as INTERRUPTED -> the nodes that had answered
        #: (batch.BatchOutput.resume writes the reason to their files)
        self.interrupted: dict[int, list[str]] = {}

    # --- start and submit -------------------------------------------------------

    def recover(self) -> None:
        """After a (re)start: queue pending jobs, keep running ones, fail half-prepared ones.

        A job that was preparing has no placement worth keeping (some nodes may
        not have answered); it fails with a reason rather than waiting forever.
        """
        with transaction(self.engine) as session:
            jobs = session.scalars(
                select(Job)
                .where(Job.state.in_(UNFINISHED), Job.scheduler == "local")
                .order_by(Job.id)
            ).all()
            for job in jobs:
                if job.state == "pending":
                    self.queue.append(job.id)
                elif job.state == "preparing":
                    self._end_in_db(session, job, FAILED_STATUS, "failed", [], set(), INTERRUPTED)
                    record_event(
                        session, f"job {job.id} failed: {INTERRUPTED}", level="warning", job=job
                    )
                    self.ended[job.id] = Done(job.id, FAILED_STATUS, INTERRUPTED)
                    self.interrupted[job.id] = sorted(
                        r.node.name or f"#{r.node_id}" for r in job.nodes
                    )
                else:
                    rows = [r for r in job.nodes if r.accepted_at is not None]
                    names = sorted(r.node.name or f"#{r.node_id}" for r in rows)
                    run = JobRun(job.id, job.uid, job.tasks, names, state="running")
                    for row in rows:
                        if row.exit_status is not None:
                            name = row.node.name or f"#{row.node_id}"
                            run.recorded.add(name)
                            for task in run.tasks_of(name):
                                run.statuses[task] = row.exit_status
                    self.runs[job.id] = run
        self.schedule()

    def submit(self, job_id: int) -> None:
        self._submitted[job_id] = time.monotonic()
        self.queue.append(job_id)
        self.schedule()

    def schedule(self) -> None:
        """Start the oldest pending job if enough nodes are free, then the next:
        one placement at a time through the database lane (while the database is
        away it waits there; with too few nodes, the next heartbeat asks again)."""
        if self._scheduling or not self.queue:
            return
        self._scheduling = True
        job_id = self.queue[0]
        connected = list(self.links)
        self.held.run(
            f"the placement of job {job_id}",
            lambda: self._place(job_id, connected),
            lambda placed: self._placed(job_id, placed),
            failed=lambda _exc: self._placed(job_id, None),
        )

    def _place(self, job_id: int, connected: list[str]) -> Placement | None:
        """In a database thread: claim free nodes among ``connected`` for job
        ``job_id`` and read what its nodes will be sent; None while too few are
        free; a Placement without nodes when the job is no longer pending."""
        with transaction(self.engine) as session:
            job = session.get(Job, job_id)
            if job is None or job.state != "pending":
                return Placement(job_id, 0, 0, [], "", None)
            free = sorted(
                name
                for name in session.scalars(
                    select(Node.name).where(Node.name.in_(connected), Node.state == "up")
                )
                if name is not None
            )
            if len(free) < job.nodes_requested:
                return None
            chosen = free[: job.nodes_requested]
            job.state = "preparing"
            for node in session.scalars(select(Node).where(Node.name.in_(chosen))):
                node.state = "busy"
                node.state_reason = f"job {job.id}"
            record_event(session, f"job {job.id} preparing on {', '.join(chosen)}", job=job)
            placed = Placement(job.id, job.uid, job.tasks, chosen, job.manifest_id, job.late_policy)
        placed.document = self.preparation.document(placed.manifest_id)
        placed.held = distribution.held(self.engine, chosen, placed.document)
        return placed

    def _placed(self, job_id: int, placed: Placement | None) -> None:
        """On the loop, after :meth:`_place`: send the job's nodes their prepare."""
        self._scheduling = False
        if placed is None:
            return  # waits for nodes (or the placement failed: logged; tried again)
        if self.queue and self.queue[0] == job_id:
            self.queue.popleft()
        if placed.nodes:
            self._prepare(placed)
        else:  # no longer pending: ended elsewhere
            self._submitted.pop(job_id, None)
        self.schedule()

    def _prepare(self, placed: Placement) -> None:
        chosen = placed.nodes
        log.info("job %d preparing on %s", placed.job_id, ", ".join(chosen))
        run = JobRun(placed.job_id, placed.uid, placed.tasks, chosen, waiting=set(chosen))
        self.runs[placed.job_id] = run
        run.watchers |= self._early.pop(placed.job_id, set())
        gone = [name for name in chosen if name not in self.links]
        if gone:  # it went away while the database was claiming it
            self.finish(run, FAILED_STATUS, f"node {gone[0]} disconnected as the job was placed")
            return
        prep = self.preparation
        sources = distribution.assign(
            chosen, self.links, prep.sources, fanout=prep.fanout, held=placed.held
        )
        document = placed.document
        objects = [e["sha256"] for e in document.get("entries", ()) if e.get("kind") == "file"]
        run.prepares.update(
            prep.prepares(
                placed.job_id, placed.manifest_id, document, objects, placed.late, sources
            )
        )
        texts = encode_sharing([run.prepares[name] for name in chosen], "manifest")
        for name, text in zip(chosen, texts, strict=True):
            self.links[name].post(text)

    # --- node messages ----------------------------------------------------------

    def on_message(self, node: str, message: Message) -> None:
        """A message from a node agent (hello and heartbeat are handled before here)."""
        if self.late is not None and self.late(node, message):
            return
        if self.admission is not None and self.admission(node, message):
            return
        if isinstance(message, Prepared):
            self.on_prepared(node, message)
        elif isinstance(message, Output | Progress):
            run = self.runs.get(message.job)
            if run is not None and node in run.nodes:
                run.publish(replace(message, node=node))
        elif isinstance(message, Exited):
            self.on_exited(node, message)
        elif isinstance(message, Notice):
            self.on_notice(node, message)
        elif isinstance(message, Error):
            log.warning("node %s: %s", node, message.message)
            self.held.run(f"the error {node} reported", lambda: self._record_error(node, message))

    def on_notice(self, node: str, message: Notice) -> None:
        """A node's notice about a job (jobnotices.py): to its watchers, and an event."""
        run = self.runs.get(message.job)
        if run is not None and node in run.nodes:
            run.publish(replace(message, node=node))
        self.held.run(f"the notice {node} sent", lambda: record_notice(self.engine, node, message))

    def _record_error(self, node: str, message: Error) -> None:
        with transaction(self.engine) as session:
            record_event(
                session,
                f"node {node} reported: {message.message}",
                level="warning",
                node=node_row(session, node),
            )

    def on_prepared(self, node: str, message: Prepared) -> None:
        run = self.runs.get(message.job)
        if run is None or run.state != "preparing" or node not in run.waiting:
            return
        if not message.accepted:
            reason = message.reason or "no reason given"
            if message.corrupt is not None and run.repairs < MAX_REPAIRS:
                self._check_store(run, node, message.corrupt, reason)
            elif message.full:  # busy, not broken: the node stays in service
                self.finish(run, FAILED_STATUS, f"node {node} has no room: {reason}; retry later")
            else:
                self._refused(run, node, reason)
            return
        # Recorded with the others when the last node accepts (one transaction, not
        # one per node): a job still preparing at a master restart fails anyway.
        run.fills[node] = self.preparation.filled(node, message)
        run.waiting.discard(node)
        if not run.waiting:
            self._exec_after_gate(run)

    def _check_store(self, run: JobRun, node: str, sha256: str, reason: str) -> None:
        """A node could verify no copy of ``sha256``: check the store's before
        blaming the node (storerepair.py); fill again once it is repaired."""
        run.repairs += 1
        manifest = CachefsManifest.from_document(run.prepares[node].manifest)

        async def check() -> None:
            found, first = await self.store_checks.check(run.job_id, sha256, manifest, run.uid)
            if self.runs.get(run.job_id) is not run or run.ending:
                return
            if not found.damaged:
                self._refused(run, node, reason)
                return
            if first:
                self.held.run(
                    f"the store repair for job {run.job_id}",
                    lambda: self._record_repair(run, found.message),
                )
            if found.repaired and node in self.links:
                self.links[node].post(run.prepares[node])  # the node fills again
            else:
                self.finish(run, FAILED_STATUS, found.message)

        task = asyncio.get_running_loop().create_task(check())
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    def _record_repair(self, run: JobRun, message: str) -> None:
        with transaction(self.engine) as session:
            job = session.get_one(Job, run.job_id)
            record_event(session, message, level="error", job=job)
        log.error("job %d: %s", run.job_id, message)

    def _exec_after_gate(self, run: JobRun) -> None:
        """Exec ``run`` now, or once :attr:`gate` let it (failing it with the gate's reason)."""
        waiting = self.gate(run) if self.gate is not None else None
        if waiting is None:
            self._exec(run)
            return

        def passed(future: asyncio.Future[str | None]) -> None:
            self._gating.discard(future)
            if self.runs.get(run.job_id) is not run or run.state != "preparing":
                return  # cancelled or failed meanwhile
            if future.cancelled():
                reason: str | None = "the master stopped before the job started"
            elif future.exception() is not None:
                reason = f"cannot start: {future.exception()}"
            else:
                reason = future.result()
            if reason:
                self.finish(run, FAILED_STATUS, reason)
            else:
                self._exec(run)

        future = asyncio.ensure_future(waiting)
        self._gating.add(future)
        future.add_done_callback(passed)

    def _exec(self, run: JobRun) -> None:
        if self.runs.get(run.job_id) is not run or run.state != "preparing" or run.ending:
            return  # ended meanwhile (while this waited for the database, say)
        gone = [name for name in run.nodes if name not in self.links]
        if gone:
            self.finish(run, FAILED_STATUS, f"node {gone[0]} disconnected before the job started")
            return
        fills = dict(run.fills)
        self.held.run(
            f"the start of job {run.job_id}",
            lambda: self._record_start(run.job_id, fills),
            lambda template: self._started(run, template),
            failed=lambda exc: self.finish(run, FAILED_STATUS, f"cannot start: {exc}"),
        )

    def _record_start(self, job_id: int, fills: dict[str, FillReport]) -> dict[str, Any] | None:
        """In a database thread: every node accepted ``job_id``; record that and its
        start; the exec template (None: its uid has no account here)."""
        with transaction(self.engine) as session:
            job = session.get_one(Job, job_id)
            objects = self.preparation.objects(job.manifest_id)
            rows = node_rows(session, list(fills))
            accept(
                session, job, {name: (rows[name], fill) for name, fill in fills.items()}, objects
            )
            try:
                account = pwd.getpwuid(job.uid)
            except KeyError:
                return None
            job.state = "running"
            job.started_at = utcnow()
            record_event(session, f"job {job.id} running {job.tasks} tasks", job=job)
            return {
                "argv": list(job.argv or []),
                "env": dict(job.environment or {}),
                "cwd": job.cwd or account.pw_dir,
                "uid": job.uid,
                "gid": account.pw_gid,
                "groups": os.getgrouplist(account.pw_name, account.pw_gid),
                # A home the master lacks too (a service account, a user
                # made with no home) is none: nothing to bind, nothing to say.
                "home": account.pw_dir if os.path.isdir(account.pw_dir) else None,
                # The user API admitted a root job only if the config allows
                # root jobs; nodes refuse uid 0 unless told so here.
                "allow_root": job.uid == 0,
            }

    def _started(self, run: JobRun, template: dict[str, Any] | None) -> None:
        """On the loop, after :meth:`_record_start`: send each node its tasks."""
        if self.runs.get(run.job_id) is not run or run.ending:
            return  # ended meanwhile: its end, queued behind, is written next
        if template is None:
            self.finish(run, FAILED_STATUS, f"uid {run.uid} has no account on the master")
            return
        run.state = "running"
        for name in run.nodes:
            link = self.links.get(name)
            if link is not None:  # gone meanwhile: its silence ends the job
                tasks = [{"task": t, **template} for t in run.tasks_of(name)]
                link.post(Exec(run.job_id, tasks))
        submitted = self._submitted.pop(run.job_id, None)
        if submitted is not None and self.on_launch is not None:
            self.on_launch(time.monotonic() - submitted)

    def on_exited(self, node: str, message: Exited) -> None:
        run = self.runs.get(message.job)
        if run is None or run.state != "running" or node not in run.nodes:
            return
        task = message.task
        if not 0 <= task < run.tasks or run.node_of(task) != node or task in run.statuses:
            return
        run.statuses[task] = message.status
        run.add_rusage(node, message.rusage)
        run.publish(replace(message, node=node))
        if run.done():
            self.finish(run, run.worst(), None)
        elif run.node_done(node):
            # Kept at once (a master restart must know this node is done), but
            # the nodes ending in the same loop turn share one transaction.
            run.unrecorded.append(node)
            if len(run.unrecorded) == 1:
                asyncio.get_running_loop().call_soon(self._record_node_exits, run)

    def _record_node_exits(self, run: JobRun) -> None:
        """Queue the record of each node of ``run.unrecorded`` (its end took them if
        it came first)."""
        if not run.unrecorded or run.ending:
            return
        exits = self._take_exits(run)
        self.held.run(
            f"node exits of job {run.job_id}", lambda: self._write_exits(run.job_id, exits)
        )

    @staticmethod
    def _take_exits(run: JobRun) -> list[NodeExit]:
        """``run.unrecorded`` as snapshots to write, now counted as recorded (the
        lane writes them, after a database outage too)."""
        exits = [
            NodeExit(node, run.node_status(node), dict(run.rusage.get(node, {})))
            for node in run.unrecorded
        ]
        run.recorded.update(run.unrecorded)
        run.unrecorded.clear()
        return exits

    def _write_exits(
        self, job_id: int, exits: list[NodeExit], session: Session | None = None
    ) -> None:
        """Record each node's worst status and its tasks' usage."""
        if not exits:
            return
        if session is None:
            with transaction(self.engine) as own:
                self._write_exits(job_id, exits, own)
            return
        job = session.get_one(Job, job_id)
        rows = node_rows(session, [e.node for e in exits])
        parts = {
            p.node_id: p for p in session.scalars(select(JobNode).where(JobNode.job_id == job.id))
        }
        for end in exits:
            row = rows[end.node]
            part = parts.get(row.id)
            if part is not None:
                part.exit_status = end.status
            usage = end.usage
            record_event(
                session,
                f"job {job_id} on {end.node}: exit {end.status}, "
                f"utime {usage.get('utime', 0.0):.3f} s, "
                f"stime {usage.get('stime', 0.0):.3f} s, "
                f"maxrss {int(usage.get('maxrss', 0))} KiB",
                job=job,
                node=row,
            )

    def on_hello(
        self, node: str, held: list[dict[str, Any]], jobs: list[int] | None = None
    ) -> None:
        """A node (re)connected: take the results it held; a running job whose tasks
        there it no longer holds (``jobs``: the jobs its agent holds; None from an
        agent too old to say) lost them; then look for work for it."""
        self.silence.heard(node)
        for doc in held:
            try:
                message = decode(json.dumps({"v": 1, "type": "exited", **doc}), {"exited": Exited})
            except (WireError, TypeError):
                continue
            assert isinstance(message, Exited)
            self.on_exited(node, message)
        if jobs is not None:
            holds = {j for j in jobs if isinstance(j, int) and not isinstance(j, bool)}
            self._release_ended(node, holds)
            for run in list(self.runs.values()):
                if (
                    run.state == "running"
                    and node in run.nodes
                    and not run.node_done(node)
                    and run.job_id not in holds
                ):
                    self.lose(
                        run,
                        node,
                        f"node {node}'s agent came back without the job's tasks "
                        "(it was restarted; they were killed)",
                    )
        self.schedule()

    def _release_ended(self, node: str, holds: set[int]) -> None:
        """Jobs ``node`` still holds that ended here meanwhile (lost while it was
        cut off, say): release them there, so their tasks are killed. Which ended
        is read in a database thread; the release is posted on the loop."""
        unknown = holds - set(self.runs)
        if not unknown:
            return
        task = asyncio.get_running_loop().create_task(self._release_if_ended(node, unknown))
        self._checks.add(task)
        task.add_done_callback(self._checks.discard)

    async def _release_if_ended(self, node: str, unknown: set[int]) -> None:
        def live_of(session: Session) -> set[int]:
            return set(
                session.scalars(
                    select(Job.id).where(Job.id.in_(unknown), Job.state.not_in(ENDED_STATES))
                )
            )

        try:
            live = await self.held.db.read(live_of)
        except DatabaseUnavailable:
            return  # asked again at the node's next hello
        link = self.links.get(node)
        for job_id in sorted(unknown - live - set(self.runs)):  # placed meanwhile: not ended
            log.info("node %s still holds job %d, which ended: released there", node, job_id)
            if link is not None:
                link.post(Release(job_id))

    def on_node_lost(self, node: str) -> None:
        """A node stayed away past the grace time: a free node takes its place in
        a job it was preparing (nothing ran there yet), or, with none free, that
        job fails. (A running job's tasks there are lost once the node is silent
        for the node timeout: :meth:`sweep_silent`.)"""
        for run in list(self.runs.values()):
            if run.state == "preparing" and node in run.nodes and not run.ending:
                self._replace(run, node)

    def _replace(self, run: JobRun, lost: str) -> None:
        """Claim a free node for ``run`` in place of ``lost`` (in the lane), then
        send it the job's prepare; the other nodes' fills go on untouched (children
        of ``lost`` in the peer tree already fell back to their grandparent)."""
        reason = f"node {lost} disconnected while preparing"
        if run.replaced >= MAX_REPLACEMENTS:
            self.finish(run, FAILED_STATUS, f"{reason} ({run.replaced} nodes replaced already)")
            return
        run.replaced += 1
        taken = {name for r in self.runs.values() for name in r.nodes}
        free = sorted(name for name in self.links if name not in taken)
        self.held.run(
            f"a node in place of {lost} for job {run.job_id}",
            lambda: self._claim_spare(run.job_id, lost, free),
            lambda spare: self._swap(run, lost, spare, reason),
            failed=lambda exc: self.finish(run, FAILED_STATUS, f"{reason}: {exc}"),
        )

    def _claim_spare(self, job_id: int, lost: str, free: list[str]) -> str | None:
        """In a database thread: the first of ``free`` that is up, now busy with
        job ``job_id``; None when none is."""
        with transaction(self.engine) as session:
            spare = session.scalars(
                select(Node).where(Node.name.in_(free), Node.state == "up").order_by(Node.name)
            ).first()
            if spare is None:
                return None
            spare.state = "busy"
            spare.state_reason = f"job {job_id}"
            job = session.get_one(Job, job_id)
            record_event(
                session,
                f"job {job_id}: node {lost} disconnected while preparing; "
                f"{spare.name} takes its place",
                level="warning",
                job=job,
                node=spare,
            )
            return spare.name

    def _swap(self, run: JobRun, lost: str, spare: str | None, reason: str) -> None:
        """On the loop, after :meth:`_claim_spare`: ``spare`` prepares in ``lost``'s place."""
        current = self.runs.get(run.job_id) is run and run.state == "preparing" and not run.ending
        link = self.links.get(spare) if spare is not None else None
        if spare is not None and (not current or link is None):
            self._free(spare)  # claimed for nothing: the job ended, or it went away too
        if not current:
            return
        if spare is None or link is None:
            self.finish(run, FAILED_STATUS, f"{reason}, and no free node could take its place")
            return
        log.warning("job %d: %s; %s takes its place", run.job_id, reason, spare)
        run.swap(lost, spare)
        # From the master: the tree's other nodes may be filling still.
        first = next(iter(run.prepares.values()))
        run.prepares.pop(lost, None)
        run.prepares[spare] = replace(first, sources=self.preparation.sources(link))
        link.post(run.prepares[spare])

    def _free(self, name: str) -> None:
        def record() -> None:
            with transaction(self.engine) as session:
                row = node_row(session, name)
                if row.state == "busy":
                    row.state, row.state_reason = "up", None

        self.held.run(f"{name} back to up", record)

    def sweep_silent(self) -> None:
        """End the jobs whose tasks run on a node silent past the node timeout."""
        for run in list(self.runs.values()):
            if run.state != "running" or run.ending:
                continue
            for node in run.nodes:
                reason = None if run.node_done(node) else self.silence.lost(node)
                if reason is not None:
                    link = self.links.get(node)
                    if link is not None:  # connected but mute: a hung agent, a cut cable
                        link.close(f"silent for {self.silence.timeout_s:g} s")
                    self.lose(run, node, reason)
                    break

    async def watch_silence(self) -> None:
        """Run :meth:`sweep_silent` every SWEEP_S seconds, until cancelled."""
        while True:
            await asyncio.sleep(SWEEP_S)
            try:
                self.sweep_silent()
            except Exception:  # the next sweep tries again; never stop watching
                log.exception("looking for silent nodes failed")

    def lose(self, run: JobRun, node: str, reason: str) -> None:
        """``node``'s unfinished tasks of ``run`` are lost: the job ends ``node_fail``
        with ``reason`` (the others nodes are released and kill theirs)."""
        if run.ending:
            return
        self.held.run(f"{node}'s loss", lambda: self._record_loss(run, node, reason))
        self.finish(run, FAILED_STATUS, reason, state="node_fail")

    def _record_loss(self, run: JobRun, node: str, reason: str) -> None:
        with transaction(self.engine) as session:
            job = session.get_one(Job, run.job_id)
            row = node_row(session, node)
            part = session.get(JobNode, (job.id, row.id))
            if part is not None:
                part.lost_reason = reason
            if row.state in ("busy", "up"):
                row.state = "down"
                row.state_reason = reason
            record_event(session, reason, level="error", node=row, job=job)

    def _refused(self, run: JobRun, node: str, reason: str) -> None:
        if run.ending:
            return
        what = f"{node}'s refusal of job {run.job_id}"
        self.held.run(what, lambda: self._record_refusal(run, node, reason))
        self.finish(run, FAILED_STATUS, f"node {node} refused the job: {reason}")

    def _record_refusal(self, run: JobRun, node: str, reason: str) -> None:
        with transaction(self.engine) as session:
            job = session.get_one(Job, run.job_id)
            row = node_row(session, node)
            session.add(JobNode(job_id=job.id, node_id=row.id, refused_reason=reason))
            row.state = "drained"
            row.state_reason = f"refused job {job.id}: {reason}"
            record_event(
                session,
                f"node {node} refused job {job.id}: {reason}",
                level="error",
                node=row,
                job=job,
            )

    # --- users ------------------------------------------------------------------

    async def watch(self, job_id: int) -> asyncio.Queue[Message] | Done | None:
        """A queue of the job's messages, its Done when it has ended, None if unknown
        here. A job not in memory is looked up in a database thread."""
        known = self._watch_known(job_id)
        if known is not None:
            return known

        def ended_of(session: Session) -> Done | bool | None:
            job = session.get(Job, job_id)
            if job is None:
                return None
            if job.state in ENDED_STATES:
                status = job.exit_status if job.exit_status is not None else 1
                return Done(job_id, status, job.reason)
            return False  # not ended: watched until it is

        found = await self.held.db.read(ended_of)
        known = self._watch_known(job_id)  # started or ended while the database answered
        if known is not None:
            return known
        if found is None or isinstance(found, Done):
            return found
        queue: asyncio.Queue[Message] = WatchQueue()  # bounded in bytes: outputbuffers.py
        self._early.setdefault(job_id, set()).add(queue)
        return queue

    def _watch_known(self, job_id: int) -> asyncio.Queue[Message] | Done | None:
        """:meth:`watch` for a job in memory (running here, or ended lately); None otherwise."""
        run = self.runs.get(job_id)
        if run is not None:
            return run.watch()
        return self.ended.get(job_id)

    def unwatch(self, job_id: int, queue: asyncio.Queue[Message]) -> None:
        run = self.runs.get(job_id)
        if run is not None:
            run.watchers.discard(queue)
        self._early.get(job_id, set()).discard(queue)

    async def signal(self, job_id: int, signum: int) -> str:
        """Forward ``signum`` to a running job's nodes, or cancel a job not yet running.

        SIGKILL also ends a running job at once when one of its nodes is away.
        Returns what was done ("sent", "killed", "cancelled" or "ended")."""
        run = self.runs.get(job_id)
        if run is not None and run.state == "running":
            for name in run.nodes:
                if name in self.links:
                    self.links[name].post(Signal(job_id, signum))
            away = [n for n in run.nodes if n not in self.links and not run.node_done(n)]
            if away and signum == signal.SIGKILL:
                # Nothing can reach those tasks now; SIGKILL is the user saying
                # "stop waiting". Their node releases the job when it is back.
                self.finish(run, 128 + signum, f"killed while node {away[0]} was away")
                return "killed"
            return "sent"
        if run is not None:
            self.finish(run, 128 + signum, f"cancelled by signal {signum}", state="cancelled")
            return "cancelled"
        # Not here: in the database, after whatever placement of it is queued.
        if self.held.away:
            raise DatabaseUnavailable(str(self.engine.url), "it is away; writes are held")
        connected = set(self.links)
        outcome: list[str] = []
        await self.held.run(
            f"the cancel of job {job_id}",
            lambda: self._cancel_in_db(job_id, signum, connected),
            lambda done: outcome.append(self._cancelled(job_id, signum, done)),
        )
        if not outcome:
            raise StateError(
                f"job {job_id}: the cancel could not be written (see the master's log)"
            )
        return outcome[0]

    def _cancel_in_db(self, job_id: int, signum: int, connected: set[str]) -> Done | None:
        """In a database thread: end a job this master does not run; its Done
        (None: it had ended, or is not this scheduler's)."""
        reason = f"cancelled by signal {signum}"
        with transaction(self.engine) as session:
            job = session.get(Job, job_id)
            if job is None or job.scheduler != "local" or job.state in ENDED_STATES:
                return None
            if job.state != "pending":
                # Running by the database, unknown to this master: nothing will
                # ever end it but this (its nodes release it when they see it).
                reason = f"killed by signal {signum}; no node held it any more"
                nodes = [r.node.name for r in job.nodes if r.node.name is not None]
                self._end_in_db(session, job, 128 + signum, "cancelled", nodes, connected, reason)
                record_event(session, f"job {job.id} {reason}", level="warning", job=job)
            else:
                self._end_in_db(session, job, 128 + signum, "cancelled", [], connected, reason)
        return Done(job_id, 128 + signum, reason)

    def _cancelled(self, job_id: int, signum: int, done: Done | None) -> str:
        run = self.runs.get(job_id)
        if run is not None:  # placed just before the cancel: stop what was placed
            self.finish(run, 128 + signum, f"cancelled by signal {signum}", state="cancelled")
            return "cancelled"
        if done is None:
            return "ended"
        self._announce(job_id, done, None)
        return "cancelled"

    # --- the end ----------------------------------------------------------------

    def finish(
        self, run: JobRun, status: int, reason: str | None, *, state: str | None = None
    ) -> None:
        """End ``run``: record it, release its nodes, tell its watchers, start what waits.

        Once: a run already ending is left to its first end. The record goes
        through the database lane (heldwrites.py: after what was queued before,
        and when the database is back if it is away); the rest follows it."""
        if run.ending or self.runs.get(run.job_id) is not run:
            return
        run.ending = reason or f"status {status}"
        final = state or ("completed" if status == 0 and reason is None else "failed")
        if run.state == "running":
            run.unrecorded.extend(
                n
                for n in run.nodes
                if run.node_done(n) and n not in run.unrecorded and n not in run.recorded
            )
        exits = self._take_exits(run)
        connected = set(self.links)
        nodes = list(run.nodes)

        def record() -> None:
            with transaction(self.engine) as session:
                self._write_exits(run.job_id, exits, session)
                job = session.get_one(Job, run.job_id)
                self._end_in_db(session, job, status, final, nodes, connected, reason)
                record_event(
                    session,
                    f"job {job.id} {final} with status {status}"
                    + (f": {reason}" if reason else ""),
                    level="info" if final == "completed" else "warning",
                    job=job,
                )

        self.held.run(
            f"the end of job {run.job_id}",
            record,
            lambda _: self._ended(run, status, reason, final),
            failed=lambda _exc: self._ended(run, status, reason, final),
        )

    def _ended(self, run: JobRun, status: int, reason: str | None, final: str) -> None:
        """On the loop, once the end of ``run`` is recorded: release, tell, go on."""
        for name in run.nodes:
            if name in self.links:
                self.links[name].post(Release(run.job_id))
        log.info(
            "job %d %s with status %d%s", run.job_id, final, status, f": {reason}" if reason else ""
        )
        self.runs.pop(run.job_id, None)
        self.store_checks.forget(run.job_id)
        if self.on_end is not None:
            self.on_end(run.job_id)
        self._announce(run.job_id, Done(run.job_id, status, reason), run)
        self.schedule()

    def _announce(self, job_id: int, done: Done, run: JobRun | None) -> None:
        self._submitted.pop(job_id, None)
        self.ended[job_id] = done
        while len(self.ended) > ENDED_KEPT:  # older ones are answered from the database
            del self.ended[next(iter(self.ended))]
        if run is not None:
            run.publish(done)
        for queue in self._early.pop(job_id, set()):
            queue.put_nowait(done)

    @staticmethod
    def _end_in_db(
        session: Session,
        job: Job,
        status: int,
        state: str,
        nodes: list[str],
        connected: set[str],
        reason: str | None = None,
    ) -> None:
        job.state = state
        job.exit_status = status
        job.reason = reason
        job.ended_at = utcnow()
        rows = node_rows(session, nodes)
        if nodes:
            session.execute(
                delete(CachePin).where(
                    CachePin.job_id == job.id, CachePin.node_id.in_([r.id for r in rows.values()])
                )
            )
        for name, row in rows.items():
            if row.state == "busy":
                row.state = "up" if name in connected else "down"
                row.state_reason = None


@dataclass(frozen=True)
class NodeExit:
    """A node whose tasks all ended, as its record is written."""

    node: str
    status: int
    usage: dict[str, float]


@dataclass
class Placement:
    """A pending job's claim on free nodes, and what its nodes will be sent."""

    job_id: int
    uid: int
    tasks: int
    #: the claimed nodes, sorted; none when the job was no longer pending
    nodes: list[str]
    manifest_id: str
    late: str | None
    document: dict[str, Any] = field(default_factory=dict)
    #: node -> how much of the job its cache holds already (fanout.held)
    held: dict[str, int] = field(default_factory=dict)
