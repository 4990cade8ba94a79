"""The environment root as an immutable tree: the FUSE-free core of the view.

A :class:`Tree` holds every path of a manifest plus the parent directories the
manifest leaves out (synthesized, mode 0o755), each as a typed node. Lookups
never follow symlinks: the view presents them and the kernel resolves them
inside the job's chroot. Errors are the ``ViewLookupError`` subclasses of
:mod:`cachefs.errors`; only the FUSE adapter turns them into errno values.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cachefs.errors import (
    ViewNotADirectory,
    ViewNotASymlink,
    ViewNotFound,
    ViewTreeError,
)
from cachefs.manifest import Manifest, check_path

#: Mode of a directory the manifest does not list but one of its paths needs.
SYNTHESIZED_DIR_MODE = 0o755


@dataclass(frozen=True, slots=True)
class DirNode:
    path: str
    mode: int
    ino: int
    #: Entry names, sorted (bytewise order of the UTF-8 names, as the manifest).
    children: tuple[str, ...]
    #: True when the manifest does not list this directory.
    synthesized: bool
    #: Number of child directories (for st_nlink = 2 + subdirs).
    subdirs: int
    mtime_ns: int = 0
    #: the owner shown (the job's user for its own files; root's otherwise)
    uid: int = 0


@dataclass(frozen=True, slots=True)
class SymlinkNode:
    path: str
    mode: int
    ino: int
    target: str
    mtime_ns: int = 0
    uid: int = 0


@dataclass(frozen=True, slots=True)
class FileNode:
    path: str
    mode: int
    ino: int
    size: int
    sha256: str
    #: The verified object file in the node cache holding this file's bytes.
    backing: Path
    mtime_ns: int = 0
    uid: int = 0


@dataclass(frozen=True, slots=True)
class PendingNode:
    """A file fetched late whose bytes are not here yet (:mod:`cachefs.view.late`):
    its size and mode as the master said; opening it fetches it."""

    path: str
    mode: int
    ino: int
    size: int
    mtime_ns: int = 0
    uid: int = 0


Node = DirNode | SymlinkNode | FileNode


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _name(path: str) -> str:
    return path.rsplit("/", 1)[1]


class Tree:
    """An immutable environment root. Build with :meth:`from_manifest`."""

    def __init__(
        self,
        manifest: Manifest,
        nodes: dict[str, Node],
        mtime_ns: int,
        mtimes: Mapping[str, int],
        mountpoints: tuple[str, ...],
    ) -> None:
        self._manifest = manifest
        self._nodes = nodes
        self._mtime_ns = mtime_ns
        self._mtimes = mtimes
        self._mountpoints = mountpoints

    @classmethod
    def from_manifest(
        cls,
        manifest: Manifest,
        object_path: Callable[[str], Path],
        *,
        mtime_ns: int = 0,
        mtimes: Mapping[str, int] | None = None,
        mountpoints: Iterable[str] = (),
    ) -> Tree:
        """Present ``manifest``; ``object_path(sha256)`` gives each file's object.

        ``object_path`` is called once per file, now: an error it raises (an
        object missing from the cache) comes out of here. Each node shows the
        mtime its manifest entry records (snapshots record files' mtimes:
        Python trusts a ``.pyc`` only if its source's mtime is the one compiled
        into it); ``mtime_ns`` is shown where the entry has none, and
        ``mtimes`` (path -> ns) overrides both.
        ``mountpoints`` are directories shown even if the manifest lacks them,
        for the launcher to mount /proc, /dev... on (glibc finds ``$ORIGIN``
        through /proc/self/exe). Raises ViewTreeError when an entry lies under
        a symlink (the kernel would follow the link, so the entry could never
        be reached), '/' or a mount point is not a directory.
        """
        kinds: dict[str, str] = {"/": "dir"}
        children: dict[str, set[str]] = {"/": set()}
        paths = [e.path for e in manifest]
        mountpoints = tuple(mountpoints)
        for point in mountpoints:
            listed = manifest.get(check_path(point))
            if listed is not None and listed.kind != "dir":
                raise ViewTreeError(
                    point, f"a mount point must be a directory, not a {listed.kind}"
                )
            if listed is None and point != "/":
                kinds[point] = "dir"
                children.setdefault(point, set())
                paths.append(point)
        for entry in manifest:
            if entry.path == "/":
                if entry.kind != "dir":
                    raise ViewTreeError("/", f"the root must be a directory, not a {entry.kind}")
                continue
            kinds[entry.path] = entry.kind
            if entry.kind == "dir":
                children.setdefault(entry.path, set())
        # Synthesize the missing parents and check no entry hangs under a
        # symlink or file (the manifest refuses only a file under a file).
        for start in paths:
            path = start
            while path != "/":
                parent = _parent(path)
                kind = kinds.setdefault(parent, "dir")
                if kind != "dir":
                    raise ViewTreeError(start, f"its parent {parent} is a {kind}")
                known = children.setdefault(parent, set())
                if path in known:
                    break
                known.add(path)
                path = parent

        mtimes = dict(mtimes or {})
        nodes: dict[str, Node] = {}
        for ino, path in enumerate(sorted(kinds), start=1):
            listed = manifest.get(path)
            recorded = listed.mtime if listed is not None else None
            mtime = mtimes.get(path, mtime_ns if recorded is None else recorded)
            uid = (listed.uid or 0) if listed is not None else 0
            if kinds[path] == "dir":
                names = sorted(_name(c) for c in children[path])
                subdirs = sum(1 for c in children[path] if kinds[c] == "dir")
                mode = listed.mode if listed is not None else SYNTHESIZED_DIR_MODE
                nodes[path] = DirNode(
                    path, mode, ino, tuple(names), listed is None, subdirs, mtime, uid
                )
            elif listed is not None and listed.kind == "symlink" and listed.target is not None:
                nodes[path] = SymlinkNode(path, listed.mode, ino, listed.target, mtime, uid)
            elif listed is not None and listed.sha256 is not None and listed.size is not None:
                backing = object_path(listed.sha256)
                nodes[path] = FileNode(
                    path, listed.mode, ino, listed.size, listed.sha256, backing, mtime, uid
                )
        return cls(manifest, nodes, mtime_ns, mtimes, mountpoints)

    @property
    def manifest(self) -> Manifest:
        return self._manifest

    @property
    def mtime_ns(self) -> int:
        return self._mtime_ns

    @property
    def mtimes(self) -> Mapping[str, int]:
        return self._mtimes

    @property
    def mountpoints(self) -> tuple[str, ...]:
        return self._mountpoints

    def __len__(self) -> int:
        return len(self._nodes)

    def __iter__(self) -> Iterator[Node]:
        """Every node, '/' first, each directory before what it holds."""
        return iter(self._nodes.values())

    def total_size(self) -> int:
        """Bytes of all file nodes (a file twice in the tree counts twice)."""
        return sum(n.size for n in self._nodes.values() if isinstance(n, FileNode))

    def lookup(self, path: str) -> Node:
        """The node at ``path`` (absolute, normalised), never following symlinks.

        Raises ViewNotFound, or ViewNotADirectory when a component before the
        last is a file or symlink.
        """
        node = self._nodes.get(path)
        if node is not None:
            return node
        # A miss: tell "no such entry" from "walked through a non-directory".
        ancestor = _parent(path) if path.startswith("/") and path != "/" else None
        while ancestor is not None:
            found = self._nodes.get(ancestor)
            if found is not None:
                if isinstance(found, DirNode):
                    break
                raise ViewNotADirectory(path, ancestor)
            ancestor = None if ancestor == "/" else _parent(ancestor)
        raise ViewNotFound(path)

    def directory(self, path: str) -> DirNode:
        """The directory at ``path``; ViewNotADirectory if it is something else."""
        node = self.lookup(path)
        if not isinstance(node, DirNode):
            raise ViewNotADirectory(path, path)
        return node

    def children(self, path: str) -> tuple[str, ...]:
        """The names in the directory at ``path``, sorted."""
        return self.directory(path).children

    def readlink(self, path: str) -> str:
        """The target of the symlink at ``path``, as the manifest holds it."""
        node = self.lookup(path)
        if not isinstance(node, SymlinkNode):
            raise ViewNotASymlink(path)
        return node.target
