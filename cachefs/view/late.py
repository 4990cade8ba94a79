"""A tree that grows: paths the manifest lacks, asked of the master while the job runs.

:class:`LateTree` wraps an immutable :class:`~cachefs.view.tree.Tree`. A path
the tree holds is answered from it, never asked. A miss asks over a
:class:`LateChannel` (a socket to the node agent, which asks the master in the
job's name and, for a file, fetches, verifies and caches its object before it
answers): the answer becomes a node of the overlay, or is remembered as
absent. What is remembered never changes while the view is mounted, so the
kernel's caches stay right:

- a directory's names, once known (a late directory comes with them; a
  directory of the manifest asks for them at its first ``readdir``): a miss
  of a name not among them is absent at once, without asking;
- absent and denied paths;
- mount points and the paths no late lookup may reach (``closed``) are never
  asked about.

Every channel answer is checked before use (kind, mode, size, sha256, names):
a bad answer is an I/O error, not a node.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cachefs.errors import (
    ViewLateError,
    ViewNotADirectory,
    ViewNotASymlink,
    ViewNotFound,
    ViewPermissionError,
)
from cachefs.manifest import is_sha256
from cachefs.view.tree import DirNode, FileNode, Node, PendingNode, SymlinkNode, Tree

#: What a late tree holds: a tree's nodes, and files whose bytes come at open.
LateNode = Node | PendingNode

#: Largest answer line taken from the agent (a directory of 100,000 names fits).
MAX_ANSWER = 64 << 20


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def _name(path: str) -> str:
    return path.rsplit("/", 1)[1]


class LateChannel:
    """The FUSE server's end of its link to the node agent: one request at a time,
    a JSON line each way, each answer within ``timeout`` seconds."""

    def __init__(self, sock: socket.socket, timeout: float) -> None:
        sock.settimeout(timeout)
        self._sock = sock
        self._reader = sock.makefile("rb")
        self.asked = 0

    def ask(self, op: str, path: str) -> dict[str, Any]:
        """The agent's answer; ViewLateError when it fails, is late or is not JSON."""
        self.asked += 1
        try:
            self._sock.sendall(json.dumps({"op": op, "path": path}).encode() + b"\n")
            line = self._reader.readline(MAX_ANSWER)
        except OSError as exc:  # TimeoutError included
            raise ViewLateError(path, f"the node agent did not answer: {exc}") from exc
        if not line.endswith(b"\n"):
            raise ViewLateError(path, "the node agent closed the link or sent too much")
        try:
            answer = json.loads(line)
        except ValueError as exc:
            raise ViewLateError(path, "the node agent's answer is not JSON") from exc
        if not isinstance(answer, dict):
            raise ViewLateError(path, "the node agent's answer is not an object")
        return answer


def _int(answer: dict[str, Any], key: str, path: str, *, limit: int | None = None) -> int:
    value = answer.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ViewLateError(path, f"bad {key} in the answer: {value!r}")
    if limit is not None and value > limit:
        raise ViewLateError(path, f"bad {key} in the answer: {value!r}")
    return value


def _names(answer: dict[str, Any], path: str) -> frozenset[str]:
    names = answer.get("names")
    if not isinstance(names, list) or not all(
        isinstance(n, str) and n not in ("", ".", "..") and "/" not in n and "\0" not in n
        for n in names
    ):
        raise ViewLateError(path, "bad names in the answer")
    return frozenset(names)


