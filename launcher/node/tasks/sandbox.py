"""Start a job's task in its environment root, and watch, signal and kill it.

:func:`start_task` spawns :mod:`launcher.node.tasks.enter_task` with ``posix_spawn`` (no
fork of the agent's Python, safe beside asyncio's threads) as a new session
leader; the helper sets up the namespace, mounts, chroot and user, then
``execve``s the program, so the task keeps the helper's pid and the agent
reaps it with ``wait4`` (exit status and rusage). Setup failures come back
over a pipe naming the step (TaskSetupError), never as a bare exit 127.

Every process of a task shares the task's private mount namespace (unless it
makes its own, which needs a user namespace): :meth:`RunningTask.kill_all`
and :meth:`RunningTask.procs` find them by it, so a daemon that left the
session is still found.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import marshal
import os
import resource
import select
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from launcher.errors import (
    RootTaskRefusedError,
    TaskProgramNotFoundError,
    TaskSetupError,
    TaskSpecError,
)
from launcher.node.roots.envroot import EnvRoot
from launcher.node.tasks import enter_task, mounts

#: Seconds the helper may take to reach execve (a hung FUSE view would block it).
SETUP_TIMEOUT = 30.0
#: Rounds of SIGKILL before kill_all gives up on a task that keeps forking.
KILL_ROUNDS = 100


@dataclass(frozen=True)
class TaskSpec:
    """What to run and as whom: the submitted argv, environment, cwd and limits.

    ``rlimits`` maps a resource name (``nofile``, ``RLIMIT_CORE``...) to (soft,
    hard); ``resource.RLIM_INFINITY`` (-1) for unlimited. They never exceed the
    node's hard limits (lowered, with a note on the task's stderr)."""

    argv: list[str]
    env: dict[str, str]
    cwd: str
    uid: int
    gid: int
    groups: list[int]
    home: str | None
    rlimits: dict[str, tuple[int, int]] = field(default_factory=dict)
    allow_root: bool = False

    def check(self) -> None:
        """Raise TaskSpecError for a value the helper could not use."""
        if not self.argv or not all(isinstance(a, str) and "\0" not in a for a in self.argv):
            raise TaskSpecError("argv", self.argv, "give a non-empty list of strings without NUL")
        if not self.argv[0]:
            raise TaskSpecError("argv", self.argv, "the program name is empty")
        for key, value in self.env.items():
            if not key or "=" in key or "\0" in key or "\0" in value:
                raise TaskSpecError("env", key, "names hold no '=' or NUL, values no NUL")
        for name, ident in (
            ("uid", self.uid),
            ("gid", self.gid),
            *(("groups", g) for g in self.groups),
        ):
            if isinstance(ident, bool) or not isinstance(ident, int) or ident < 0:
                raise TaskSpecError(name, ident, "must be an int >= 0")
        if self.uid == 0 and not self.allow_root:
            raise RootTaskRefusedError()
        for path_field, path in (("cwd", self.cwd), ("home", self.home)):
            if path is not None and (not path.startswith("/") or ".." in path.split("/")):
                raise TaskSpecError(path_field, path, "must be an absolute path without '..'")
        for rname, limits in self.rlimits.items():
            upper = rname.upper().removeprefix("RLIMIT_")
            if not hasattr(resource, f"RLIMIT_{upper}"):
                raise TaskSpecError("rlimits", rname, "not a resource limit of this system")
            if len(limits) != 2 or not all(isinstance(v, int) and v >= -1 for v in limits):
                raise TaskSpecError("rlimits", {rname: limits}, "give (soft, hard) as ints")


@dataclass(frozen=True)
class TaskExit:
    """``status`` as a shell shows it (128+N when killed by signal N);
    ``rusage`` from ``wait4``: utime and stime in seconds (the task and the
    children it waited for), maxrss in KiB. maxrss is a floor, not the task's
    own: the kernel keeps the high-water mark across ``execve``, and the
    spawn (vfork) carries the agent's peak RSS into it, so a small task shows
    the agent's peak (tens of MiB)."""

    status: int
    signal: int | None
    rusage: dict[str, float]


def _high_fd(fd: int) -> int:
    """Move ``fd`` to >= 10 (close-on-exec), so the spawn's dup2 onto 0..4 never clobbers it."""
    moved = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return moved


def _pipe() -> tuple[int, int]:
    r, w = os.pipe()
    return _high_fd(r), _high_fd(w)


def _read_reports(fd: int, pid: int, timeout: float) -> list[list[str]]:
    """Lines from the helper until EOF (execve done or the helper gone)."""
    data = b""
    deadline = time.monotonic() + timeout
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLHUP)
    while True:
        left = deadline - time.monotonic()
        if left <= 0 or not poller.poll(left * 1000):
            os.kill(pid, signal.SIGKILL)
            raise TaskSetupError("setup", f"the helper did not reach execve in {timeout} s")
        chunk = os.read(fd, 65536)
        if not chunk:
            break
        data += chunk
    return [line.split("\t") for line in data.decode(errors="replace").splitlines() if line]


