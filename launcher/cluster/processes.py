"""Starting and stopping the cluster's long-running processes by pid.

A pid file holds the pid on its first line (what other tools expect) and, on a
second line, the argv we started as JSON. A pid counts as ours only when the
process is alive (not a zombie), started no later than the pid file was
written, and its command line is the one we started, so a recycled pid is
never signalled. Nothing is ever found or killed by name.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil

from cachefs.atomicfile import write_atomic
from launcher.errors import ClusterProcessError

STOP_TIMEOUT_S = 5.0
_CLOCK_SLACK_S = 1.0  # create_time is rounded to clock ticks; pid file mtime to the fs


@dataclass(frozen=True)
class PidRecord:
    pid: int
    argv: list[str] | None
    written: float  # pid file mtime, seconds since the epoch


def read_pid_file(path: Path) -> PidRecord | None:
    """The record in ``path``; None when it is missing or holds no pid."""
    try:
        with path.open() as f:
            written = os.fstat(f.fileno()).st_mtime
            lines = f.read().splitlines()
    except (FileNotFoundError, UnicodeDecodeError):
        return None
    try:
        pid = int(lines[0].strip())
    except (IndexError, ValueError):
        return None
    argv: list[str] | None = None
    if len(lines) > 1:
        with contextlib.suppress(ValueError):
            loaded = json.loads(lines[1])
            if isinstance(loaded, list) and all(isinstance(a, str) for a in loaded):
                argv = loaded
    return PidRecord(pid, argv, written) if pid > 0 else None


def cmdline_matches(cmdline: Sequence[str], argv: Sequence[str]) -> bool:
    """Whether a process showing ``cmdline`` runs ``argv``.

    Exact, or the same arguments after a prefix naming the same program: the
    kernel runs ``#!`` scripts as ``[interpreter, /path/to/script, args...]``,
    and our ``nsenter ... -- argv`` wrapper shows until it execs.
    """
    if not argv:
        return False
    if list(cmdline) == list(argv):
        return True
    rest = len(argv) - 1
    if len(cmdline) <= rest:
        return False
    if rest and list(cmdline[-rest:]) != list(argv[1:]):
        return False
    head = cmdline[: len(cmdline) - rest]
    name = os.path.basename(argv[0])
    return any(os.path.basename(h) == name for h in head)


def _reap(pid: int) -> None:
    # Our own child that exited stays a zombie until waited for.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def owned_process(record: PidRecord, argv: Sequence[str] | None = None) -> psutil.Process | None:
    """The live process ``record`` names, if it is the one we started; else None.

    ``argv`` is what we started when the pid file does not say (e.g. the master
    rewrote it with only its pid).
    """
    expected = record.argv or argv
    if not expected:
        return None
    _reap(record.pid)
    try:
        proc = psutil.Process(record.pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return None
        if proc.create_time() > record.written + _CLOCK_SLACK_S:
            return None  # started after we wrote the file: a recycled pid
        if not cmdline_matches(proc.cmdline(), expected):
            return None
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return None
    return proc


def alive(record: PidRecord) -> bool:
    """Whether the process ``record`` names still runs (not a zombie, not a pid
    recycled after the file was written), whatever its command line shows: a
    daemon we just started may be between two execs (nsenter, then the daemon),
    when /proc shows neither. For "did it die while starting", not for "may we
    signal it" (that is :func:`owned_process`, which checks the argv too)."""
    _reap(record.pid)
    try:
        proc = psutil.Process(record.pid)
        return (
            proc.status() != psutil.STATUS_ZOMBIE
            and proc.create_time() <= record.written + _CLOCK_SLACK_S
        )
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return False


def running(pid_file: Path, argv: Sequence[str] | None = None) -> psutil.Process | None:
    """The process ``pid_file`` names if it is alive and ours."""
    record = read_pid_file(pid_file)
    return owned_process(record, argv) if record else None


def start(argv: Sequence[str], pid_file: Path, log_file: Path, *, record: Sequence[str]) -> int:
    """Start ``argv`` detached (own session, stdin /dev/null, output appended to
    ``log_file``); write ``pid_file`` with ``record`` as the argv to match later.

    Raises ClusterProcessError when the program cannot be started.
    """
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    try:
        # posix_spawn, not Popen: nobody waits on a Popen object for a daemon, and
        # glibc reports an exec failure to us as an exception.
        pid = os.posix_spawnp(
            argv[0],
            list(argv),
            dict(os.environ),
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, log_fd, 1),
                (os.POSIX_SPAWN_DUP2, log_fd, 2),
            ],
            setsid=True,
        )
    except OSError as exc:
        raise ClusterProcessError(
            pid_file, f"cannot start {argv[0]}: {exc}; check the command and PATH"
        ) from exc
    finally:
        os.close(log_fd)
    write_atomic(pid_file, f"{pid}\n{json.dumps(list(record))}\n")
    return pid


def _wait_gone(procs: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    deadline = time.monotonic() + timeout
    alive = procs
    while alive:
        for p in alive:
            _reap(p.pid)
        alive = [p for p in alive if _alive(p)]
        if not alive or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    return alive


def _alive(proc: psutil.Process) -> bool:
    try:
        return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
    except (psutil.NoSuchProcess, psutil.ZombieProcess):
        return False


def terminate(procs: list[psutil.Process], timeout: float = STOP_TIMEOUT_S) -> tuple[int, int]:
    """SIGTERM ``procs``, SIGKILL those still alive after ``timeout`` seconds.

    Returns (stopped by SIGTERM, killed by SIGKILL). ``is_running`` checks the
    create time again, so a pid recycled meanwhile is not signalled.
    """
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            p.send_signal(signal.SIGTERM)
    left = _wait_gone(procs, timeout)
    for p in left:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.ZombieProcess):
            p.kill()
    still = _wait_gone(left, timeout)
    if still:
        pids = ", ".join(str(p.pid) for p in still)
        raise ClusterProcessError(
            None, f"pids {pids} survive SIGKILL (stuck in D state?): check them with ps"
        )
    return len(procs) - len(left), len(left)
