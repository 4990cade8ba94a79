"""The helper that puts one task in its environment root and becomes it.

:func:`launcher.node.sandbox.start_task` spawns ``python -I -S enter.py``
(``posix_spawn``, so the agent never forks its own Python state) as a new
session leader. The helper reads the task as JSON from fd 3 and, as root:
``unshare(CLONE_NEWNS)``; makes ``/`` a recursive slave (the host's unmount of
the view still reaches us, our mounts never reach the host); binds ``/proc``,
``/dev``, the job's tmp (``nosuid,nodev``) and the user's home into the root;
``chroot``; ``setgroups``, ``setgid``, ``setuid``; ``chdir``; rlimits; then
``execve``. The task therefore keeps the helper's pid and session.

Manifest files under the bound-in tmp or home (a program the user submitted
from ``~``) would be hidden by the bind: each is bound back over the host's
copy from the view, so the task runs the submitted bytes, not today's file.

The spec is a ``marshal`` dump (from the agent, trusted; json's import alone
would double the helper's start-up). Reports go to fd 4 (close-on-exec), one
tab-separated line each: ``ns INODE`` (the task's mount namespace) before
``execve``; ``failed STEP ERRNO DETAIL`` when a step fails, then exit 127. EOF
without ``failed`` means ``execve`` succeeded. Only the standard library is
used: the helper runs isolated (``-I -S``).
"""

from __future__ import annotations

import contextlib
import ctypes
import marshal
import os
import resource
import signal
import stat
import sys

# Not typing: its import is a sixth of the helper's start-up. mypy still reads it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SPEC_FD = 3
REPORT_FD = 4
EXIT_SETUP_FAILED = 127

CLONE_NEWNS = 0x00020000
MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_SLAVE = 0x80000

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"


class StepFailed(Exception):
    def __init__(self, step: str, detail: str, errno: int = 0) -> None:
        super().__init__(step)
        self.step = step
        self.detail = detail
        self.errno = errno


# The interpreter links libc: no find_library (it runs ldconfig, tens of ms).
_libc: Any = ctypes.CDLL(None, use_errno=True)


def _check(step: str, result: int, detail: str) -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise StepFailed(step, f"{detail}: {os.strerror(err)}", err)


def _mount(source: str | None, target: str, fstype: str | None, flags: int, step: str) -> None:
    result = _libc.mount(
        source.encode() if source is not None else None,
        target.encode(),
        fstype.encode() if fstype is not None else None,
        ctypes.c_ulong(flags),
        None,
    )
    _check(step, result, f"mount {source or ''} on {target}")


def _bind(source: str, target: str, step: str, *, rec: bool = False, harden: bool = False) -> None:
    _mount(source, target, None, MS_BIND | (MS_REC if rec else 0), step)
    if harden:  # flags of a bind are set by a second, remount call
        _mount(None, target, None, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV, step)


def _inside(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _open_cover(top: int, rel: str, *, create: bool) -> int | None:
    """An O_PATH fd on the regular file ``rel`` under directory fd ``top``,
    never following a symlink (the user owns the directory and may race us);
    with ``create``, missing directories (0755) and an empty file are made.
    None when there is no regular file to cover."""
    parts = rel.split("/")
    fds: list[int] = []
    current = top
    try:
        for name in parts[:-1]:
            try:
                current = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=current)
            except FileNotFoundError:
                if not create:
                    return None
                os.mkdir(name, 0o755, dir_fd=current)
                current = os.open(name, os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW, dir_fd=current)
            fds.append(current)
        if create:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW
            with contextlib.suppress(FileExistsError):
                os.close(os.open(parts[-1], flags, 0o444, dir_fd=current))
        cover = os.open(parts[-1], os.O_PATH | os.O_NOFOLLOW, dir_fd=current)
    except OSError:  # a symlink (ELOOP), a file where a directory should be...
        return None
    finally:
        for fd in fds:
            os.close(fd)
    if not stat.S_ISREG(os.fstat(cover).st_mode):
        os.close(cover)
        return None
    return cover


def _bind_dir(
    root: str, host: str, where: str, overlays: list[str], *, create: bool, step: str
) -> None:
    """Bind host dir ``host`` at ``where`` in the root, then bind each overlay
    file (a manifest path under ``where``) back from the view over it."""
    target = _inside(root, where)
    view = os.open(target, os.O_PATH | os.O_DIRECTORY)  # the view's dir, before it is hidden
    try:
        _bind(host, target, step, harden=True)
        top = os.open(target, os.O_PATH | os.O_DIRECTORY)  # now the host's dir
        try:
            for path in overlays:
                rel = os.path.relpath(path, where)
                cover = _open_cover(top, rel, create=create)
                if cover is None:
                    sys.stderr.write(
                        f"beolaunch: {path} is no longer a file in {host}; "
                        "the submitted copy cannot be shown there\n"
                    )
                    continue
                try:
                    # Through the fds: what was checked is what gets covered.
                    _bind(f"/proc/self/fd/{view}/{rel}", f"/proc/self/fd/{cover}", step)
                finally:
                    os.close(cover)
        finally:
            os.close(top)
    finally:
        os.close(view)


