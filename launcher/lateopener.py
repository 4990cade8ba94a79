"""``python -m launcher.lateopener FD``: look up paths on the master as a job's user.

When a job looks up a path its manifest does not hold, the master answers from
its own filesystem, as the job's user (docs/execution.md, "Late files"). The
master runs as root, so it starts this helper with the user's uid, gid and
groups, once per job, and asks it one request at a time: a JSON line on stdin,
``{"op": "lookup"|"list", "path": P}``; one JSON line back on stdout. The
kernel decides every access exactly as for the user's own process:

- every directory on the way is opened ``O_NOFOLLOW|O_DIRECTORY`` from ``/``:
  a symbolic link on the way is answered ``absent`` (the node shows that
  component as the link it is and the kernel there follows it, inside the
  job's root);
- ``lookup`` answers ``{"kind": "dir", "mode", "mtime", "names"}``, ``{"kind":
  "symlink", "mode", "mtime", "target"}``, ``{"kind": "file", "mode", "mtime",
  "size"}``, ``{"kind": "absent"}`` or ``{"kind": "denied", "errno"}``;
- ``open`` of a regular file opens it ``O_RDONLY|O_NOFOLLOW|O_NONBLOCK`` and
  sends its descriptor on the socket FD (SCM_RIGHTS) for the master to hash
  (the master never opens the path itself), or answers ``denied``: a job
  may see that a file exists where its user may list, and gets its bytes
  only where its user may read;
- ``list`` answers ``{"kind": "dir", "names"}`` (sorted) or as above;
- anything but a directory, a regular file or a symlink (a FIFO, a socket, a
  device) is ``absent``: only those three exist in a job's root;
- ``stable``: only root may change the directory the answer is about (a
  directory's own names, or the parent of the name looked up): the node may
  reuse it for the same user's next jobs for a minute
  (:data:`launcher.node.roots.late.SHARED_ANSWER_S`). A directory the user (or
  anyone but root) can write is never reused: a file made there just before
  a submission must be seen by it.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import sys
from typing import Any

#: Names answered for one directory; a larger one is cut (and says so).
MAX_NAMES = 100_000
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _walk(path: str) -> tuple[int, str] | dict[str, Any]:
    """An fd of ``path``'s parent and the last name, or the answer when the walk fails."""
    if not path.startswith("/") or "\0" in path:
        return {"kind": "absent"}
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return {"kind": "absent"}
    fd = os.open("/", _DIR_FLAGS)
    try:
        for part in parts[:-1]:
            nxt = os.open(part, _DIR_FLAGS, dir_fd=fd)
            os.close(fd)
            fd = nxt
    except OSError as exc:
        os.close(fd)
        return _failed(exc)
    return fd, parts[-1] if parts else "."


def _stable(fd: int) -> bool:
    """Whether only root may change the directory ``fd`` (root's, not group- or
    world-writable): the node may reuse what it says for the user's next jobs."""
    st = os.fstat(fd)
    return st.st_uid == 0 and not st.st_mode & 0o022


def _failed(exc: OSError) -> dict[str, Any]:
    if exc.errno in (errno.EACCES, errno.EPERM):
        return {"kind": "denied", "errno": errno.errorcode[exc.errno]}
    # ENOENT, ENOTDIR, ELOOP (a symlink on the way): nothing there for the node
    return {"kind": "absent"}


def _names(fd: int) -> list[str]:
    with os.scandir(fd) as listing:
        return sorted(e.name for e in listing)[:MAX_NAMES]


def lookup(path: str, sock: socket.socket, op: str = "lookup") -> dict[str, Any]:
    """The answer for ``op`` ("lookup", "list" or "open") of ``path``."""
    names_only = op == "list"
    walked = _walk(path)
    if isinstance(walked, dict):
        return walked
    parent, name = walked
    try:
        stable = _stable(parent)
        if name == ".":  # "/" itself
            names = _names(parent)
            return {"kind": "dir", "mode": 0o755, "mtime": 0, "names": names, "stable": stable}
        try:
            st = os.lstat(name, dir_fd=parent)
        except OSError as exc:
            return {**_failed(exc), "stable": stable}
        common = {"mode": stat.S_IMODE(st.st_mode), "mtime": st.st_mtime_ns, "owner": st.st_uid}
        if stat.S_ISDIR(st.st_mode):
            fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
            try:
                return {"kind": "dir", **common, "names": _names(fd), "stable": _stable(fd)}
            finally:
                os.close(fd)
        if names_only or (not stat.S_ISLNK(st.st_mode) and not stat.S_ISREG(st.st_mode)):
            return {"kind": "absent", "stable": stable}
        if stat.S_ISLNK(st.st_mode):
            target = os.readlink(name, dir_fd=parent)
            return {"kind": "symlink", **common, "target": target, "stable": stable}
        if op != "open":  # what it is, not yet its bytes: ls -l hashes nothing
            return {"kind": "file", **common, "size": st.st_size, "stable": stable}
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(name, flags, dir_fd=parent)
        try:
            opened = os.fstat(fd)
            if not stat.S_ISREG(opened.st_mode):  # swapped since the lstat
                return {"kind": "absent"}
            socket.send_fds(sock, [b"fd"], [fd])
        finally:
            os.close(fd)
        return {
            "kind": "file",
            "mode": stat.S_IMODE(opened.st_mode),
            "mtime": opened.st_mtime_ns,
            "owner": opened.st_uid,
            "size": opened.st_size,
        }
    except OSError as exc:
        return _failed(exc)
    finally:
        os.close(parent)


def main() -> int:
    sock = socket.socket(fileno=int(sys.argv[1]))
    for line in sys.stdin:
        try:
            request = json.loads(line)
            op, path = request["op"], request["path"]
            if op not in ("lookup", "list", "open") or not isinstance(path, str):
                raise ValueError(op)
            answer = lookup(path, sock, op)
        except (ValueError, KeyError, TypeError):
            answer = {"kind": "error", "message": "bad request"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
