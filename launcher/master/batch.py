"""Batch jobs (``beosub --batch``): the master writes their output to files.

Trust model: the master runs as root, the files are in the user's directories.
Every file is opened by :mod:`launcher.opener` running as the job's user (uid,
gid, groups) with O_WRONLY|O_CREAT|O_APPEND|O_NOFOLLOW, and its descriptor
comes back over SCM_RIGHTS: a new file is the user's, a path the user may not
write is refused by the kernel, and a symlink planted at the path is refused
(ELOOP), never followed as root. Only regular files and character devices
(``/dev/null``) are written, so a FIFO nobody reads cannot stall the master.

When: the files are opened once the job's nodes are known (``%n`` names a
node) and have all accepted, before any task starts (:attr:`Scheduler.gate`);
a file that cannot be opened fails the job with the reason, and nothing runs.
Then this module is one more watcher of the job (:meth:`Scheduler.watch`):
each ``output`` message goes to its task's file, ``--label`` prefixes whole
lines, and a job that fails gets the reason appended to its stderr files, as
slurmstepd does. After a master restart the files of running batch jobs are
opened again for append (output the nodes produced meanwhile is lost: agents
drop it while the master is away).

Writes are plain blocking ``write(2)`` calls from the event loop: small, to
local files; a write that fails (ENOSPC, EAGAIN on a device) drops that chunk
and is logged once per file. The job's row (and its user's account) is read in
a database thread (:mod:`launcher.master.dbwork`), never on the loop.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import pwd
import stat
from collections.abc import Awaitable
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from launcher.errors import OutputFileError, StateError
from launcher.labels import LineLabels, prefix
from launcher.master.dbwork import DbWork
from launcher.master.jobs import JobRun
from launcher.master.patterns import Fields, expand
from launcher.master.scheduler import Scheduler
from launcher.state.db import transaction
from launcher.state.models import Job
from launcher.state.record import record_event
from launcher.submission import open_as
from launcher.wire import Done, Error, Message, Output

log = logging.getLogger(__name__)

_PROBLEMS = {
    errno.ELOOP: "too many symbolic links on its path (a loop?)",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.ENOENT: "its directory does not exist",
    errno.ENOTDIR: "a part of its directory is not a directory",
    errno.EISDIR: "it is a directory",
    errno.ENXIO: "it is a FIFO or socket nobody reads; refused",
    errno.EROFS: "the file system is read-only",
    errno.ENOSPC: "no space left on the device",
}


@dataclass(frozen=True)
class BatchSpec:
    """A batch job's output settings and user, from its database row."""

    job: int
    uid: int
    gid: int
    groups: list[int]
    user: str
    name: str
    stdout: str  # absolute pattern
    stderr: str | None  # None: with stdout
    label: bool


@dataclass
class OutputFiles:
    """The open descriptors of one job's output: (task, stream) -> fd."""

    by_stream: dict[tuple[int, str], int] = field(default_factory=dict)
    paths: dict[int, str] = field(default_factory=dict)  # fd -> path
    failed: set[int] = field(default_factory=set)  # fds whose write failed (logged once)

    def write(self, fd: int, data: bytes) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(fd, view) :]
        except OSError as exc:
            if fd not in self.failed:
                self.failed.add(fd)
                log.warning("batch output %s: %s; output dropped", self.paths[fd], exc)

    def stderr_fds(self) -> list[int]:
        return sorted({fd for (_t, s), fd in self.by_stream.items() if s == "stderr"})

    def close(self) -> None:
        for fd in self.paths:
            os.close(fd)
        self.paths.clear()
        self.by_stream.clear()


def _problem(code: str) -> str:
    if code == "SYMLINK":  # launcher.opener: the path itself is a link
        return "it is a symbolic link; refused (output is never written through a link)"
    number = getattr(errno, code, None)
    return _PROBLEMS.get(number, code) if isinstance(number, int) else code


