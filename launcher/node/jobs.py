"""The jobs a node agent holds: prepare (fill and pin), exec, signal, release.

Each message from the master is handled in its own asyncio task, so a long
cache fill never stops the agent from reading the socket; the steps of one job
that change its environment root (exec, release) take the job's lock in turn.
Results go out through the :class:`~launcher.node.outbox.Outbox`: a task's
output is dropped while the master is away, its exit is held until it is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from cachefs.cache import FillProgress, FillReport, NodeCache
from cachefs.errors import CachefsError, CacheFullError, CorruptObjectError
from cachefs.manifest import Manifest
from cachefs.source import ObjectSource
from launcher import wire
from launcher.envconfig import NodeEnvSettings
from launcher.errors import BeolaunchError
from launcher.node.outbox import Outbox
from launcher.node.peers import PeerTokens
from launcher.node.requests import envroot_of, refusal, sources_of, start_status, task_of
from launcher.node.roots.envroot import EnvRoot
from launcher.node.roots.late import LateBridge, LateLookups
from launcher.node.roots.nodefiles import NodeFiles
from launcher.node.roots.pool import KEEP, RootPool
from launcher.node.roots.sitebinds import plan_binds
from launcher.node.roots.tmpseed import seed_tmp
from launcher.node.roots.userdirs import leftover_roots, remove_empty_user_dirs, user_dir
from launcher.node.tasks.sandbox import RunningTask, start_task

PROGRESS_INTERVAL_S = 0.2  # how often a fill's progress goes to the master
log = logging.getLogger(__name__)

#: Largest ``output`` payload (bytes before base64).
OUTPUT_CHUNK = 64 * 1024


@dataclass
class Job:
    id: int
    manifest: Manifest | None = None
    root: EnvRoot | None = None
    tmp: Path | None = None
    #: what the master's ``[envroot]`` asks of this job's root (sent in ``prepare``)
    env: NodeEnvSettings = field(default_factory=NodeEnvSettings)
    tasks: dict[int, RunningTask] = field(default_factory=dict)
    pumps: set[asyncio.Task[None]] = field(default_factory=set)
    filling: asyncio.Task[None] | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: where the job's objects are (for files it fetches late)
    sources: list[ObjectSource] = field(default_factory=list)


class Jobs:
    """Every job this agent holds, keyed by job id."""

    def __init__(
        self,
        cache: NodeCache,
        roots_dir: Path,
        outbox: Outbox,
        *,
        keep_roots: int = KEEP,
        tokens: PeerTokens | None = None,
        site_binds: tuple[str, ...] = (),
    ) -> None:
        self.cache = cache
        #: this node's site filesystems (a booted node's [[boot.mounts]] targets),
        #: bound into every root as the master's [envroot] binds are
        self.site_binds = site_binds
        self.roots_dir = roots_dir
        self.outbox = outbox
        #: the job capabilities this node's peer service accepts
        self.tokens = tokens if tokens is not None else PeerTokens()
        self.pool = RootPool(cache, keep=keep_roots)
        #: this node's own files in every root ([envroot] node_files)
        self.node_files = NodeFiles(cache)
        self._jobs: dict[int, Job] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        #: paths jobs look up late (launcher/node/roots/late.py)
        self.late = LateLookups(cache, outbox)
        self._loop: asyncio.AbstractEventLoop | None = None

    def handle(self, message: wire.Message) -> None:
        """Start handling one message from the master (returns at once)."""
        if isinstance(message, wire.Prepare):
            job = self._job(message.job)
            job.filling = self._spawn(self.prepare(job, message))
        elif isinstance(message, wire.Exec):
            self._spawn(self.exec(self._job(message.job), message))
        elif isinstance(message, wire.Signal):
            self.signal(message.job, message.signum)
        elif isinstance(message, wire.Release):
            self._spawn(self.release(message.job))
        elif isinstance(message, wire.LateAnswer):
            self.late.answered(message)
        elif isinstance(message, wire.Error):
            log.warning("the master reports an error: %s", message.message)

    def held_ids(self) -> list[int]:
        """The jobs this agent holds (for ``hello``: a running job not among them
        lost its tasks here)."""
        return sorted(self._jobs)

    def prepared(self, job_id: int) -> Job | None:
        """The job if this node prepared it (its manifest is filled and pinned)."""
        job = self._jobs.get(job_id)
        return job if job is not None and job.manifest is not None else None

    async def build_root(
        self, job: Job, owner: tuple[int, int], home: str | None, cwds: list[tuple[str, int, int]]
    ) -> tuple[EnvRoot, Path]:
        """Build (once) the root and tmp of a prepared job with no tasks of the
        agent's own (a Slurm job's steps enter it), for ``owner`` (uid, gid).
        Raises EnvRootError, OSError."""
        self._loop = asyncio.get_running_loop()
        async with job.lock:
            if job.root is None or job.tmp is None:
                job.root, job.tmp, notices = await asyncio.to_thread(
                    self._build_root, job, owner, home, cwds
                )
                await self._tell(job.id, notices)
            root, tmp = job.root, job.tmp
            assert root is not None and tmp is not None
            return root, tmp

    def _job(self, job_id: int) -> Job:
        return self._jobs.setdefault(job_id, Job(job_id))

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.create_task(coro)
        self._handlers.add(task)
        task.add_done_callback(self._handler_done)
        return task

    def _handler_done(self, task: asyncio.Task[None]) -> None:
        self._handlers.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a job handler failed", exc_info=task.exception())

    # --- prepare ---------------------------------------------------------------

    async def prepare(self, job: Job, message: wire.Prepare) -> None:
        """Fill and pin the job's manifest; answer ``prepared`` (accepted only when
        every object is local and verified, else refused with the reason)."""
        manifest: Manifest | None = None
        try:
            manifest = Manifest.from_document(message.manifest)
            job.env = envroot_of(message)
            # Children in the peer tree may ask while this node still fills.
            self.tokens.learn(job.id, message.token, manifest.objects())
            sources = sources_of(message)
            job.sources = sources
            progress = _ProgressReporter(job.id, self.outbox)
            report = await self._fill(job, manifest, sources, progress)
            manifest = await self.node_files.add(manifest, str(job.id), job.env.node_files)
            await progress.drain()  # the last bar update goes before the answer
        except (CachefsError, wire.WireError) as exc:
            reason = refusal(exc, manifest)
            log.warning("job %d refused: %s", job.id, reason)
            corrupt = exc.sha256 if isinstance(exc, CorruptObjectError) else None
            full = isinstance(exc, CacheFullError)
            answer = wire.Prepared(job.id, False, reason, corrupt=corrupt, full=full)
            await self.outbox.send(answer)
            return
        except Exception as exc:  # the master waits for an answer: never leave it without
            log.exception("job %d: the fill failed unexpectedly", job.id)
            await self.outbox.send(wire.Prepared(job.id, False, f"node agent error: {exc!r}"))
            return
        job.manifest = manifest
        fill = wire.FillReport(
            objects_total=report.objects_total,
            objects_hit=report.objects_hit,
            bytes_total=report.bytes_total,
            bytes_from_master=report.bytes_from.get("master", 0),
            bytes_from_peers=report.bytes_from.get("peer", 0),
            fill_seconds=round(report.seconds, 6),
        ).to_wire()
        log.info("job %d prepared: %s", job.id, fill)
        if not await self.outbox.send(wire.Prepared(job.id, True, None, fill)):
            log.warning("job %d: the master went away before it heard 'prepared'", job.id)

    async def _fill(
        self,
        job: Job,
        manifest: Manifest,
        sources: list[ObjectSource],
        progress: _ProgressReporter,
    ) -> FillReport:
        """Fill and pin; when kept roots' pins leave no room, remove them and try again."""
        try:
            return await self.cache.fill(
                manifest.objects(), sources, job=str(job.id), progress=progress
            )
        except CacheFullError:
            if not len(self.pool):
                raise
        dropped = await asyncio.to_thread(self.pool.clear)
        log.info("job %d: removed %d kept roots to make room in the cache", job.id, dropped)
        return await self.cache.fill(
            manifest.objects(), sources, job=str(job.id), progress=progress
        )

    # --- exec ------------------------------------------------------------------

    async def exec(self, job: Job, message: wire.Exec) -> None:
        """Build the job's root (once) and start its tasks; each task's output and
        exit are reported by its own pump."""
        specs = []
        for doc in message.tasks:
            try:
                specs.append(task_of(doc))
            except wire.WireError as exc:
                number = doc.get("task") if isinstance(doc, dict) else None
                if isinstance(number, int) and not isinstance(number, bool):
                    await self._not_started(job.id, number, 126, str(exc))
                else:  # no task to report an exit for: tell the master why
                    log.warning("job %d: %s", job.id, exc)
                    await self.outbox.send(wire.Error(f"job {job.id}: {exc}"))
        self._loop = asyncio.get_running_loop()
        async with job.lock:
            try:
                if job.manifest is None:
                    raise wire.WireError(f"job {job.id} was not prepared on this node")
                if job.root is None:
                    home = specs[0][1].home if specs else None
                    cwds = [(spec.cwd, spec.uid, spec.gid) for _, spec in specs]
                    owner = (specs[0][1].uid, specs[0][1].gid) if specs else (0, 0)
                    job.root, job.tmp, notices = await asyncio.to_thread(
                        self._build_root, job, owner, home, cwds
                    )
                    await self._tell(job.id, notices)
            except (BeolaunchError, CachefsError, OSError) as exc:
                for task, _ in specs:
                    await self._not_started(job.id, task, 126, str(exc))
                return
            root, tmp = job.root, job.tmp
            assert root is not None and tmp is not None
            for task, spec in specs:
                if task in job.tasks:
                    log.warning("job %d task %d runs already; exec ignored", job.id, task)
                    continue
                try:
                    running = await asyncio.to_thread(start_task, spec, root, tmp)
                except (BeolaunchError, OSError) as exc:
                    await self._not_started(job.id, task, start_status(exc), str(exc))
                    continue
                except Exception as exc:  # the master waits for an exit: always send one
                    log.exception("job %d task %d: start failed unexpectedly", job.id, task)
                    await self._not_started(job.id, task, 126, f"node agent error: {exc!r}")
                    continue
                job.tasks[task] = running
                pump = asyncio.create_task(self._pump(job, task, running))
                job.pumps.add(pump)
                pump.add_done_callback(job.pumps.discard)
                log.info("job %d task %d started: %s", job.id, task, spec.argv)

    def _build_root(
        self, job: Job, owner: tuple[int, int], home: str | None, cwds: list[tuple[str, int, int]]
    ) -> tuple[EnvRoot, Path, tuple[str, ...]]:
        """The job's root and tmp, and what its submitter should hear about them
        (a site bind or the home missing here: sitebinds.plan_binds)."""
        assert job.manifest is not None
        # Under ROOTS/u<uid>: only the job's user may pass (userdirs.py).
        where = user_dir(self.roots_dir, *owner, job=str(job.id))
        tmp = where / f"{job.id}.tmp"
        tmp.mkdir(exist_ok=True)
        os.chmod(tmp, 0o1777)  # the job's /tmp, shared by its tasks like a host's
        seed_tmp(job.manifest, tmp, cwds)
        plan = plan_binds(job.manifest, (*job.env.binds, *self.site_binds), home)
        fetch = job.env.late == "fetch" and self._loop is not None
        root = self.pool.take(job.manifest.id, plan.mountpoints, late=fetch)
        if root is not None:
            log.info("job %d runs in the kept root %s", job.id, root.path)
            if root.late is not None:  # it asked nothing late: it is the job's now
                root.late.job, root.late.settings = job.id, job.env
            return root, tmp, plan.notices
        late = None
        if fetch:
            assert self._loop is not None
            late = LateBridge(self._loop, self._resolve_late, job.id, job.env)
        root = EnvRoot.create(
            job.manifest,
            self.cache,
            where,
            str(job.id),
            home=plan.home,
            binds=plan.binds,
            late=late,
        )
        return root, tmp, plan.notices

    async def _tell(self, job: int, notices: tuple[str, ...]) -> None:
        """Log each notice and send it to the master (for the job's submitter and
        events): once per job, when its root is built, never in a task's output."""
        for text in notices:
            log.warning("job %d: %s", job, text)
            await self.outbox.send(wire.Notice(job, text))

    async def _resolve_late(self, job_id: int, op: str, path: str) -> dict[str, Any]:
        job = self._jobs.get(job_id)
        if job is None:
            return {"kind": "error", "message": f"job {job_id} is not held here"}
        owner = job.manifest.owner if job.manifest is not None else None
        return await self.late.resolve(job_id, op, path, job.env, job.sources, owner)

    async def _not_started(self, job: int, task: int, status: int, reason: str) -> None:
        log.warning("job %d task %d not started: %s", job, task, reason)
        line = f"beonode: cannot start task {task}: {reason}\n".encode()
        await self.outbox.send(wire.Output.of(job, task, "stderr", line))
        await self.outbox.send(wire.Exited(job, task, status, None, {}))

    async def _pump(self, job: Job, task: int, running: RunningTask) -> None:
        """Relay the task's output until both pipes close, then its exit (always)."""
        try:
            try:
                async for stream, data in running.read_output():
                    for i in range(0, len(data), OUTPUT_CHUNK):
                        chunk = data[i : i + OUTPUT_CHUNK]
                        await self.outbox.send(wire.Output.of(job.id, task, stream, chunk))
            except OSError as exc:  # the exit still matters more than the rest of the output
                log.error("job %d task %d: reading its output failed: %s", job.id, task, exc)
                running.close()
            result = await running.wait()
        finally:
            job.tasks.pop(task, None)
        log.info("job %d task %d exited with status %d", job.id, task, result.status)
        await self.outbox.send(
            wire.Exited(job.id, task, result.status, result.signal, dict(result.rusage))
        )

    # --- signal, release ---------------------------------------------------------

    def signal(self, job_id: int, signum: int) -> None:
        """Send ``signum`` to every running task of the job."""
        job = self._jobs.get(job_id)
        for task, running in list(job.tasks.items()) if job else []:
            try:
                running.signal(signum)
            except (BeolaunchError, OSError, ValueError) as exc:
                log.warning("job %d task %d: signal %d failed: %s", job_id, task, signum, exc)

    async def release(self, job_id: int) -> None:
        """Kill what is left of the job, wait for its exits to be reported, remove
        its root and tmp, and unpin its objects."""
        job = self._jobs.get(job_id)
        if job is None:
            self.cache.unpin(str(job_id))
            self.tokens.forget(job_id)
            self.outbox.forget(job_id)
            return
        async with job.lock:
            if job.filling is not None and not job.filling.done():
                job.filling.cancel()
                await asyncio.wait([job.filling])
            all_killed = True
            for running in list(job.tasks.values()):
                try:
                    await asyncio.to_thread(running.kill_all)
                except (BeolaunchError, OSError) as exc:
                    all_killed = False
                    log.warning("job %d: kill failed: %s", job_id, exc)
            if job.pumps:
                await asyncio.gather(*job.pumps, return_exceptions=True)
            if job.root is not None:
                # Kept for the next job with this manifest unless a task may be left
                # in it, or it may fetch late (its late files are this job's).
                reusable = all_killed and (job.root.late is None or job.root.late.reusable)
                keep = self.pool.park if reusable else _remove_root
                try:
                    await asyncio.to_thread(keep, job.root, job.root.binds)
                except BeolaunchError as exc:
                    log.error("job %d: %s", job_id, exc)
            if job.tmp is not None:
                await asyncio.to_thread(shutil.rmtree, job.tmp, True)
            self.cache.unpin(str(job_id))
            self.tokens.forget(job_id)
            self.outbox.forget(job_id)
            self._jobs.pop(job_id, None)
            log.info("job %d released", job_id)

    async def shutdown(self) -> None:
        """Release every job (the agent is stopping: its tasks die with it).

        Fills are cancelled; an exec under way is let finish (its setup is
        bounded), since cancelling it mid-start would lose a started task."""
        for job in self._jobs.values():
            if job.filling is not None:
                job.filling.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        for job_id in list(self._jobs):
            await self.release(job_id)
        await asyncio.to_thread(self.pool.clear)
        await asyncio.to_thread(remove_empty_user_dirs, self.roots_dir)

    def procs(self) -> list[dict[str, Any]]:
        """One row per process of every running task (for the heartbeat)."""
        rows: list[dict[str, Any]] = []
        for job in self._jobs.values():
            for task, running in list(job.tasks.items()):
                try:
                    listed = running.procs()
                except (BeolaunchError, OSError):
                    continue
                for row in listed:
                    # the sandbox says cpu_percent; the protocol's row says cpu
                    doc = {k: v for k, v in row.items() if k != "cpu_percent"}
                    doc.setdefault("cpu", row.get("cpu_percent"))
                    rows.append({"job": job.id, "task": task, **doc})
        return rows

    def clean_leftovers(self) -> None:
        """Kill the tasks of a previous agent that died without stopping them (their
        exits are lost: it held them, not us), then remove its roots and job tmp dirs.
        Call before the first job: every root under ``roots_dir`` is a leftover."""
        RootPool.unpin_stale(self.cache)
        if not self.roots_dir.is_dir():
            return
        top = os.path.realpath(self.roots_dir) + "/"
        for proc in psutil.process_iter():
            try:
                if os.readlink(f"/proc/{proc.pid}/root").startswith(top):
                    log.warning("killing pid %d, a task a previous agent left", proc.pid)
                    proc.kill()
            except (OSError, psutil.Error):
                continue
        for path in leftover_roots(self.roots_dir):
            log.info("removing the leftover environment root %s", path)
            try:
                EnvRoot.remove_path(path)
            except BeolaunchError as exc:  # the node still serves other jobs
                log.error("%s", exc)


def _remove_root(root: EnvRoot, _mounts: tuple[str, ...]) -> None:
    root.remove()


class _ProgressReporter:
    """A fill progress callback that tells the master, at most every 0.2 s."""

    def __init__(self, job: int, outbox: Outbox) -> None:
        self.job = job
        self.outbox = outbox
        self.loop = asyncio.get_running_loop()
        self.last = 0.0
        self.sending: set[asyncio.Task[bool]] = set()

    def __call__(self, p: FillProgress) -> None:
        now = self.loop.time()
        if now - self.last < PROGRESS_INTERVAL_S and p.files_done < p.files_total:
            return
        self.last = now
        message = wire.Progress(self.job, p.files_done, p.files_total, p.bytes_done, p.bytes_total)
        task = self.loop.create_task(self.outbox.send(message))
        self.sending.add(task)
        task.add_done_callback(self.sending.discard)

    async def drain(self) -> None:
        if self.sending:
            await asyncio.gather(*self.sending, return_exceptions=True)
