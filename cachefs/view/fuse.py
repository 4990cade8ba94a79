"""The environment root as a read-only FUSE filesystem: a thin fusepy adapter.

Everything here is about FUSE: the tree (:mod:`cachefs.view.tree`) decides what
exists, this module turns its answers into stat dicts and errno values, and
serves file bytes with ``pread`` on the object file opened at ``open()``.

The content never changes while mounted, so the kernel may cache everything:
``kernel_cache`` keeps file pages across opens, long ``attr_timeout`` /
``entry_timeout`` / ``negative_timeout`` spare a round trip to this process for
every stat and every failed lookup (the loader and Python probe many paths
that do not exist). Measured on a test machine: without them reads ran at a
fifth of native speed. ``nosuid,nodev``: a user's manifest may carry a setuid
bit; files are shown as root's, so it must never take effect.

Limits of libfuse2 (what fusepy binds), measured on kernel 6.18: warm reads
reach no callback at all, yet run at about 1.2-1.35x the object file's time,
because libfuse2 cannot raise the 128 KiB request size (``max_pages``) that
sizes the view's page-cache folios; and it cannot ask the kernel to cache
symlink targets (``FUSE_CACHE_SYMLINKS``), so every path walk through /lib
is a readlink round trip. libfuse3 (through mfusepy) does both: warm reads
at 1.15x in the same test.

The FUSE loop runs in a child process (``python -m cachefs.view.fuse``) that
gets the tree as JSON on stdin, so the caller (a threaded node agent) never
forks with threads running. Importing this module needs libfuse2 (fusepy
loads it); hosts without FUSE use :mod:`cachefs.view.farm`.
"""

from __future__ import annotations

import errno
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from stat import S_IFDIR, S_IFLNK, S_IFREG
from typing import IO, Any, TypeVar

from fuse import FUSE, FuseOSError, Operations, fuse_get_context

from cachefs.closable import Closable
from cachefs.errors import (
    CachefsError,
    ViewLateError,
    ViewLookupError,
    ViewMountError,
    ViewNotADirectory,
    ViewNotASymlink,
    ViewNotFound,
    ViewPermissionError,
)
from cachefs.manifest import Manifest
from cachefs.view.late import LateChannel, LateTree
from cachefs.view.tree import DirNode, FileNode, Node, PendingNode, SymlinkNode, Tree

#: The content is immutable while mounted: let the kernel cache for an hour.
CACHE_SECONDS = 3600
#: libfuse2 negotiates at most 128 KiB per read request.
MAX_READ = 128 * 1024
FSNAME = "beolaunch-view"
MOUNT_TIMEOUT = 10.0
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_TRUNC

F = TypeVar("F", bound=Callable[..., Any])


def override(method: F) -> F:
    """Mark a FUSE callback; a name fusepy's Operations lacks fails at import
    (fusepy would silently never call it), as ratarmount's ``overrides`` does."""
    if not hasattr(Operations, method.__name__):
        raise TypeError(f"{method.__name__} is not a fusepy Operations callback")
    return method


def _unserved(name: str) -> object:
    """A callback left out on purpose: libfuse then answers ENOSYS (or, for
    opendir/releasedir, succeeds by itself) and the kernel stops sending that
    request (no_flush, no_getxattr), sparing a round trip into Python on every
    close() and every execve() (which asks for security.capability)."""
    if not hasattr(Operations, name):
        raise TypeError(f"{name} is not a fusepy Operations callback")
    return None  # fusepy registers only callbacks that are not None


def _errno(exc: ViewLookupError) -> FuseOSError:
    if isinstance(exc, ViewNotFound):
        return FuseOSError(errno.ENOENT)
    if isinstance(exc, ViewPermissionError):
        return FuseOSError(errno.EACCES)
    if isinstance(exc, ViewLateError):
        print(f"cachefs.view.fuse: late lookup of {exc.path}: {exc.problem}", file=sys.stderr)
        return FuseOSError(errno.EIO)
    if isinstance(exc, ViewNotADirectory):
        return FuseOSError(errno.ENOTDIR)
    if isinstance(exc, ViewNotASymlink):
        return FuseOSError(errno.EINVAL)
    return FuseOSError(errno.EIO)