#: The helper, imported from this tree by an isolated interpreter (its bytecode cached).
_ENTER = mounts.bootstrap("enter_task")


def _spawn_helper(spec: TaskSpec, root: EnvRoot, job_tmp: Path) -> tuple[int, int, int, int]:
    """Spawn the helper; return (pid, report fd, stdout fd, stderr fd)."""
    home = os.path.normpath(spec.home) if spec.home else None
    # The root has a mount point for each host dir to bind (sitebinds.plan_binds).
    mounts = list(root.binds)
    overlays = [f for where in ("/tmp", *mounts) for f in root.overlays(where)]
    doc = {
        "root": str(root.path),
        "argv": spec.argv,
        "env": spec.env,
        "cwd": os.path.normpath(spec.cwd),
        "uid": spec.uid,
        "gid": spec.gid,
        "groups": spec.groups,
        "home": home,
        "rlimits": {k.upper().removeprefix("RLIMIT_"): list(v) for k, v in spec.rlimits.items()},
        "allow_root": spec.allow_root,
        "tmp": str(job_tmp),
        "mounts": mounts,
        "overlays": overlays,
    }
    spec_r, spec_w = _pipe()
    rep_r, rep_w = _pipe()
    out_r, out_w = _pipe()
    err_r, err_w = _pipe()
    child_ends = (spec_r, rep_w, out_w, err_w)
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-I", "-S", "-c", _ENTER],
            {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, out_w, 1),
                (os.POSIX_SPAWN_DUP2, err_w, 2),
                (os.POSIX_SPAWN_DUP2, spec_r, enter_task.SPEC_FD),
                (os.POSIX_SPAWN_DUP2, rep_w, enter_task.REPORT_FD),
            ],
            setsid=True,
            setsigmask=(),  # an empty mask, whatever the spawning thread blocks
        )
    except OSError:
        for fd in (*child_ends, spec_w, rep_r, out_r, err_r):
            os.close(fd)
        raise
    for fd in child_ends:
        os.close(fd)
    # The helper reads it at once: no deadlock past 64 KiB. A helper that died
    # first is reported by start_task (no "ns" line), not as a broken pipe here.
    with contextlib.suppress(BrokenPipeError), os.fdopen(spec_w, "wb") as f:
        f.write(marshal.dumps(doc))
    return pid, rep_r, out_r, err_r


def start_task(spec: TaskSpec, root: EnvRoot, job_tmp: Path) -> RunningTask:
    """Run ``spec`` in ``root`` with ``job_tmp`` (made mode 1777) as its /tmp.

    Returns once the program is exec'd (blocks for the helper's setup, tens of
    ms: call it through ``asyncio.to_thread`` from an event loop). Raises
    TaskSpecError (RootTaskRefusedError for uid 0), TaskProgramNotFoundError,
    TaskSetupError naming the failed step; OSError if the helper cannot spawn.
    """
    spec.check()
    job_tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(job_tmp, 0o1777)
    pid, rep_r, out_r, err_r = _spawn_helper(spec, root, job_tmp)
    try:
        reports = _read_reports(rep_r, pid, SETUP_TIMEOUT)
    except BaseException:
        # Nobody will get a RunningTask for it: whatever it became, it goes.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        os.close(out_r)
        os.close(err_r)
        raise
    finally:
        os.close(rep_r)
    failed = next((r[1:] for r in reports if r[0] == "failed" and len(r) == 4), None)
    ns = next((int(r[1]) for r in reports if len(r) == 2 and r[0] == "ns" and r[1].isdigit()), None)
    if failed is not None or ns is None:
        _, status = os.waitpid(pid, 0)
        leftover = b""
        try:
            os.set_blocking(err_r, False)
            leftover = os.read(err_r, 4096)
        except OSError:
            pass
        os.close(out_r)
        os.close(err_r)
        if failed is None:
            raise TaskSetupError(
                "setup", f"the helper died ({status:#x}): {leftover.decode(errors='replace')}"
            )
        step, errno, detail = failed
        cls = TaskProgramNotFoundError if step == "find program" else TaskSetupError
        raise cls(step, detail, int(errno) if errno.isdigit() else 0)
    return RunningTask(pid, ns, out_r, err_r)