class LateTree:
    """``tree`` plus what ``channel`` answers; the same lookups as a Tree."""

    def __init__(self, tree: Tree, channel: LateChannel, *, closed: Iterable[str] = ()) -> None:
        self._tree = tree
        self._channel = channel
        self._closed = tuple(p.rstrip("/") or "/" for p in (*tree.mountpoints, *closed))
        self._late: dict[str, LateNode] = {}
        #: every name of a directory, when known (tree's and the master's)
        self._names: dict[str, frozenset[str]] = {}
        self._absent: set[str] = set()
        self._denied: set[str] = set()
        self._next_ino = len(tree) + 1

    @property
    def tree(self) -> Tree:
        return self._tree

    @property
    def late_nodes(self) -> int:
        return len(self._late)

    def _is_closed(self, path: str) -> bool:
        return any(path == c or path.startswith(c.rstrip("/") + "/") for c in self._closed)

    def lookup(self, path: str) -> LateNode:
        """The node at ``path``, asking the agent for what the tree lacks.

        Raises ViewNotFound, ViewNotADirectory, ViewPermissionError (the job's
        user may not read it on the master) or ViewLateError (no answer)."""
        node = self._late.get(path)
        if node is not None:
            return node
        if path in self._absent:
            raise ViewNotFound(path)
        if path in self._denied:
            raise ViewPermissionError(path)
        try:
            return self._tree.lookup(path)
        except ViewNotFound:
            if path == "/" or not path.startswith("/"):
                raise
        parent = self.lookup(_parent(path))
        if not isinstance(parent, DirNode):
            raise ViewNotADirectory(path, parent.path)
        known = self._names.get(parent.path)
        if self._is_closed(path) or (known is not None and _name(path) not in known):
            self._absent.add(path)
            raise ViewNotFound(path)
        return self._add(path, self._channel.ask("lookup", path))

    def children(self, path: str) -> tuple[str, ...]:
        """A directory's names, sorted: the tree's and, once asked, the master's."""
        node = self.lookup(path)
        if not isinstance(node, DirNode):
            raise ViewNotADirectory(path, path)
        known = self._names.get(path)
        if known is None:
            own = frozenset(self._tree_children(path))
            if self._is_closed(path):
                known = own
            else:
                answer = self._channel.ask("list", path)
                kind = answer.get("kind")
                if kind == "dir":
                    known = own | _names(answer, path)
                elif kind in ("absent", "denied"):
                    known = own
                else:
                    raise ViewLateError(path, str(answer.get("message", "no listing")))
            self._names[path] = known
        return tuple(sorted(known))

    def materialize(self, path: str) -> FileNode:
        """The file at ``path`` with its bytes: a late file is opened on the
        master (as the job's user: EACCES where it may not read) and fetched,
        verified and cached by the agent now, once."""
        node = self.lookup(path)
        if isinstance(node, FileNode):
            return node
        if not isinstance(node, PendingNode):
            raise ViewLateError(path, "not a file")
        answer = self._channel.ask("open", path)
        kind = answer.get("kind")
        if kind == "denied":
            raise ViewPermissionError(path)
        if kind != "file":
            raise ViewLateError(path, str(answer.get("message", f"answer {kind!r}")))
        mode = _int(answer, "mode", path, limit=0o7777)
        uid = _int(answer, "uid", path) if "uid" in answer else 0
        got = _file_node(path, answer, mode, node.ino, _int(answer, "mtime", path), uid)
        self._late[path] = got
        return got

    def readlink(self, path: str) -> str:
        node = self.lookup(path)
        if not isinstance(node, SymlinkNode):
            raise ViewNotASymlink(path)
        return node.target

    def _tree_children(self, path: str) -> tuple[str, ...]:
        try:
            return self._tree.directory(path).children
        except (ViewNotFound, ViewNotADirectory):
            return ()

    def _add(self, path: str, answer: dict[str, Any]) -> LateNode:
        kind = answer.get("kind")
        if kind == "absent":
            self._absent.add(path)
            raise ViewNotFound(path)
        if kind == "denied":
            self._denied.add(path)
            raise ViewPermissionError(path)
        if kind not in ("dir", "symlink", "file"):
            raise ViewLateError(path, str(answer.get("message", f"answer {kind!r}")))
        mode = _int(answer, "mode", path, limit=0o7777)
        mtime = _int(answer, "mtime", path)
        uid = _int(answer, "uid", path) if "uid" in answer else 0
        ino = self._next_ino
        node: LateNode
        if kind == "dir":
            names = _names(answer, path)
            self._names[path] = names
            node = DirNode(path, mode, ino, tuple(sorted(names)), False, 0, mtime, uid)
        elif kind == "symlink":
            target = answer.get("target")
            if not isinstance(target, str) or not target or "\0" in target:
                raise ViewLateError(path, "bad symlink target in the answer")
            node = SymlinkNode(path, mode, ino, target, mtime, uid)
        elif "sha256" not in answer:  # what it is; its bytes come at open()
            node = PendingNode(path, mode, ino, _int(answer, "size", path), mtime, uid)
        else:
            node = _file_node(path, answer, mode, ino, mtime, uid)
        self._next_ino += 1
        self._late[path] = node
        return node


def _file_node(
    path: str, answer: dict[str, Any], mode: int, ino: int, mtime: int, uid: int
) -> FileNode:
    size = _int(answer, "size", path)
    sha = answer.get("sha256")
    backing = answer.get("backing")
    if not is_sha256(sha) or not isinstance(backing, str) or not backing.startswith("/"):
        raise ViewLateError(path, "bad sha256 or object path in the answer")
    return FileNode(path, mode, ino, size, str(sha), Path(backing), mtime, uid)
