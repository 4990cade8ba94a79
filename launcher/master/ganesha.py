"""nfs-ganesha as the master's NFS server: start, reload, stop, find.

Ganesha runs as a daemon of its own, not a child of the master: its own
session, its pid in a file, started by ``beoctl nfs apply`` and stopped only by
``beoctl nfs stop``, so the homes nodes mount stay served while the master
restarts. It is run in the foreground (``-F``) from a process that does not
wait for it: ganesha's own daemon mode forks and exits 0 before it reads its
config, so a bad address or port would go unseen; here the start waits for the
port to answer or the process to exit, and an exit is reported with ganesha's
own log lines.

Measured with 4.3 on Debian: SIGHUP rereads the EXPORT blocks (an export
added, one removed, a CLIENT network changed: each live within a second, the log
says "Reread exports complete"); NFS_CORE_PARAM (address, port) is read only
at start, so a change there is a restart. Without rpcbind or dbus it logs CRIT
lines about both and serves NFSv4 anyway.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from launcher.errors import NfsServerError

BINARY = "ganesha.nfsd"
#: How long a start may take to answer on its port (seconds); ganesha 4.3
#: answers within about 1 s here, 10 s with two busy cores.
START_TIMEOUT_S = 30.0
#: How long a reload or a stop may take (seconds).
RELOAD_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 20.0
RELOADED = "Reread exports complete"
# "DATE : epoch E : HOST : nfs-ganesha-PID[THREAD] FUNC :COMPONENT :CRIT :message"
_SEVERE = re.compile(r":(?:CRIT|FATAL) :(.*)$")


@dataclass(frozen=True)
class GaneshaFiles:
    """Ganesha's files under the state dir's ``nfs/``."""

    dir: Path

    @property
    def config(self) -> Path:
        return self.dir / "ganesha.conf"

    @property
    def log(self) -> Path:
        return self.dir / "ganesha.log"

    @property
    def pid(self) -> Path:
        return self.dir / "ganesha.pid"

    @property
    def output(self) -> Path:
        """stdout and stderr (what ganesha says before its log is open)."""
        return self.dir / "ganesha.out"


def running_pid(files: GaneshaFiles) -> int | None:
    """The pid of the ganesha serving ``files.config``, or None when none runs.

    The pid file alone is not trusted: the process must be alive (not a zombie)
    and have been started with this config file (a pid reused by another
    program is not ours)."""
    try:
        pid = int(files.pid.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    return pid if _is_ours(pid, files) else None


def _is_ours(pid: int, files: GaneshaFiles) -> bool:
    try:
        args = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state != "Z" and os.fsencode(files.config) in args


def start(files: GaneshaFiles, address: str, port: int, binary: str = BINARY) -> int:
    """Start ganesha on ``files.config`` in its own session; return its pid once
    ``address``:``port`` answers. Raises NfsServerError with ganesha's complaint
    when it exits first or does not answer in time (it is then stopped)."""
    argv = [binary, "-F", "-L", str(files.log), "-f", str(files.config), "-p", str(files.pid)]
    log_start = _size(files.log)
    try:
        with files.output.open("ab") as out:
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                cwd="/",
                start_new_session=True,
            )
    except FileNotFoundError:
        raise NfsServerError(
            f"{binary} not found: install Debian's nfs-ganesha and nfs-ganesha-vfs "
            '(make deps), or set [nfs] server = "kernel" where the kernel has nfsd'
        ) from None
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(address, port):
        if process.poll() is not None:
            raise NfsServerError(
                f"ganesha exited ({process.returncode}) on start: "
                f"{_complaint(files.log, log_start)} (log: {files.log})"
            )
        if time.monotonic() > deadline:
            _terminate(process.pid, files)
            raise NfsServerError(
                f"ganesha did not answer on {address}:{port} within {START_TIMEOUT_S:.0f} s "
                f"(log: {files.log})"
            )
        time.sleep(0.1)
    return process.pid


def reload(files: GaneshaFiles, pid: int) -> None:
    """SIGHUP: ganesha rereads its EXPORT blocks; returns once its log says so.
    Raises NfsServerError when it does not within :data:`RELOAD_TIMEOUT_S`."""
    before = _count(files.log, RELOADED)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + RELOAD_TIMEOUT_S
    while _count(files.log, RELOADED) <= before:
        if time.monotonic() > deadline:
            raise NfsServerError(
                f"ganesha (pid {pid}) did not reload its exports within "
                f"{RELOAD_TIMEOUT_S:.0f} s; see {files.log}"
            )
        time.sleep(0.1)


def stop(files: GaneshaFiles) -> int | None:
    """Stop our ganesha (SIGTERM, SIGKILL after :data:`STOP_TIMEOUT_S`); the pid it
    had, or None when none ran."""
    pid = running_pid(files)
    if pid is not None:
        _terminate(pid, files)
    with contextlib.suppress(FileNotFoundError):
        files.pid.unlink()
    return pid


def answers(address: str, port: int) -> bool:
    """Whether something accepts TCP connections on ``address``:``port``."""
    return _answers(address, port)


def _terminate(pid: int, files: GaneshaFiles) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _is_ours(pid, files):
        if time.monotonic() > deadline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT_S
        time.sleep(0.1)
    # A child of this very process (started and stopped in one run) is reaped here.
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _answers(address: str, port: int) -> bool:
    try:
        with socket.create_connection((address, port), timeout=1.0):
            return True
    except OSError:
        return False


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0


def _count(path: Path, text: str) -> int:
    try:
        return path.read_text(errors="replace").count(text)
    except FileNotFoundError:
        return 0


def _complaint(log: Path, offset: int) -> str:
    """ganesha's CRIT and FATAL lines written since ``offset``, without the ones it
    always writes here (no dbus, no rpcbind)."""
    try:
        with log.open("rb") as f:
            f.seek(offset)
            lines = f.read().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return "no log written"
    ignored = ("dbus", "DBUS", "Cannot register", "rpcbind", "RADOS")
    found = [
        m.group(1).strip()
        for line in lines
        if (m := _SEVERE.search(line)) and not any(i in line for i in ignored)
    ]
    return "; ".join(found[-3:]) or "no error in its log"