def open_output(spec: BatchSpec, placement: list[tuple[int, str]]) -> OutputFiles:
    """Open (create, append) every file of ``spec`` for ``placement`` ((task, node) pairs)
    as the job's user. Blocks while the helper runs. Raises OutputFileError naming
    the first file that cannot be opened or is not a regular file or device; then
    nothing stays open."""
    names: dict[tuple[int, str], str] = {}
    for task, node in placement:
        fields = Fields(spec.job, node, task, spec.user, spec.name)
        names[(task, "stdout")] = expand(spec.stdout, fields)
        names[(task, "stderr")] = expand(spec.stderr or spec.stdout, fields)
    paths = sorted(set(names.values()))
    opened = open_as(spec.uid, spec.gid, spec.groups, paths, append=True)
    files = OutputFiles()
    files.paths = {fd: path for path, fd in opened.items() if isinstance(fd, int)}
    try:
        for path in paths:
            fd = opened[path]
            if isinstance(fd, str):
                raise OutputFileError(path, spec.uid, _problem(fd))
            mode = os.fstat(fd).st_mode
            if not (stat.S_ISREG(mode) or stat.S_ISCHR(mode)):
                raise OutputFileError(path, spec.uid, "it is not a regular file; refused")
    except BaseException:
        files.close()
        raise
    fd_of = {path: fd for fd, path in files.paths.items()}
    files.by_stream = {key: fd_of[path] for key, path in names.items()}
    return files