def _mnt_ns(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/mnt").st_ino
    except OSError:
        return None


def _settle(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


def _zombie(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.Error:
        return True  # gone


class RunningTask:
    """A started task: a session and group leader in its own mount namespace."""

    def __init__(self, pid: int, mnt_ns: int, stdout: int, stderr: int) -> None:
        self.pid = pid
        #: Inode of the task's mount namespace: how its processes are found.
        self.mnt_ns = mnt_ns
        #: Read ends of the task's stdout and stderr pipes (-1 once closed).
        self.stdout = stdout
        self.stderr = stderr
        self._exit: TaskExit | None = None
        self._waiting = asyncio.Lock()
        self._seen: dict[int, psutil.Process] = {}

    @property
    def exit(self) -> TaskExit | None:
        """The exit once :meth:`wait` reaped the task."""
        return self._exit

    async def read_output(self) -> AsyncIterator[tuple[str, bytes]]:
        """("stdout" | "stderr", bytes) as they arrive, until both pipes close
        (when the task and everything it started have exited or closed them).

        One chunk per stream is read ahead: a slow consumer leaves the task
        blocked on a full pipe instead of filling the agent's memory."""
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        streams = {"stdout": self.stdout, "stderr": self.stderr}
        streams = {name: fd for name, fd in streams.items() if fd >= 0}
        watched: set[int] = set()

        def ready(name: str, fd: int) -> None:
            try:
                data = os.read(fd, 65536)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            loop.remove_reader(fd)  # until this chunk is consumed
            watched.discard(fd)
            queue.put_nowait((name, data))

        def watch(name: str, fd: int) -> None:
            loop.add_reader(fd, ready, name, fd)
            watched.add(fd)

        for name, fd in streams.items():
            os.set_blocking(fd, False)
            watch(name, fd)
        try:
            while streams:
                name, data = await queue.get()
                if data:
                    yield name, data
                    watch(name, streams[name])
                    continue
                os.close(streams.pop(name))
                setattr(self, name, -1)
        finally:
            for fd in watched:
                loop.remove_reader(fd)

    def signal(self, signum: int) -> None:
        """Send ``signum`` to the task's process group (every process of its
        mount namespace once the leader is reaped: its pid may be reused)."""
        if self._exit is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signum)
            return
        for proc in self._members():
            with contextlib.suppress(psutil.Error):
                proc.send_signal(signum)

    async def wait(self) -> TaskExit:
        """Reap the task (once; later calls return the same exit)."""
        async with self._waiting:
            if self._exit is not None:
                return self._exit
            loop = asyncio.get_running_loop()
            pidfd = os.pidfd_open(self.pid)
            try:
                while True:
                    pid, status, usage = os.wait4(self.pid, os.WNOHANG)
                    if pid:
                        break
                    readable: asyncio.Future[None] = loop.create_future()
                    loop.add_reader(pidfd, _settle, readable)
                    try:
                        await readable
                    finally:
                        loop.remove_reader(pidfd)
            finally:
                os.close(pidfd)
            if os.WIFSIGNALED(status):
                signum: int | None = os.WTERMSIG(status)
                code = 128 + os.WTERMSIG(status)
            else:
                signum, code = None, os.waitstatus_to_exitcode(status)
            rusage = {"utime": usage.ru_utime, "stime": usage.ru_stime, "maxrss": usage.ru_maxrss}
            self._exit = TaskExit(code, signum, rusage)
            return self._exit

    def _members(self) -> list[psutil.Process]:
        """Every live process in the task's mount namespace, and the leader's
        descendants while it is unreaped."""
        found: dict[int, psutil.Process] = {}
        for pid in psutil.pids():
            if _mnt_ns(pid) == self.mnt_ns:
                try:
                    found[pid] = self._seen.get(pid) or psutil.Process(pid)
                except psutil.Error:
                    continue
        if self._exit is None:
            try:
                leader = psutil.Process(self.pid)
                for proc in [leader, *leader.children(recursive=True)]:
                    found.setdefault(proc.pid, proc)
            except psutil.Error:
                pass
        return list(found.values())

    def kill_all(self) -> None:
        """SIGKILL every process the task left (group, namespace, descendants),
        again until none is left; the leader stays a zombie for :meth:`wait`."""
        for _ in range(KILL_ROUNDS):
            alive = [p for p in self._members() if not _zombie(p)]
            if self._exit is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
            if not alive:
                return
            for proc in alive:
                with contextlib.suppress(psutil.Error):
                    proc.kill()
            # Never wait on the leader: psutil would reap it, and wait() needs its status.
            others = [p for p in alive if p.pid != self.pid]
            if others:
                psutil.wait_procs(others, timeout=0.05)
            else:
                time.sleep(0.005)  # the leader dies within a tick of SIGKILL

    def procs(self) -> list[dict[str, Any]]:
        """The task's live processes for ``beostat ps``, one row each: pid, user,
        state, cpu_percent (since the last call), rss (bytes), cmd."""
        rows: list[dict[str, Any]] = []
        members = self._members()
        self._seen = {p.pid: p for p in members}
        for proc in members:
            try:
                with proc.oneshot():
                    try:
                        user = proc.username()
                    except KeyError:  # no passwd entry on a diskless node
                        user = str(proc.uids().real)
                    rows.append(
                        {
                            "pid": proc.pid,
                            "user": user,
                            "state": proc.status(),
                            "cpu_percent": proc.cpu_percent(None),
                            "rss": proc.memory_info().rss,
                            "cmd": " ".join(proc.cmdline()) or proc.name(),
                        }
                    )
            except psutil.Error:
                continue
        return sorted(rows, key=lambda r: int(r["pid"]))

    def close(self) -> None:
        """Close the output pipes not yet read to EOF."""
        for name in ("stdout", "stderr"):
            fd = getattr(self, name)
            if fd >= 0:
                os.close(fd)
                setattr(self, name, -1)
