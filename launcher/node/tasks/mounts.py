"""Mounting a task's pieces into its environment root: what both ways in share.

Two programs put a process into an environment root and exec it: the agent's
root helper (:mod:`launcher.node.tasks.enter_task`, as root, for the embedded scheduler)
and ``beonode step`` (:mod:`launcher.node.tasks.enter_step`, as the job's user in
a user namespace, for Slurm steps). Both bind host directories (the job's
tmp, the site's binds, the home) over the root's mount points and then bind the submitted files
under them back over the host's copies; the code that does it lives here, once.

Both run under ``python -I -S`` at every task start, so this module imports
only ``ctypes``, ``errno``, ``os``, ``stat`` and ``sys`` (no typing, no contextlib: each
costs milliseconds of every start), and its errors are one exception,
:class:`StepFailed`, naming the step that failed.
"""

from __future__ import annotations

import ctypes
import os
import stat
import sys
from errno import ELOOP, ENOSYS, ENOTDIR  # built in: 0.1 ms

# Not typing: its import is a sixth of the helpers' start-up. mypy still reads it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any, NoReturn

MS_RDONLY = 0x1
MS_NOSUID = 0x2
MS_NODEV = 0x4
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_PRIVATE = 0x40000
MS_SLAVE = 0x80000

# mount_setattr(2): the same number on every architecture (new syscalls share one table)
SYS_MOUNT_SETATTR = 442
AT_FDCWD = -100
AT_RECURSIVE = 0x8000
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MAX_LINKS = 40  # as the kernel's path walk

DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: A step that could not enter the root or exec; a program not found.
EXIT_CANNOT_ENTER = 126
EXIT_NOT_FOUND = 127

# The interpreter links libc: no find_library (it runs ldconfig, tens of ms).
libc: Any = ctypes.CDLL(None, use_errno=True)


class StepFailed(Exception):
    """A step before ``execve`` failed: ``step`` names it, ``detail`` says
    what and where, ``status`` is the exit status it maps to."""

    def __init__(
        self, step: str, detail: str, *, errno: int = 0, status: int = EXIT_CANNOT_ENTER
    ) -> None:
        super().__init__(f"{step} failed: {detail}")
        self.step = step
        self.detail = detail
        self.errno = errno
        self.status = status


def fail(step: str, detail: str) -> NoReturn:
    """Raise StepFailed for the libc call that just failed (its errno)."""
    err = ctypes.get_errno()
    raise StepFailed(step, f"{detail}: {os.strerror(err)}", errno=err)


def mount(
    source: str | None, target: str, flags: int, step: str, fstype: str | None = None
) -> None:
    result = libc.mount(
        source.encode() if source is not None else None,
        target.encode(),
        fstype.encode() if fstype is not None else None,
        ctypes.c_ulong(flags),
        None,
    )
    if result != 0:
        fail(step, f"mount {source or ''} on {target}")


def bind(source: str, target: str, step: str, *, rec: bool = False, harden: bool = False) -> None:
    """Bind ``source`` on ``target``; ``harden`` adds nosuid,nodev (a bind's
    flags are set by a second call: with ``rec``, on every mount it brought)."""
    mount(source, target, MS_BIND | (MS_REC if rec else 0), step)
    if harden and not (rec and _harden_tree(target, step)):
        mount(None, target, MS_REMOUNT | MS_BIND | MS_NOSUID | MS_NODEV, step)


def _harden_tree(target: str, step: str) -> bool:
    """nosuid,nodev on ``target`` and every mount below it, in one
    ``mount_setattr(AT_RECURSIVE)`` (a remount changes one mount only); False
    where the kernel lacks it (before 5.12), so the caller remounts the top."""
    attr = (ctypes.c_uint64 * 4)(MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV, 0, 0, 0)
    result = libc.syscall(
        ctypes.c_long(SYS_MOUNT_SETATTR),
        ctypes.c_int(AT_FDCWD),
        target.encode(),
        ctypes.c_uint(AT_RECURSIVE),
        attr,
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    if result == 0:
        return True
    if ctypes.get_errno() == ENOSYS:
        return False
    fail(step, f"mount_setattr nosuid,nodev on {target}")


def under(path: str, top: str) -> bool:
    """Whether normalised absolute ``path`` is ``top`` or lies below it."""
    return path == top or top == "/" or path.startswith(top.rstrip("/") + "/")


def submitted_under(files: Sequence[str], where: str) -> list[str]:
    """The submitted ``files`` (absolute) that a bind at ``where`` hides, relative to it."""
    prefix = where.rstrip("/") + "/"
    return [f[len(prefix) :] for f in files if f.startswith(prefix)]


def open_trusted_dir(path: str) -> int:
    """An O_PATH fd on directory ``path`` (absolute), resolved one component at
    a time: a symbolic link is followed only when root owns it (an admin's
    ``/home -> /export/home``), never one a user planted in a directory they
    may write. Raises OSError: ELOOP naming the link not followed (or too
    many links), ENOENT, ENOTDIR."""
    pending = [p for p in path.split("/") if p and p != "."]
    current = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    links = 0
    try:
        while pending:
            name = pending.pop(0)
            nxt = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=current)
            st = os.fstat(nxt)
            if not stat.S_ISLNK(st.st_mode):
                os.close(current)
                current = nxt
                continue
            try:
                target = os.readlink("", dir_fd=nxt)  # readlinkat on the link's own fd
            finally:
                os.close(nxt)
            links += 1
            if st.st_uid != 0 or links > MAX_LINKS:
                why = "a symbolic link not owned by root" if st.st_uid else "too many links"
                raise OSError(ELOOP, f"{why}; not followed", name)
            pending[:0] = [p for p in target.split("/") if p and p != "."]
            if target.startswith("/"):
                os.close(current)
                current = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        if not stat.S_ISDIR(os.fstat(current).st_mode):
            raise OSError(ENOTDIR, "not a directory", path)
    except BaseException:
        os.close(current)
        raise
    return current


