"""The helper that puts one task in its environment root and becomes it.

:func:`launcher.node.tasks.sandbox.start_task` spawns this module under ``python -I -S``
(``posix_spawn``, so the agent never forks its own Python state) as a new
session leader. The helper reads the task as JSON from fd 3 and, as root:
``unshare(CLONE_NEWNS)``; makes ``/`` a recursive slave (the host's unmount of
the view still reaches us, our mounts never reach the host); binds ``/proc``,
``/dev``, the job's tmp, the site's binds and the user's home (``nosuid,nodev``)
into the root (:mod:`launcher.node.roots.sitebinds` decided which);
``chroot``; ``setgroups``, ``setgid``, ``setuid``; ``chdir``; rlimits; then
``execve``. The task therefore keeps the helper's pid and session.

Manifest files under the bound-in tmp, site binds or home (a program the
user submitted from ``~``) would be hidden by the bind: each is bound back over
the host's copy from the view, so the task runs the submitted bytes, not today's file.

The spec is a ``marshal`` dump (from the agent, trusted; json's import alone
would double the helper's start-up). Reports go to fd 4 (close-on-exec), one
tab-separated line each: ``ns INODE`` (the task's mount namespace) before
``execve``; ``failed STEP ERRNO DETAIL`` when a step fails, then exit 127. EOF
without ``failed`` means ``execve`` succeeded. Only the standard library is
used: the helper runs isolated (``-I -S``).
"""

from __future__ import annotations

import marshal
import os
import resource
import signal
import sys

from launcher.node.tasks import mounts as rm
from launcher.node.tasks.mounts import StepFailed

# Not typing: its import is a sixth of the helper's start-up. mypy still reads it.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SPEC_FD = 3
REPORT_FD = 4
EXIT_SETUP_FAILED = 127

CLONE_NEWNS = 0x00020000
PROG = "beolaunch"


def _bind_dir(
    root: str, host: str, where: str, overlays: list[str], *, create: bool, step: str, rec: bool
) -> None:
    """Bind ``host`` at ``where`` (nosuid,nodev; ``rec``: with what is mounted
    below it), then the manifest's files under ``where`` (``overlays``: the
    submitted copies) back over it."""
    submitted = rm.submitted_under(overlays, where)
    rm.bind_dir(
        root, host, where, submitted, create=create, step=step, prog=PROG, rec=rec, harden=True
    )


def _bind_host_dirs(root: str, mounts: list[str], home: str | None, overlays: list[str]) -> None:
    """Bind the site's directories and the home (``mounts``: none inside
    another) at their own paths. Each is opened as root without following a
    symlink a user could have planted on its path; one missing now is left
    out in silence (the agent told the submitter when it built the root)."""
    for where in mounts:
        try:
            host = rm.open_trusted_dir(where)
        except OSError:
            continue
        try:
            step = "mount home" if where == home else f"mount {where}"
            source = f"/proc/self/fd/{host}"
            _bind_dir(root, source, where, overlays, create=False, step=step, rec=True)
        finally:
            os.close(host)


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
    if rm.libc.unshare(CLONE_NEWNS) != 0:
        rm.fail("unshare", "unshare(CLONE_NEWNS)")
    rm.mount(None, "/", rm.MS_REC | rm.MS_SLAVE, "make / a slave mount")
    rm.bind("/proc", rm.inside(root, "/proc"), "mount /proc", rec=True)
    rm.bind("/dev", rm.inside(root, "/dev"), "mount /dev", rec=True)
    _bind_dir(root, spec["tmp"], "/tmp", overlays, create=True, step="mount /tmp", rec=False)
    _bind_host_dirs(root, spec.get("mounts", []), home, overlays)
    os.write(report, f"ns\t{os.stat('/proc/self/ns/mnt').st_ino}\n".encode())
    rm.chroot(root)
    step = "setgroups"
    try:
        os.setgroups(groups)
        step = "setgid"
        os.setgid(gid)
        step = "setuid"
        os.setuid(uid)
    except OSError as exc:
        detail = f"uid {uid} gid {gid} groups {groups}: {exc.strerror}"
        raise StepFailed(step, detail, errno=exc.errno or 0) from exc
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
    program = rm.find_program(argv[0], env.get("PATH"))
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
        raise StepFailed("execve", f"{program}: {exc.strerror}", errno=exc.errno or 0) from exc


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