def _find_program(name: str, env: dict[str, str]) -> str:
    if "/" in name:
        candidates = [name]
    else:
        dirs = env.get("PATH", DEFAULT_PATH).split(":")
        candidates = [os.path.join(d or ".", name) for d in dirs]
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
    where = "" if "/" in name else f" in PATH={env.get('PATH', DEFAULT_PATH)}"
    raise StepFailed("find program", f"{name} is not an executable file in the root{where}")


def _rlimits(limits: dict[str, list[int]]) -> None:
    for name, (soft, hard) in sorted(limits.items()):
        which = getattr(resource, f"RLIMIT_{name.upper()}")
        _, cur_hard = resource.getrlimit(which)
        # Unprivileged now: never above the node's hard limit; say so if clamped.
        inf = resource.RLIM_INFINITY
        if cur_hard != inf and (hard == inf or hard > cur_hard):
            sys.stderr.write(f"beolaunch: rlimit {name} hard {hard} lowered to {cur_hard}\n")
            hard = cur_hard
        if hard != inf and (soft == inf or soft > hard):
            soft = hard
        try:
            resource.setrlimit(which, (soft, hard))
        except (OSError, ValueError) as exc:
            raise StepFailed("rlimits", f"{name}=({soft}, {hard}): {exc}") from exc


def _enter(spec: dict[str, Any], report: int) -> None:
    root: str = spec["root"]
    uid, gid, groups = int(spec["uid"]), int(spec["gid"]), [int(g) for g in spec["groups"]]
    if uid == 0 and not spec.get("allow_root"):
        raise StepFailed("setuid", "refusing to run a task as root (uid 0)")
    home: str | None = spec.get("home")
    overlays: list[str] = spec.get("overlays", [])
    _check("unshare", _libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_SLAVE, "make / a slave mount")
    _bind("/proc", _inside(root, "/proc"), "mount /proc", rec=True)
    _bind("/dev", _inside(root, "/dev"), "mount /dev", rec=True)
    tmp_overlays = [p for p in overlays if p.startswith("/tmp/")]
    _bind_dir(root, spec["tmp"], "/tmp", tmp_overlays, create=True, step="mount /tmp")
    if home and os.path.isdir(home) and os.path.isdir(_inside(root, home)):
        home_overlays = [p for p in overlays if p.startswith(home.rstrip("/") + "/")]
        _bind_dir(root, home, home, home_overlays, create=False, step="mount home")
    elif home:
        sys.stderr.write(f"beolaunch: home {home} is not bound in (missing on the node)\n")
    os.write(report, f"ns\t{os.stat('/proc/self/ns/mnt').st_ino}\n".encode())
    try:
        os.chroot(root)
        os.chdir("/")
    except OSError as exc:
        raise StepFailed("chroot", f"chroot {root}: {exc.strerror}", exc.errno or 0) from exc
    step = "setgroups"
    try:
        os.setgroups(groups)
        step = "setgid"
        os.setgid(gid)
        step = "setuid"
        os.setuid(uid)
    except OSError as exc:
        detail = f"uid {uid} gid {gid} groups {groups}: {exc.strerror}"
        raise StepFailed(step, detail, exc.errno or 0) from exc
    cwd: str = spec["cwd"]
    for where in (cwd, home, "/"):
        if where is None:
            continue
        try:
            os.chdir(where)
        except OSError:
            continue
        if where != cwd:
            sys.stderr.write(f"beolaunch: cwd {cwd} is missing in the root; running in {where}\n")
        break
    env: dict[str, str] = spec["env"]
    argv: list[str] = spec["argv"]
    program = _find_program(argv[0], env)
    _rlimits(spec.get("rlimits", {}))
    # SIG_IGN survives execve: Python ignores SIGPIPE and SIGXFSZ; the task must not.
    for signum in signal.valid_signals():
        if signum not in (signal.SIGKILL, signal.SIGSTOP):
            try:
                if signal.getsignal(signum) == signal.SIG_IGN:
                    signal.signal(signum, signal.SIG_DFL)
            except (OSError, ValueError):
                pass
    sys.stderr.flush()  # our notes come before anything the task writes
    try:
        os.execve(program, argv, env)
    except OSError as exc:
        raise StepFailed("execve", f"{program}: {exc.strerror}", exc.errno or 0) from exc


def main() -> None:
    report = REPORT_FD
    os.set_inheritable(report, False)  # EOF on success is the parent's signal
    os.closerange(REPORT_FD + 1, 1 << 16)  # nothing of the agent's reaches the task
    try:
        with os.fdopen(SPEC_FD, "rb") as f:
            spec = marshal.loads(f.read())
        _enter(spec, report)
    except StepFailed as exc:
        failed = (exc.step, str(exc.errno), exc.detail)
    except Exception as exc:  # whatever it is, the parent must hear of it
        failed = ("setup", "0", f"{type(exc).__name__}: {exc}")
    line = "\t".join(" ".join(field.split()) for field in failed)  # no tab or newline inside
    os.write(report, f"failed\t{line}\n".encode(errors="replace"))
    os._exit(EXIT_SETUP_FAILED)


if __name__ == "__main__":
    main()
