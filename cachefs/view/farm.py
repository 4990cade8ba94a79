"""The environment root as a hardlink farm, for hosts without FUSE.

:func:`build_farm` lays a :class:`~cachefs.view.tree.Tree` out in a directory:
directories made, symlinks made, files hardlinked to their cache objects.

Why hardlinks cannot hurt the cache: a hardlink *is* the object's inode, so a
job could change the object through it only if it could write that inode.
Objects are mode 0444 and owned by root, so a job (never root) can neither
write nor chmod them; and the farm is then bind-mounted read-only onto itself
(``nosuid,nodev``), so even a write attempt through the farm fails with EROFS,
as on the FUSE view. Unlinking a farm entry only drops a link: the object
stays in the cache.

Two kinds of files are copied instead (root-owned, mode without write or
setuid bits), each listed in the report with why:

- files whose manifest mode has an execute bit: the shared inode keeps the
  object's 0444, and ``execve`` (of the program and of its ``PT_INTERP``) needs
  an x bit even for root. Libraries need none (``mmap`` does not check it), but
  which files get executed is not known, so the rule is the mode.
- files whose object lives on another filesystem than the target (EXDEV), or
  that the kernel refuses to link (EPERM, ``fs.protected_hardlinks`` when not
  root).

Every other file shows the object's mode (0444) and mtime, not the tree's:
setting either on a hardlink would change the shared object. Directories,
symlinks and copies get the tree's mtimes.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cachefs.errors import FarmError
from cachefs.view.tree import DirNode, FileNode, SymlinkNode, Tree

#: Why a file was copied rather than hardlinked.
COPY_EXEC = "executable: a hardlink would keep the object's mode 0444"
COPY_EXDEV = "object on another filesystem (EXDEV)"
COPY_EPERM = "the kernel refused the hardlink (EPERM)"


@dataclass(frozen=True)
class CopiedFile:
    path: str
    reason: str
    size: int


@dataclass(frozen=True)
class FarmReport:
    target: Path
    dirs: int
    symlinks: int
    hardlinked: int
    copied: tuple[CopiedFile, ...] = field(default=())
    #: Whether the farm is bind-mounted read-only onto itself.
    read_only: bool = False

    @property
    def bytes_copied(self) -> int:
        return sum(c.size for c in self.copied)


def _mounts_at_or_under(target: Path) -> list[str]:
    top = str(target)
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        for line in info:
            raw = line.split(" ", 5)[4]
            point = raw.encode().decode("unicode_escape").encode("latin-1").decode()
            if point == top or point.startswith(top.rstrip("/") + "/"):
                found.append(point)
    return found


def _run(target: Path, *argv: str) -> None:
    done = subprocess.run(
        argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False
    )
    if done.returncode != 0:
        raise FarmError(str(target), f"{' '.join(argv)} failed: {done.stdout.strip()}")


def _copy(node: FileNode, dest: Path) -> None:
    shutil.copyfile(node.backing, dest)
    os.chmod(dest, node.mode & 0o555)
    os.utime(dest, ns=(node.mtime_ns, node.mtime_ns))


def build_farm(tree: Tree, target: str | Path, *, read_only: bool = True) -> FarmReport:
    """Build ``tree`` as a directory tree at ``target`` (absent or empty).

    With ``read_only`` (the default; needs CAP_SYS_ADMIN) the farm is then
    bind-mounted read-only onto itself: remove it with :func:`remove_farm`.
    Raises FarmError when ``target`` is not empty or the bind mount fails (the
    farm is removed again), and lets OSError from the filesystem through.
    """
    root = Path(os.path.realpath(target))
    root.mkdir(parents=True, exist_ok=True)
    if any(root.iterdir()):
        raise FarmError(str(root), "the target is not empty; give an empty or new directory")
    dirs: list[DirNode] = []
    symlinks = hardlinked = 0
    copied: list[CopiedFile] = []
    for node in tree:  # parents come before what they hold
        dest = root / node.path.lstrip("/")
        if isinstance(node, DirNode):
            if node.path != "/":
                dest.mkdir(mode=0o700)
            dirs.append(node)
        elif isinstance(node, SymlinkNode):
            os.symlink(node.target, dest)
            os.utime(dest, ns=(node.mtime_ns, node.mtime_ns), follow_symlinks=False)
            symlinks += 1
        elif node.mode & 0o111:
            _copy(node, dest)
            copied.append(CopiedFile(node.path, COPY_EXEC, node.size))
        else:
            try:
                os.link(node.backing, dest)
                hardlinked += 1
            except OSError as exc:
                if exc.errno not in (errno.EXDEV, errno.EPERM):
                    raise
                _copy(node, dest)
                reason = COPY_EXDEV if exc.errno == errno.EXDEV else COPY_EPERM
                copied.append(CopiedFile(node.path, reason, node.size))
    # Modes and times last, deepest first: a 0555 directory could not be filled
    # as non-root, and filling a directory changes its mtime.
    for node in reversed(dirs):
        made = root / node.path.lstrip("/")
        os.chmod(made, node.mode & 0o1777)
        os.utime(made, ns=(node.mtime_ns, node.mtime_ns))
    if read_only:
        try:
            _run(root, "mount", "--bind", str(root), str(root))
            _run(root, "mount", "-o", "remount,bind,ro,nosuid,nodev", str(root))
        except FarmError:
            remove_farm(root)
            raise
    return FarmReport(root, len(dirs), symlinks, hardlinked, tuple(copied), read_only)


def remove_farm(target: str | Path) -> None:
    """Unmount the farm's read-only bind (if any) and delete the farm.

    The cache objects stay (only links go). Raises FarmError, deleting
    nothing, when something else is mounted inside the farm (a job's /proc):
    deleting would descend into it.
    """
    root = Path(os.path.realpath(target))
    if not root.exists():
        return
    if str(root) in _mounts_at_or_under(root):
        _run(root, "umount", str(root))
    left = _mounts_at_or_under(root)
    if left:
        raise FarmError(str(root), f"still mounted inside: {', '.join(left)}; unmount them first")
    # Directories may be 0555: open them up (never following symlinks) first.
    for dirpath, _, _ in os.walk(root):
        os.chmod(dirpath, 0o700)
    shutil.rmtree(root)