def inside(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def files_under(top: str) -> list[str]:
    """Regular files below directory ``top`` (paths relative to it), never
    following a symlink; [] when ``top`` cannot be read."""
    found: list[str] = []
    pending = [""]
    while pending:
        rel = pending.pop()
        try:
            with os.scandir(os.path.join(top, rel) if rel else top) as entries:
                for entry in entries:
                    path = f"{rel}/{entry.name}" if rel else entry.name
                    if entry.is_dir(follow_symlinks=False):
                        pending.append(path)
                    elif entry.is_file(follow_symlinks=False):
                        found.append(path)
        except OSError:
            continue
    return sorted(found)


def open_cover(top: int, rel: str, *, create: bool) -> int | None:
    """An O_PATH fd on the regular file ``rel`` under directory fd ``top``,
    never following a symlink (the user owns the directory and may race us, or
    an earlier task planted one); with ``create``, missing directories (0755)
    and an empty file are made. None when there is no regular file to cover."""
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
            try:  # noqa: SIM105 (contextlib's import costs milliseconds)
                os.close(os.open(parts[-1], flags, 0o444, dir_fd=current))
            except FileExistsError:
                pass
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


def bind_dir(
    root: str,
    host: str,
    where: str,
    submitted: Sequence[str],
    *,
    create: bool,
    step: str,
    prog: str,
    rec: bool = True,
    harden: bool = False,
) -> None:
    """Bind host dir ``host`` at ``where`` in the root, then bind each submitted
    file (paths relative to ``where``, as the root shows them) back over the
    host's copy, through fds, so what was checked is what gets covered."""
    target = inside(root, where)
    try:
        view = os.open(target, os.O_PATH | os.O_DIRECTORY)  # the root's dir, before it is hidden
    except OSError as exc:
        raise StepFailed(
            step, f"{target}: {exc.strerror} (no mount point in the root)", errno=exc.errno or 0
        ) from exc
    try:
        bind(host, target, step, rec=rec, harden=harden)
        top = os.open(target, os.O_PATH | os.O_DIRECTORY)  # now the host's dir
        try:
            for rel in submitted:
                cover = open_cover(top, rel, create=create)
                if cover is None:
                    sys.stderr.write(
                        f"{prog}: {os.path.join(where, rel)} is no longer a file on this node; "
                        "the submitted copy cannot be shown there\n"
                    )
                    continue
                try:
                    bind(f"/proc/self/fd/{view}/{rel}", f"/proc/self/fd/{cover}", step)
                finally:
                    os.close(cover)
        finally:
            os.close(top)
    finally:
        os.close(view)


def chroot(root: str) -> None:
    """Make ``root`` this process's ``/`` and go there. Raises StepFailed ("chroot")."""
    try:
        os.chroot(root)
        os.chdir("/")
    except OSError as exc:
        raise StepFailed("chroot", f"chroot {root}: {exc.strerror}", errno=exc.errno or 0) from exc


def find_program(name: str, path: str | None) -> str:
    """The executable ``name`` (a path, or looked up in ``path``, a PATH value)."""
    if path is None:
        path = DEFAULT_PATH
    candidates = [name] if "/" in name else [os.path.join(d or ".", name) for d in path.split(":")]
    for candidate in candidates:
        try:
            st = os.stat(candidate)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and os.access(candidate, os.X_OK):
            return candidate
    where = "" if "/" in name else f" in PATH={path}"
    raise StepFailed(
        "find program",
        f"{name} is not an executable file in the root{where}",
        status=EXIT_NOT_FOUND,
    )


def bootstrap(module: str) -> str:
    """Python code for ``python -I -S -c`` that imports ``launcher.node.tasks.MODULE``
    from this tree and runs its ``main()`` (isolated: no site-packages, so the
    tree goes on sys.path; imported, not run as a script, so its cached
    bytecode is used)."""
    here = os.path.abspath(__file__)
    tree = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(here))))
    load = f"from launcher.node.tasks import {module}; {module}.main()"
    return f"import sys; sys.path[:0] = [{tree!r}]; {load}"
