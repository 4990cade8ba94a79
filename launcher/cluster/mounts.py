"""Per-node mounts: the cache tmpfs, the UTS namespace file, and cleanup under a dir.

Each node's hostname lives in a persistent UTS namespace, bind-mounted on
``STATE/cluster/nodeN/uts`` the way ``ip netns`` keeps network namespaces
(``unshare --uts=FILE``). Every process of the node, and every
:func:`launcher.cluster.run_in_node`, enters it with ``nsenter --uts=FILE``, so
they all see the same hostname; the file goes away with the other mounts under
``STATE/cluster``.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

from launcher.errors import ClusterCommandError

MOUNT_ADVICE = "are you root, and is util-linux (mount, umount, unshare) installed?"
CACHE_FS_SOURCE = "beolaunch-cache"

_OCTAL = re.compile(r"\\([0-7]{3})")


def _run(argv: list[str], advice: str = MOUNT_ADVICE) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False)
    except FileNotFoundError as exc:
        raise ClusterCommandError(argv, 127, str(exc), advice) from exc
    if done.returncode != 0:
        raise ClusterCommandError(argv, done.returncode, done.stderr, advice)


def mount_points() -> list[tuple[Path, str]]:
    """Mount points of this mount namespace with their filesystem type, in mount order."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as f:
        for line in f:
            fields = line.split()
            # mountinfo escapes space, tab, newline and backslash as \ooo.
            point = _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), fields[4])
            fstype = fields[fields.index("-") + 1]
            found.append((Path(point), fstype))
    return found


def is_mounted(path: Path, fstype: str | None = None) -> bool:
    real = Path(os.path.realpath(path))
    return any(p == real and (fstype is None or t == fstype) for p, t in mount_points())


def ensure_tmpfs(path: Path, size: str) -> bool:
    """A tmpfs of ``size`` (mount(8) syntax, e.g. 512M) on ``path``; True if mounted now."""
    path.mkdir(parents=True, exist_ok=True)
    if is_mounted(path, "tmpfs"):
        return False
    _run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", CACHE_FS_SOURCE, str(path)])
    return True


def ensure_uts(path: Path, hostname: str) -> bool:
    """A persistent UTS namespace with ``hostname`` bound on ``path``; True if made now."""
    if is_mounted(path, "nsfs"):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()
    _run(["unshare", f"--uts={path}", "hostname", hostname])
    return True


def unmount_under(root: Path) -> list[Path]:
    """Unmount everything mounted at or below ``root``, deepest first; the paths unmounted.

    A busy mount is detached lazily (``umount -l``): the processes holding it
    were stopped before, and what remains must not keep the cluster from going.
    """
    real = Path(os.path.realpath(root))
    done: list[Path] = []
    for _ in range(64):  # stacked mounts on one path need one round each
        below = [p for p, _t in mount_points() if p == real or p.is_relative_to(real)]
        if not below:
            break
        # Deepest first; among equals, the last mounted (on top) first.
        for point in sorted(reversed(below), key=lambda p: len(p.parts), reverse=True):
            try:
                _run(["umount", str(point)])
            except ClusterCommandError:
                _run(["umount", "-l", str(point)])
            done.append(point)
    return done
