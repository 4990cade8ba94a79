"""Enter a job's environment root WITHOUT root, and become the step's program.

``beonode step --root DIR --tmp DIR -- PROG ARGS...`` (or, faster, this
module under ``python -I -S``: see :func:`command`) runs as the job's user, e.g.
as a Slurm step under slurmstepd, and in one process, in this order:
``unshare(CLONE_NEWUSER | CLONE_NEWNS)``; ``deny`` setgroups, then map the
user's uid and gid each to itself (files it writes keep its ids); make ``/``
recursively private (our mounts never reach the host); rbind ``/proc``,
``/dev``, the job's tmp at ``/tmp``, the site's binds (``--bind``) and the
user's home (unless a bind holds it) onto the mount points the root already
has (an ordinary user cannot make them in a root-owned root; one missing, or
a directory missing on the node, is left out in silence: the agent told the
job's events when it built the root); bind each submitted file under them
back over the host's copy; ``chroot``; ``chdir`` to the cwd (else home, else ``/``);
``execve`` with the environment as given (``SLURM_*`` pass through).

The program therefore keeps the launcher's pid, parent and cgroup: scancel,
time limits and Slurm's accounting see it as the step itself. The new user
namespace's capabilities vanish at ``execve`` (uid != 0): the program runs
with exactly the user's rights; the kernel keeps the root's read-only flag
locked. This is no security boundary, and needs none: it is the user's own
process doing what the user may do.

The submitted files to bind back are found by walking the root itself (its
``/tmp`` and home, before the bind hides them): the root shows exactly the
manifest, so no side file has to be written by the agent, trusted or kept
in step with it.

Failures: one line on stderr naming the step and the path, and an exit
status: 2 usage, 125 refused (run as root), 126 the root could not be
entered or the program not executed, 127 the program is not in the root.

Start-up: only ``os``, ``sys``, ``ctypes``, built-in modules,
:mod:`launcher.node.tasks.mounts` (the binds it shares with the agent's root
helper, as lean) and :mod:`cachefs.argwalk` (the option walk it shares with
the perl reader, importing nothing) are imported: no typing, no
``signal``/``enum``, no ``contextlib``.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import stat
import sys

from cachefs.argwalk import LeadingOptions
from launcher.node.tasks import mounts as rm
from launcher.node.tasks.mounts import EXIT_CANNOT_ENTER, EXIT_NOT_FOUND, StepFailed

# Not typing, not signal (its enum import is ~9 ms): mypy reads the stubs.
TYPE_CHECKING = False
if TYPE_CHECKING:
    import signal as _signal
    from collections.abc import Sequence
    from typing import NoReturn
else:
    import _signal

PROG = "beonode step"
EXIT_USAGE = 2
EXIT_REFUSED = 125
__all__ = ["EXIT_CANNOT_ENTER", "EXIT_NOT_FOUND", "StepFailed", "StepOptions", "enter_step"]

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
USAGE = (
    f"usage: {PROG} --root DIR --tmp DIR [--home DIR] [--cwd DIR] [--bind DIR]... "
    "[--allow-root] -- PROG [ARGS...]"
)


class StepOptions:
    """What to enter and run. ``home`` None: the user's from the passwd
    database (else ``$HOME``); ``cwd`` None: the current directory."""

    __slots__ = ("allow_root", "argv", "binds", "cwd", "home", "root", "tmp")

    def __init__(
        self,
        root: str,
        tmp: str,
        argv: Sequence[str],
        *,
        home: str | None = None,
        cwd: str | None = None,
        allow_root: bool = False,
        binds: Sequence[str] = (),
    ) -> None:
        self.root = root
        self.tmp = tmp
        self.argv = list(argv)
        self.home = home
        self.cwd = cwd
        self.allow_root = allow_root
        #: host directories bound at the same path (the site's, as the agent planned)
        self.binds = list(binds)


def command(
    root: str,
    tmp: str,
    argv: Sequence[str],
    *,
    python: str = sys.executable,
    home: str | None = None,
    cwd: str | None = None,
    binds: Sequence[str] = (),
) -> list[str]:
    """The fast command line for a batch script or srun: this module run by an
    isolated interpreter (``-I -S``: no site-packages, none of the user's
    ``PYTHON*`` variables), the same options as ``beonode step``. It is
    imported, not run as a script, so its cached bytecode is used (compiling
    it would take ~4 ms of every start)."""
    boot = rm.bootstrap("enter_step")
    extra = [*(["--home", home] if home else []), *(["--cwd", cwd] if cwd else [])]
    extra += [f"--bind={path}" for path in binds]
    return [python, "-I", "-S", "-c", boot, "--root", root, "--tmp", tmp, *extra, "--", *argv]


def parse_args(args: Sequence[str]) -> StepOptions:
    """Parse the script's arguments (``--opt VALUE``, ``--opt=VALUE``, then
    ``--`` or the first non-option). Raises StepFailed (status 2)."""
    values: dict[str, str] = {}
    binds: list[str] = []
    allow_root = False
    words = LeadingOptions(args, lambda arg: arg == "-h" or arg.startswith("--"))
    for arg in words:
        if arg == "--allow-root":
            allow_root = True
            continue
        if arg in ("-h", "--help"):
            raise StepFailed("usage", USAGE, status=EXIT_USAGE)
        name, eq, value = arg[2:].partition("=")
        if name not in ("root", "tmp", "home", "cwd", "bind"):
            raise StepFailed("usage", f"unknown option {arg}; {USAGE}", status=EXIT_USAGE)
        if not eq:
            given = words.value()
            if given is None:
                raise StepFailed("usage", f"{arg} needs a value; {USAGE}", status=EXIT_USAGE)
            value = given
        if name == "bind":
            binds.append(value)
        else:
            values[name] = value
    argv = words.operands()
    missing = [f"--{name}" for name in ("root", "tmp") if not values.get(name)]
    if missing or not argv or not argv[0]:
        what = f"{' and '.join(missing)} missing" if missing else "no program given"
        raise StepFailed("usage", f"{what}; {USAGE}", status=EXIT_USAGE)
    return StepOptions(
        values["root"],
        values["tmp"],
        argv,
        home=values.get("home") or None,
        cwd=values.get("cwd") or None,
        allow_root=allow_root,
        binds=binds,
    )


def _write(path: str, text: str, step: str) -> None:
    try:
        fd = os.open(path, os.O_WRONLY)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)
    except OSError as exc:
        raise StepFailed(
            step, f"write {text.strip()!r} to {path}: {exc.strerror}", errno=exc.errno or 0
        ) from exc


def _bind_dir(root: str, host: str, where: str, *, create: bool, step: str) -> None:
    """Bind ``host`` at ``where``, then the files the root shows under ``where``
    (the submitted ones, found before the bind hides them) back over it."""
    submitted = rm.files_under(rm.inside(root, where))
    rm.bind_dir(root, host, where, submitted, create=create, step=step, prog=PROG)


def _home_of(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_dir or None
    except KeyError:  # no passwd entry on a diskless node
        return os.environ.get("HOME") or None


def _unshare() -> None:
    if rm.libc.unshare(CLONE_NEWUSER | CLONE_NEWNS) == 0:
        return
    err = ctypes.get_errno()
    raise StepFailed(
        "unshare",
        f"unshare(CLONE_NEWUSER|CLONE_NEWNS): {os.strerror(err)}; unprivileged user "
        "namespaces must be enabled (sysctl user.max_user_namespaces > 0, and "
        "kernel.unprivileged_userns_clone=1 or kernel.apparmor_restrict_unprivileged_userns=0 "
        "where those exist)",
        errno=err,
    )


def enter_step(opts: StepOptions) -> NoReturn:
    """Enter ``opts.root`` and ``execve`` the program; returns only by raising
    StepFailed (its ``status``: 125 refused, 126 cannot enter or exec, 127 not
    found). A note that is no failure (cwd missing) goes to stderr."""
    try:
        _enter(opts)
    except OSError as exc:  # where no step expects one: still one line, not a traceback
        raise StepFailed("setup", str(exc), errno=exc.errno or 0) from exc


def _enter(opts: StepOptions) -> NoReturn:
    uid, gid = os.geteuid(), os.getegid()
    if uid == 0 and not opts.allow_root:
        raise StepFailed(
            "refuse root",
            "beonode step runs as the job's user; root's tasks go through the node agent's "
            "sandbox (--allow-root is for tests)",
            status=EXIT_REFUSED,
        )
    root = os.path.realpath(opts.root)
    tmp = os.path.realpath(opts.tmp)
    for what, path, given in (("root", root, opts.root), ("tmp", tmp, opts.tmp)):
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:  # a roots dir the user cannot search says so here
            raise StepFailed(f"check {what}", f"{given}: {exc.strerror}") from exc
        if not stat.S_ISDIR(mode):
            raise StepFailed(f"check {what}", f"{given} is not a directory")
    for what, maybe in (("home", opts.home), ("cwd", opts.cwd), *(("bind", b) for b in opts.binds)):
        if maybe is not None and not maybe.startswith("/"):
            raise StepFailed(f"check {what}", f"{maybe} is not an absolute path")
    binds = [os.path.normpath(b) for b in opts.binds if os.path.normpath(b) != "/"]
    home = os.path.normpath(opts.home) if opts.home else _home_of(uid)
    cwd = opts.cwd
    if cwd is None:
        try:
            cwd = os.getcwd()
        except OSError:  # removed under us: fall back to home
            cwd = None

    _unshare()
    _write("/proc/self/setgroups", "deny\n", "deny setgroups")
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n", "map uid")
    _write("/proc/self/gid_map", f"{gid} {gid} 1\n", "map gid")
    rm.mount(None, "/", rm.MS_REC | rm.MS_PRIVATE, "make / private")
    rm.bind("/proc", rm.inside(root, "/proc"), "mount /proc", rec=True)
    rm.bind("/dev", rm.inside(root, "/dev"), "mount /dev", rec=True)
    _bind_dir(root, tmp, "/tmp", create=True, step="mount /tmp")
    # The home goes in on its own unless a site bind holds it (sitebinds.py).
    own_home = home if home and home != "/" and not any(rm.under(home, b) for b in binds) else None
    for host in [*binds, *([own_home] if own_home else [])]:
        # Left out in silence when missing: the agent said so once, not every step.
        if os.path.isdir(host) and os.path.isdir(rm.inside(root, host)):
            step = "mount home" if host == home else f"mount {host}"
            _bind_dir(root, host, host, create=False, step=step)
    rm.chroot(root)
    landed = "/"
    for where in (cwd, home):
        if where is not None:
            try:
                os.chdir(where)
            except OSError:
                continue
            landed = where
            break
    if cwd is not None and landed != cwd:
        sys.stderr.write(f"{PROG}: cwd {cwd} is missing in the root; running in {landed}\n")
    program = rm.find_program(opts.argv[0], os.environ.get("PATH"))
    # Python's SIG_IGN of SIGPIPE and SIGXFSZ would survive execve; the step's must not.
    for signum in (_signal.SIGPIPE, _signal.SIGXFSZ):
        _signal.signal(signum, _signal.SIG_DFL)
    sys.stderr.flush()  # our notes come before anything the program writes
    try:
        os.execve(program, opts.argv, os.environ)
    except OSError as exc:
        hint = " (its interpreter or loader is missing in the root?)" if exc.errno == 2 else ""
        raise StepFailed(
            "execve", f"{program}: {exc.strerror}{hint}", errno=exc.errno or 0
        ) from exc


def main(args: Sequence[str] | None = None) -> NoReturn:
    """The script: parse, enter, exec; on failure one line and the step's status."""
    _signal.signal(_signal.SIGINT, _signal.SIG_DFL)  # Ctrl-C ends us as it would the program
    try:
        enter_step(parse_args(sys.argv[1:] if args is None else args))
    except StepFailed as exc:
        message, status = f"{PROG}: {exc}", exc.status
    except Exception as exc:  # never a traceback in a job's output
        message, status = f"{PROG}: setup failed: {type(exc).__name__}: {exc}", EXIT_CANNOT_ENTER
    try:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()
    finally:
        os._exit(status)


if __name__ == "__main__":
    main()
