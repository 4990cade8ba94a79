"""Which host directories a job's root gets bound in, and what the submitter is told.

The master's ``[envroot] binds`` (``/home``, ``/scratch``: where users keep
their data) and the user's home are bound into every task's root at the same
path (:mod:`launcher.node.tasks.enter_task`, :mod:`launcher.node.tasks.enter_step`). The root
needs an empty mount point for each (the user cannot make one in a root-owned,
read-only root), so the agent decides once per job, when it builds the root,
which of them will be bound:

- a site bind missing on this node is left out, and said once (a notice);
- the home is bound on its own only when no site bind holds it (``/home``
  already shows ``/home/alice``); a home missing on the node is said once too;
- a path the job's own files make a file or symlink (``/scratch -> /data`` in
  the manifest) cannot be a mount point: left out, and said.

The notices go to the agent's log and the master (``notice``), never into a
task's output. :func:`plan_binds` is pure: the host check is passed in
(:func:`host_problem`, as the root helper will open each path, by default).
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cachefs.manifest import Manifest
from launcher.node.tasks.mounts import open_trusted_dir, under
from launcher.wire import MAX_NOTICE

#: Each task binds its own there (the job's tmp, the host's /proc and /dev).
SYSTEM_MOUNTPOINTS = ("/proc", "/dev", "/tmp")


def depth(path: str) -> int:
    """Components in a normalised absolute path (``/`` has none)."""
    return 0 if path == "/" else path.count("/")


@dataclass(frozen=True)
class BindPlan:
    """What each task of a job gets bound in, decided when its root is built."""

    #: the site binds present on the node, shallowest first, none inside another
    binds: tuple[str, ...] = ()
    #: the home, when it is bound on its own (None: no home, missing, or under a bind)
    home: str | None = None
    #: one line per path left out, for the submitter
    notices: tuple[str, ...] = ()

    @property
    def mountpoints(self) -> tuple[str, ...]:
        """The root's mount points for these binds, in mount order."""
        return mount_order([*self.binds, *([self.home] if self.home else [])])


def mount_order(paths: Iterable[str]) -> tuple[str, ...]:
    """``paths`` without repeats, shallowest first (an outer bind before the
    ones it holds, which then show over it), ties in the given order."""
    unique = list(dict.fromkeys(paths))
    return tuple(sorted(unique, key=depth))


def blocker(manifest: Manifest, path: str) -> str | None:
    """Why ``path`` cannot be a mount point in ``manifest``'s root: the job's
    own files have a file or symlink at it or above it. None when it can."""
    probe = path
    while True:
        entry = manifest.get(probe)
        if entry is not None and entry.kind != "dir":
            return f"the job's files have a {entry.kind} at {probe}"
        if probe == "/":
            return None
        probe = os.path.dirname(probe)


def host_problem(path: str) -> str | None:
    """Why host directory ``path`` cannot be bound, as the root helper resolves
    it (:func:`~launcher.node.tasks.mounts.open_trusted_dir`); None when it can."""
    try:
        os.close(open_trusted_dir(path))
    except FileNotFoundError:
        return "is not on this node"
    except NotADirectoryError:
        return "is not a directory on this node"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            link = exc.filename
            return f"has a symbolic link not owned by root on its path ({link}): not followed"
        return f"cannot be reached on this node ({exc.strerror})"
    return None


def plan_binds(
    manifest: Manifest,
    binds: Sequence[str],
    home: str | None,
    *,
    problem: Callable[[str], str | None] = host_problem,
) -> BindPlan:
    """Decide the binds of a job's root: ``binds`` (normalised absolute paths,
    the ``[envroot]`` ones) and ``home`` (the task's; None or ``/``: none).
    ``problem(path)`` says why this node cannot bind a host directory (None:
    it can). No kept path lies inside another: each bind is recursive, so
    the outer one shows the inner (and whatever the host mounted there), and
    every mount point is a directory of the root itself, never one reached
    through a bind of a directory a user may write."""
    notices: list[str] = []

    def why_not(path: str, what: str) -> str | None:
        missing = problem(path)
        if missing is not None:
            return f"{what} {missing}; the job runs without it"
        blocked = blocker(manifest, path)
        return f"{what} is not bound in: {blocked}" if blocked else None

    kept: list[str] = []
    for path in mount_order(binds):
        if any(under(path, outer) for outer in kept):
            continue  # the outer bind shows it
        said = why_not(path, path)
        if said is None:
            kept.append(path)
        else:
            notices.append(said)
    own_home: str | None = None
    home = os.path.normpath(home) if home else None
    system = next((p for p in SYSTEM_MOUNTPOINTS if home and under(home, p)), None)
    # A home under a configured bind is that bind's: shown with it, or said with it.
    if not home or home == "/" or any(under(home, b) for b in binds):
        pass
    elif system is not None:
        notices.append(f"home {home} is not bound in: the job has its own {system}")
    else:
        said = why_not(home, f"home {home}")
        if said is None:
            own_home = home
            kept = [b for b in kept if not under(b, home)]  # the home shows them
        else:
            notices.append(said)
    return BindPlan(tuple(kept), own_home, tuple(printable(n) for n in notices))


def printable(text: str) -> str:
    """``text`` as one line of at most ``wire.MAX_NOTICE`` printable characters
    (a path holding a newline or an escape sequence shows it escaped)."""
    shown = "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)
    return shown if len(shown) <= MAX_NOTICE else shown[: MAX_NOTICE - 3] + "..."
