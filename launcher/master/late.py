"""Late files: a running job looks up a path its manifest lacks; the master answers.

The seed's nodes "have a master with its full reference install to fall on
when they need to extend their limited environment". A node's FUSE root asks
(``late_lookup``) for a path the manifest does not hold; the master looks it
up on its own filesystem **as the job's user** (:mod:`launcher.lateopener`,
one helper process per job, started with the user's uid, gid and groups: the
kernel decides access, the master never opens the path as root) and answers
(``late_answer``). A regular file is hashed from the descriptor the helper
opened, stored, granted to the job's capability, recorded against the job
(``late_files``) and learned for the user's program (``learned_files``): the
next ``beosub`` of the same program ships it ahead of time. The node then
fetches it by sha256 like any object and verifies it.

Checks before anything is looked up: the job runs (preparing or running) on
the asking node, its late policy is ``fetch``, and the path is not under
``[envroot] no_fallback``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import pwd
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select

from cachefs.errors import CachefsError
from cachefs.store import Store
from launcher.envconfig import EnvRootSettings, NodeEnvSettings
from launcher.errors import BeolaunchError
from launcher.master.capability import CapabilityAuthorizer
from launcher.master.dbwork import DbWork
from launcher.master.links import NodeLink
from launcher.readproof import SeenFiles
from launcher.state.db import transaction
from launcher.state.models import Job, JobNode, LateFile, LearnedFile, Manifest, Node, StoredObject
from launcher.state.record import record_event
from launcher.wire import LateAnswer, LateLookup, Message

log = logging.getLogger(__name__)

#: A job's lookup helper is stopped after this many idle seconds.
HELPER_IDLE_S = 60.0
#: How long the master waits for a helper's descriptor.
HELPER_ANSWER_S = 30.0
#: How long an answer about who may ask for a job is kept.
WHO_TTL_S = 5.0
#: How often helpers of ended jobs are looked for.
SWEEP_S = 5.0
_ACTIVE = ("preparing", "running")


@dataclass(frozen=True)
class LateJob:
    """A running job as the late-file service needs it: whose, and what it runs."""

    job: int
    uid: int
    gid: int
    groups: tuple[int, ...]
    program_key: str | None
    policy: str


class UserLookup:
    """One :mod:`launcher.lateopener` helper, running as one job's user."""

    def __init__(self, uid: int, gid: int, groups: tuple[int, ...]) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._sock = parent
        self._sock.settimeout(HELPER_ANSWER_S)  # a helper that never sends fails, not hangs
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-I", "-m", "launcher.lateopener", str(child.fileno())],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                pass_fds=(child.fileno(),),
                user=uid,
                group=gid,
                extra_groups=list(groups),
                env=env,
                cwd="/",
            )
        finally:
            child.close()
        self.lock = asyncio.Lock()
        self.used = time.monotonic()

    def ask(self, op: str, path: str) -> tuple[dict[str, Any], int | None]:
        """The helper's answer, and for a file the descriptor it opened (blocking)."""
        self.used = time.monotonic()
        stdin: IO[bytes] | None = self._proc.stdin
        stdout: IO[bytes] | None = self._proc.stdout
        assert stdin is not None and stdout is not None
        stdin.write(json.dumps({"op": op, "path": path}).encode() + b"\n")
        stdin.flush()
        line = stdout.readline()
        if not line:
            raise OSError(f"the lookup helper exited ({self._proc.poll()})")
        answer: dict[str, Any] = json.loads(line)
        fd = None
        if op == "open" and answer.get("kind") == "file":  # only open sends one
            _msg, fds, _flags, _addr = socket.recv_fds(self._sock, 16, 1)
            if not fds:
                raise OSError("the lookup helper sent no descriptor")
            fd = fds[0]
        return answer, fd

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self._proc.stdin is not None:
                self._proc.stdin.close()
        try:
            self._proc.wait(5)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        if self._proc.stdout is not None:
            self._proc.stdout.close()
        self._sock.close()