class BatchOutput:
    """Opens batch jobs' files before they start and writes their output as it comes."""

    def __init__(self, db: DbWork, scheduler: Scheduler) -> None:
        self.db = db
        self.engine = db.engine
        self.scheduler = scheduler
        #: batch jobs not started yet: the gate opens their files
        self.expected: set[int] = set()
        self.writers: dict[int, asyncio.Task[None]] = {}

    def expect(self, job_id: int) -> None:
        """A batch job was submitted: open its files before it starts."""
        self.expected.add(job_id)

    def gate(self, run: JobRun) -> Awaitable[str | None] | None:
        """:attr:`Scheduler.gate`: None for a job that is not batch (it starts at once)."""
        if run.job_id not in self.expected:
            return None
        self.expected.discard(run.job_id)
        return self._open_and_watch(run)

    async def _open_and_watch(self, run: JobRun) -> str | None:
        spec = await self.spec(run.job_id)
        if spec is None:
            return f"the output files of batch job {run.job_id} cannot be named (its user is gone)"
        placement = [(t, run.node_of(t)) for t in range(run.tasks)]
        try:
            files = await asyncio.to_thread(open_output, spec, placement)
        except OutputFileError as exc:
            return str(exc)
        await self._watch(spec, files)
        return None

    async def resume(self) -> None:
        """After a (re)start: expect pending batch jobs, reopen running ones' files, and
        tell the users of those the restart ended (:attr:`Scheduler.interrupted`) why."""
        for job_id, nodes in self.scheduler.interrupted.items():
            spec = await self.spec(job_id)
            done = self.scheduler.ended.get(job_id)
            if spec is not None and done is not None and done.reason:
                task = asyncio.get_running_loop().create_task(
                    asyncio.to_thread(self._tell_interrupted, spec, nodes, done.reason)
                )
                self.writers[job_id] = task

        def batch_jobs(session: Session) -> list[tuple[int, str]]:
            rows = session.execute(
                select(Job.id, Job.state).where(
                    Job.batch.is_(True), Job.state.in_(("pending", "running"))
                )
            )
            return [(job_id, state) for job_id, state in rows]

        for job_id, state in await self.db.read(batch_jobs):
            if state == "pending":
                self.expected.add(job_id)
                continue
            run = self.scheduler.runs.get(job_id)
            spec = await self.spec(job_id)
            if run is None or spec is None:
                continue
            queue = await self.scheduler.watch(job_id)  # now: output meanwhile waits here
            if isinstance(queue, asyncio.Queue):
                task = asyncio.get_running_loop().create_task(self._reopen(spec, run, queue))
                self.writers[job_id] = task

    def _tell_interrupted(self, spec: BatchSpec, nodes: list[str], reason: str) -> None:
        """Append ``reason`` to the stderr files of a job that ended before it ran, opened
        as its user. Its nodes were never all known: ``%n`` expands to those that had
        answered, else to ``none``."""
        names = nodes or ["none"]
        placement = [(task, names[task % len(names)]) for task in range(self._tasks(spec.job))]
        try:
            files = open_output(spec, placement)
        except OutputFileError as exc:
            log.warning("job %d: cannot say why it ended: %s", spec.job, exc)
            return
        try:
            line = f"beolaunch: job {spec.job}: {reason}\n".encode()
            for fd in files.stderr_fds():
                files.write(fd, line)
        finally:
            files.close()
            self.writers.pop(spec.job, None)

    def _tasks(self, job_id: int) -> int:
        with transaction(self.engine, readonly=True) as session:
            job = session.get(Job, job_id)
            return job.tasks if job is not None else 1

    async def _reopen(self, spec: BatchSpec, run: JobRun, queue: asyncio.Queue[Message]) -> None:
        placement = [(t, run.node_of(t)) for t in range(run.tasks)]
        try:
            files = await asyncio.to_thread(open_output, spec, placement)
        except OutputFileError as exc:
            self.scheduler.unwatch(spec.job, queue)
            self.writers.pop(spec.job, None)
            log.warning("job %d: %s", spec.job, exc)
            text = f"job {spec.job}: output after the master restarted is lost: {exc}"

            def record(session: Session) -> None:
                record_event(session, text, level="warning", job=session.get(Job, spec.job))

            try:
                await self.db.write(record)
            except StateError as error:
                log.warning("%s; not recorded: %s", text, error)
            return
        await self._write(spec, files, queue)

    async def spec(self, job_id: int) -> BatchSpec | None:
        """The job's output settings, None if it is not a batch job (or its user is
        gone); read in a database thread."""
        return await self.db.run(self._spec, job_id)

    def _spec(self, job_id: int) -> BatchSpec | None:
        with transaction(self.engine, readonly=True) as session:
            job = session.get(Job, job_id)
            if job is None or not job.batch or job.stdout_path is None:
                return None
            values = (job.uid, job.name or "job", job.stdout_path, job.stderr_path, job.label)
        uid, name, stdout, stderr, label = values
        try:
            account = pwd.getpwuid(uid)
        except KeyError:
            return None
        groups = os.getgrouplist(account.pw_name, account.pw_gid)
        return BatchSpec(
            job_id, uid, account.pw_gid, groups, account.pw_name, name, stdout, stderr, label
        )

    async def _watch(self, spec: BatchSpec, files: OutputFiles) -> None:
        try:
            queue = await self.scheduler.watch(spec.job)
        except BaseException:
            files.close()
            raise
        if not isinstance(queue, asyncio.Queue):  # ended while the files were opened
            files.close()
            return
        task = asyncio.get_running_loop().create_task(self._write(spec, files, queue))
        self.writers[spec.job] = task

    async def _write(
        self, spec: BatchSpec, files: OutputFiles, queue: asyncio.Queue[Message]
    ) -> None:
        labels = LineLabels() if spec.label else None
        nodes: dict[int, str | None] = {}
        try:
            while True:
                message = await queue.get()
                if isinstance(message, Output):
                    fd = files.by_stream.get((message.task, message.stream))
                    if fd is None:
                        continue
                    data = message.payload()
                    if labels is not None:
                        nodes[message.task] = message.node
                        key = (message.task, message.stream)
                        data = labels.feed(key, prefix(message.node, message.task), data)
                    files.write(fd, data)
                elif isinstance(message, Error):  # output dropped (outputbuffers.py)
                    line = f"beolaunch: job {spec.job}: {message.message}\n".encode()
                    for fd in files.stderr_fds():
                        files.write(fd, line)
                elif isinstance(message, Done):
                    if labels is not None:
                        for (task, stream), fd in files.by_stream.items():
                            files.write(
                                fd, labels.rest((task, stream), prefix(nodes.get(task), task))
                            )
                    if message.reason:
                        line = f"beolaunch: job {spec.job}: {message.reason}\n".encode()
                        for fd in files.stderr_fds():
                            files.write(fd, line)
                    return
        finally:
            files.close()
            self.scheduler.unwatch(spec.job, queue)
            self.writers.pop(spec.job, None)

    async def close(self) -> None:
        """Stop writing (master shutdown): the files are closed, jobs keep running."""
        for task in list(self.writers.values()):
            task.cancel()
        if self.writers:
            await asyncio.gather(*self.writers.values(), return_exceptions=True)