def _stat(node: Node | PendingNode) -> dict[str, int]:
    common = {
        "st_ino": node.ino,
        "st_uid": node.uid,  # the job's user for its own files (manifest entry uid)
        "st_gid": 0,
        "st_atime": node.mtime_ns,
        "st_mtime": node.mtime_ns,
        "st_ctime": node.mtime_ns,
    }
    if isinstance(node, DirNode):
        return common | {"st_mode": S_IFDIR | node.mode, "st_nlink": 2 + node.subdirs}
    if isinstance(node, SymlinkNode):
        size = len(node.target.encode())
        return common | {"st_mode": S_IFLNK | node.mode, "st_nlink": 1, "st_size": size}
    return common | {
        "st_mode": S_IFREG | node.mode,
        "st_nlink": 1,
        "st_size": node.size,
        "st_blocks": (node.size + 511) // 512,
        "st_blksize": MAX_READ,
    }


class ViewOperations(Operations):  # type: ignore[misc]  # fusepy is untyped
    """Read-only callbacks over a :class:`Tree`; file handles are object fds."""

    use_ns = True  # times in the stat dicts are integer nanoseconds

    flush = _unserved("flush")
    fsync = _unserved("fsync")
    fsyncdir = _unserved("fsyncdir")
    getxattr = _unserved("getxattr")
    ioctl = _unserved("ioctl")  # Python's open() asks isatty: ENOSYS -> ENOTTY, once
    listxattr = _unserved("listxattr")
    opendir = _unserved("opendir")
    releasedir = _unserved("releasedir")

    def __init__(self, tree: Tree, late: LateTree | None = None) -> None:
        #: what lookups go to: the tree, or the tree and what the master adds late
        self._tree: Tree | LateTree = late if late is not None else tree
        # The tree's nodes never change, so their stat dicts are made once (late
        # nodes' when they come).
        self._stats = {node.path: _stat(node) for node in tree}
        self._statfs = {
            "f_bsize": 4096,
            "f_frsize": 4096,
            "f_blocks": math.ceil(tree.total_size() / 4096),
            "f_bfree": 0,
            "f_bavail": 0,
            "f_files": len(tree),
            "f_ffree": 0,
            "f_favail": 0,
            "f_namemax": 255,
        }

    def _lookup(self, path: str) -> Node | PendingNode:
        try:
            return self._tree.lookup(path)
        except ViewLookupError as exc:
            raise _errno(exc) from exc

    @override
    def getattr(self, path: str, fh: int | None = None) -> dict[str, int]:
        stat = self._stats.get(path)
        if stat is None:
            stat = self._stats[path] = _stat(self._lookup(path))  # or the right errno
        return stat

    @override
    def readdir(self, path: str, fh: int) -> list[str]:
        try:
            return [".", "..", *self._tree.children(path)]
        except ViewLookupError as exc:
            raise _errno(exc) from exc

    @override
    def readlink(self, path: str) -> str:
        try:
            return self._tree.readlink(path)
        except ViewLookupError as exc:
            raise _errno(exc) from exc

    @override
    def access(self, path: str, amode: int) -> int:
        node = self._lookup(path)
        if amode & os.W_OK:
            raise FuseOSError(errno.EROFS)
        uid, gid, _ = fuse_get_context()
        if uid == 0:
            # root may read anything, and execute what has any x bit.
            if (
                amode & os.X_OK
                and isinstance(node, FileNode | PendingNode)
                and not node.mode & 0o111
            ):
                raise FuseOSError(errno.EACCES)
            return 0
        # owner bits for its owner, else group bits for gid 0 (the group is root's)
        shift = 6 if uid == node.uid else 3 if gid == 0 else 0
        if (amode & 0o7) & ~(node.mode >> shift) & 0o7:
            raise FuseOSError(errno.EACCES)
        return 0

    @override
    def open(self, path: str, flags: int) -> int:
        if flags & _WRITE_FLAGS:
            raise FuseOSError(errno.EROFS)
        node = self._lookup(path)
        if isinstance(node, PendingNode) and isinstance(self._tree, LateTree):
            try:
                node = self._tree.materialize(path)
            except ViewLookupError as exc:
                raise _errno(exc) from exc
            self._stats[path] = _stat(node)
        if not isinstance(node, FileNode):
            raise FuseOSError(errno.EISDIR if isinstance(node, DirNode) else errno.ELOOP)
        try:
            return os.open(node.backing, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError as exc:
            # The path exists; its object vanished from the cache: an I/O
            # error, not ENOENT (the cache pins a job's objects).
            raise FuseOSError(errno.EIO) from exc

    @override
    def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
        return os.pread(fh, size, offset)

    @override
    def release(self, path: str, fh: int) -> int:
        os.close(fh)
        return 0

    @override
    def statfs(self, path: str) -> dict[str, int]:
        return self._statfs

    # Every call that would change something: the view is read-only.

    @override
    def chmod(self, path: str, mode: int) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def chown(self, path: str, uid: int, gid: int) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def create(self, path: str, mode: int, fi: object = None) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def link(self, target: str, source: str) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def mkdir(self, path: str, mode: int) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def mknod(self, path: str, mode: int, dev: int) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def rename(self, old: str, new: str) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def rmdir(self, path: str) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def symlink(self, target: str, source: str) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def truncate(self, path: str, length: int, fh: int | None = None) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def unlink(self, path: str) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def setxattr(self, path: str, name: str, value: bytes, options: int, position: int = 0) -> int:
        raise FuseOSError(errno.EROFS)

    @override
    def removexattr(self, path: str, name: str) -> int:
        raise FuseOSError(errno.EROFS)


def mount_options(tree: Tree) -> dict[str, object]:
    """The options :func:`serve` passes to libfuse (see the module docstring)."""
    return {
        "ro": True,
        "nosuid": True,
        "nodev": True,
        "kernel_cache": True,
        "attr_timeout": CACHE_SECONDS,
        "entry_timeout": CACHE_SECONDS,
        "negative_timeout": CACHE_SECONDS,
        "allow_other": True,  # jobs run as other users than the node agent
        "default_permissions": True,  # the kernel checks modes, not us
        "use_ino": True,
        "max_read": MAX_READ,
        "fsname": f"{FSNAME}:{tree.manifest.id[:16]}",
        "subtype": FSNAME,
    }


def serve(tree: Tree, mountpoint: str, late: LateTree | None = None) -> None:
    """Mount ``tree`` at ``mountpoint`` and serve it in this process until unmounted
    (with ``late``: what it lacks is asked of the node agent, :mod:`cachefs.view.late`).

    Blocks. Raises ViewMountError when libfuse fails (as fusepy's RuntimeError).
    """
    try:
        # Single-threaded: the GIL serialises the callbacks anyway, and each one
        # made from a libfuse worker thread sets up a fresh Python thread state
        # (ctypes). Warm reads never reach us (kernel_cache); measured: python3
        # startup in the view 23.8 -> 22.6 ms.
        FUSE(
            ViewOperations(tree, late),
            mountpoint,
            foreground=True,
            nothreads=True,
            **mount_options(tree),
        )
    except RuntimeError as exc:
        raise ViewMountError(mountpoint, f"libfuse failed ({exc})") from exc


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo.
    return field.encode().decode("unicode_escape").encode("latin-1").decode()


def is_mounted(mountpoint: str | Path) -> bool:
    """Whether something is mounted exactly at ``mountpoint`` (per this process)."""
    want = os.path.realpath(mountpoint)
    with open("/proc/self/mountinfo", encoding="utf-8") as info:
        return any(_unescape(line.split(" ", 5)[4]) == want for line in info)


class MountHandle(Closable):
    """A mounted view and its server process; unmount it (or use ``with``)."""

    def __init__(
        self, mountpoint: str, process: subprocess.Popen[bytes], log: IO[bytes] | None
    ) -> None:
        self.mountpoint = mountpoint
        self.process = process
        self._log = log
        self._unmounted = False

    def log(self) -> str:
        """What the server wrote to stderr so far ('' when it went to ours)."""
        if self._log is None or self._log.closed:
            return ""
        self._log.seek(0)
        return self._log.read().decode(errors="replace")

    def unmount(self, *, timeout: float = MOUNT_TIMEOUT) -> None:
        """Unmount and reap the server. A busy mount is detached lazily (it
        goes once its last user does) and ViewMountError is raised. A second
        call does nothing."""
        if self._unmounted:
            return
        self._unmounted = True
        problem = None
        if is_mounted(self.mountpoint):
            done = _run_unmount(self.mountpoint, lazy=False)
            if done.returncode != 0:
                problem = f"unmount failed, detached lazily: {done.stdout.strip()}"
                _run_unmount(self.mountpoint, lazy=True)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            problem = problem or "the server did not exit after unmount; killed"
        detail = self.log()
        if self._log is not None:
            self._log.close()
        if problem:
            raise ViewMountError(self.mountpoint, problem, detail)

    def close(self) -> None:
        """As :meth:`unmount` (``with`` calls it)."""
        self.unmount()


def _run_unmount(mountpoint: str, *, lazy: bool) -> subprocess.CompletedProcess[str]:
    flags = "-uz" if lazy else "-u"
    return subprocess.run(
        ["fusermount", flags, mountpoint],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )


@dataclass(frozen=True)
class LateLink:
    """The server's end of its link to the node agent (a connected stream socket,
    inherited by the server), how long an answer may take, and the paths never
    asked about (:mod:`cachefs.view.late`)."""

    sock: socket.socket
    timeout: float
    closed: tuple[str, ...] = ()


def _document(tree: Tree, late: LateLink | None = None) -> dict[str, Any]:
    backing = {n.sha256: str(n.backing) for n in tree if isinstance(n, FileNode)}
    doc: dict[str, Any] = {
        "manifest": tree.manifest.document(),
        "objects": backing,
        "mtime_ns": tree.mtime_ns,
        "mtimes": dict(tree.mtimes),
        "mountpoints": list(tree.mountpoints),
    }
    if late is not None:
        doc["late"] = {
            "fd": late.sock.fileno(),
            "timeout": late.timeout,
            "closed": list(late.closed),
        }
    return doc


def _late_tree(tree: Tree, doc: dict[str, Any]) -> LateTree | None:
    late = doc.get("late")
    if late is None:
        return None
    sock = socket.socket(fileno=int(late["fd"]))
    channel = LateChannel(sock, float(late["timeout"]))
    return LateTree(tree, channel, closed=[str(p) for p in late["closed"]])


def _tree(doc: dict[str, Any]) -> Tree:
    objects: dict[str, str] = doc["objects"]
    manifest = Manifest.from_document(doc["manifest"])
    return Tree.from_manifest(
        manifest,
        lambda sha: Path(objects[sha]),
        mtime_ns=doc["mtime_ns"],
        mtimes=doc["mtimes"],
        mountpoints=doc["mountpoints"],
    )


def mount(
    tree: Tree,
    mountpoint: str | Path,
    *,
    foreground: bool = False,
    timeout: float = MOUNT_TIMEOUT,
    late: LateLink | None = None,
) -> MountHandle:
    """Mount ``tree`` read-only at ``mountpoint`` (an existing directory) and
    return once the kernel shows the mount.

    The server is a child process either way; ``foreground=True`` leaves its
    stderr on ours (to watch it) instead of a log kept for error messages.
    Raises ViewMountError when something is already mounted there, or the
    server exits or is not mounted within ``timeout`` seconds (it is then
    killed and any half mount detached). With ``late``, its socket is the
    server's link to the node agent for what the tree lacks.
    """
    where = os.path.realpath(mountpoint)
    if is_mounted(where):
        raise ViewMountError(where, "something is already mounted there; unmount it first")
    # The handle owns the log and closes it at unmount.
    log = None if foreground else tempfile.TemporaryFile(prefix="beolaunch-view-")  # noqa: SIM115
    env = dict(os.environ)
    package_parent = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [package_parent, env.get("PYTHONPATH")]))
    process = subprocess.Popen(
        [sys.executable, "-m", "cachefs.view.fuse", where],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
        pass_fds=(late.sock.fileno(),) if late is not None else (),
    )
    handle = MountHandle(where, process, log)
    assert process.stdin is not None
    with process.stdin as stdin:
        stdin.write(json.dumps(_document(tree, late)).encode())
    deadline = time.monotonic() + timeout
    while not is_mounted(where):
        if process.poll() is not None:
            raise ViewMountError(where, f"the server exited ({process.returncode})", handle.log())
        if time.monotonic() > deadline:
            process.kill()
            process.wait()
            _run_unmount(where, lazy=True)
            raise ViewMountError(where, f"not mounted after {timeout} s", handle.log())
        time.sleep(0.005)
    return handle


def main(argv: list[str] | None = None) -> int:
    """``python -m cachefs.view.fuse MOUNTPOINT`` with the tree as JSON on stdin."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cachefs.view.fuse MOUNTPOINT < tree.json", file=sys.stderr)
        return 2
    try:
        doc = json.load(sys.stdin)
        tree = _tree(doc)
        serve(tree, args[0], _late_tree(tree, doc))
    except (CachefsError, KeyError, ValueError, OSError) as exc:
        print(f"cachefs.view.fuse: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