class LateFiles:
    """Answers nodes' ``late_lookup`` messages (take them with :meth:`on_message`)."""

    def __init__(
        self,
        db: DbWork,
        store: Store,
        links: Mapping[str, NodeLink],
        capabilities: CapabilityAuthorizer,
        envroot: EnvRootSettings,
        *,
        seen: SeenFiles | None = None,
    ) -> None:
        #: the job lookups and records run in its database threads: a stalled
        #: database holds those, not the default executor's (store ingests,
        #: the users' lookup helpers, boot image reads)
        self.db = db
        self.engine = db.engine
        self.store = store
        self.links = links
        self.capabilities = capabilities
        self.envroot = envroot
        self.seen = seen or SeenFiles()
        self._helpers: dict[int, UserLookup] = {}
        self._starting = asyncio.Lock()
        self._who: dict[tuple[int, str], tuple[float, LateJob | None]] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self._store_lock = threading.Lock()
        #: lookups answered, by kind
        self.answered: dict[str, int] = {}
        #: per job, lookups answered by "op kind" (an event when the job ends)
        self._tally: dict[int, dict[str, int]] = {}

    def on_message(self, node: str, message: Message) -> bool:
        """Take a ``late_lookup`` (answered in a task of its own); False for others."""
        if not isinstance(message, LateLookup):
            return False
        task = asyncio.create_task(self._answer(node, message))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return True

    async def _answer(self, node: str, message: LateLookup) -> None:
        try:
            answer = await self.answer(node, message)
        except Exception as exc:  # the node waits for an answer: always send one
            log.exception("late lookup of %s for job %d failed", message.path, message.job)
            answer = {"kind": "error", "message": f"master error: {exc!r}"}
        kind = str(answer.get("kind"))
        self.answered[kind] = self.answered.get(kind, 0) + 1
        tally = self._tally.setdefault(message.job, {})
        what = f"{message.op} {kind}"
        tally[what] = tally.get(what, 0) + 1
        link = self.links.get(node)
        if link is not None:
            link.post(LateAnswer(message.job, message.request, answer))
        self._sweep(set())

    async def answer(self, node: str, message: LateLookup) -> dict[str, Any]:
        """What ``node`` gets for ``message`` (see the module docstring)."""
        who = await self.db.run(self._job_on, message.job, node)
        if who is None:
            return {"kind": "error", "message": f"job {message.job} does not run on {node}"}
        allowed = NodeEnvSettings(
            binds=self.envroot.binds,
            late="fetch" if who.policy == "fetch" else "fail",
            no_fallback=self.envroot.no_fallback,
        )
        if not allowed.fallback_allowed(message.path):
            return {"kind": "absent"}
        async with self._starting:  # two lookups at once must not start two helpers
            helper = self._helpers.get(message.job)
            if helper is None:
                helper = self._helpers[message.job] = await asyncio.to_thread(
                    UserLookup, who.uid, who.gid, who.groups
                )
        async with helper.lock:
            answer, fd = await asyncio.to_thread(helper.ask, message.op, message.path)
        # The user's own files are shown as theirs (a 0600 file stays readable).
        answer["uid"] = who.uid if answer.pop("owner", None) == who.uid else 0
        if fd is None:
            return answer
        try:
            sha, size = await asyncio.to_thread(self._ingest, fd, message.path)
        finally:
            os.close(fd)
        answer |= {"sha256": sha, "size": size}
        self.capabilities.allow(message.job, sha)
        await self.db.run(self._record, who, node, message.path, sha, size, answer["mode"])
        return answer

    def _ingest(self, fd: int, path: str) -> tuple[str, int]:
        """Store the file the user's helper opened; its sha256 and size."""
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise BeolaunchError(f"{path}: not a regular file")
        known = self.seen.digest(st)
        if known is not None and self.store.has(known):
            return known, st.st_size
        try:
            with self._store_lock:
                read = self.store.ingest_file(Path(f"/proc/self/fd/{fd}"))
        except CachefsError as exc:
            raise BeolaunchError(f"{path}: cannot store it: {exc}") from exc
        self.seen.remember(read.stat, read.sha256)
        return read.sha256, read.size

    def _record(self, who: LateJob, node: str, path: str, sha: str, size: int, mode: int) -> None:
        """The late file against the job, and learned for the user's program."""
        try:
            with transaction(self.engine) as session:
                if session.get(StoredObject, sha) is None:
                    session.add(StoredObject(sha256=sha, size=size, owner_uid=who.uid))
                    session.flush()
                if session.get(LateFile, (who.job, path)) is None:
                    node_id = session.scalar(select(Node.id).where(Node.name == node))
                    session.add(
                        LateFile(
                            job_id=who.job, path=path, object_sha256=sha, mode=mode, node_id=node_id
                        )
                    )
                if who.program_key is not None:
                    key = (who.uid, who.program_key, path)
                    learned = session.get(LearnedFile, key)
                    if learned is None:
                        session.add(
                            LearnedFile(
                                uid=who.uid,
                                program_key=who.program_key,
                                path=path,
                                object_sha256=sha,
                                job_id=who.job,
                            )
                        )
                    else:
                        learned.object_sha256, learned.job_id = sha, who.job
        except BeolaunchError as exc:  # the database away: the job still gets its file
            log.warning("job %d: late file %s not recorded: %s", who.job, path, exc)

    def _job_on(self, job_id: int, node: str) -> LateJob | None:
        """The job, if it is preparing or running with ``node`` among its accepted nodes."""
        now = time.monotonic()
        cached = self._who.get((job_id, node))
        if cached is not None and now - cached[0] < WHO_TTL_S:
            return cached[1]
        found = None
        with transaction(self.engine) as session:
            row = session.execute(
                select(Job, Manifest.program_key)
                .join(Manifest, Manifest.id == Job.manifest_id)
                .join(JobNode, JobNode.job_id == Job.id)
                .join(Node, Node.id == JobNode.node_id)
                .where(Job.id == job_id, Node.name == node, Job.state.in_(_ACTIVE))
            ).first()
            if row is not None:
                job, manifest_key = row
                try:
                    account = pwd.getpwuid(job.uid)
                except KeyError:
                    account = None
                if account is not None:
                    groups = tuple(os.getgrouplist(account.pw_name, account.pw_gid))
                    policy = job.late_policy or self.envroot.late
                    key = job.program_key or manifest_key
                    found = LateJob(job.id, job.uid, account.pw_gid, groups, key, policy)
        self._who[(job_id, node)] = (now, found)
        return found

    def job_ended(self, job_id: int) -> None:
        """Stop the job's helper (a process of the user's on the master) now, and
        record how many late lookups the job's nodes made, as a job event."""
        helper = self._helpers.pop(job_id, None)
        if helper is not None:
            helper.close()
        # a lookup still on its way must find the job ended, not a cached "running"
        self._who = {k: v for k, v in self._who.items() if k[0] != job_id}
        tally = self._tally.pop(job_id, None)
        if tally:
            task = asyncio.ensure_future(self.db.run(self._record_tally, job_id, tally))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _record_tally(self, job_id: int, tally: dict[str, int]) -> None:
        parts = ", ".join(f"{what} {n}" for what, n in sorted(tally.items()))
        text = f"job {job_id}: {sum(tally.values())} late lookups ({parts})"
        try:
            with transaction(self.engine) as session:
                job = session.get(Job, job_id)
                record_event(session, text, job=job)
        except BeolaunchError as exc:
            log.warning("%s; not recorded: %s", text, exc)

    def _sweep(self, ended: set[int]) -> None:
        """Stop the helpers of ``ended`` jobs and those idle for HELPER_IDLE_S."""
        now = time.monotonic()
        for job, helper in list(self._helpers.items()):
            idle = now - helper.used > HELPER_IDLE_S
            if (job in ended or idle) and not helper.lock.locked():
                del self._helpers[job]
                helper.close()
        for job in ended:
            if job in self._tally:
                self.job_ended(job)
        self._who = {k: v for k, v in self._who.items() if now - v[0] < WHO_TTL_S}

    async def sweep_forever(self, every_s: float = SWEEP_S) -> None:
        """Stop helpers of jobs that ended (a Slurm job ends by its epilogs) or idle."""
        while True:
            await asyncio.sleep(every_s)
            if not self._helpers:
                continue
            try:
                ended = await self.db.run(self._ended, set(self._helpers))
            except BeolaunchError as exc:
                log.debug("late helpers: cannot read job states: %s", exc)
                ended = set()
            self._sweep(ended)

    def _ended(self, jobs: set[int]) -> set[int]:
        with transaction(self.engine, readonly=True) as session:
            active = set(
                session.scalars(select(Job.id).where(Job.id.in_(jobs), Job.state.in_(_ACTIVE)))
            )
        return jobs - active

    def close(self) -> None:
        for helper in self._helpers.values():
            helper.close()
        self._helpers.clear()
