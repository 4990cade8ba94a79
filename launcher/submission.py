"""Storing a submission's files: only what the submitting user can read, exactly as hashed.

``beosub`` resolves and hashes the closure as the user (``snapshot`` without a
store) and sends the manifest. The master, as root, then copies each file the
store lacks, opened by :mod:`launcher.opener` running as the user, so the
kernel decides access; and checks each copy against the digest the user's
manifest names, so a file changed since ``beosub`` hashed it is refused
(resubmit), never stored under the wrong version.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cachefs.errors import DigestMismatchError, IngestError, SourceChangedError
from cachefs.manifest import Manifest
from cachefs.store import Store
from launcher.errors import BeolaunchError


class SubmissionError(BeolaunchError):
    """A submitted file cannot be stored as the manifest says."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Ingested:
    objects_new: int
    bytes_new: int


def open_as(
    uid: int, gid: int, groups: Sequence[int], paths: Sequence[str], *, append: bool = False
) -> dict[str, int | str]:
    """Open ``paths`` as uid/gid/groups: path -> fd (the caller closes it), or -> errno
    name (``SYMLINK``: the path is a symbolic link, which is never followed).

    Read-only by default; ``append`` opens for writing, creating a missing file as
    the user (see :mod:`launcher.opener`). Blocks while the helper runs.
    """
    # One record per reply (launcher.opener): a stream merged consecutive errors.
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    paths = list(dict.fromkeys(paths))  # a path twice would leak its first fd
    result: dict[str, int | str] = {}
    try:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "launcher.opener",
                str(child.fileno()),
                *(["append"] if append else []),
            ],
            stdin=subprocess.PIPE,
            pass_fds=(child.fileno(),),
            user=uid,
            group=gid,
            extra_groups=list(groups),
        )
        child.close()
        assert proc.stdin is not None
        proc.stdin.write("".join(f"{p}\n" for p in paths).encode())
        proc.stdin.close()
        for path in paths:
            msg, fds, flags, _addr = socket.recv_fds(parent, 64, 1)
            if fds:
                result[path] = fds[0]
            elif flags & socket.MSG_CTRUNC:  # the fd was dropped: we are out of descriptors
                result[path] = "EMFILE"
            else:
                words = msg.decode(errors="replace").split()
                result[path] = words[1] if len(words) == 2 and words[0] == "err" else "EIO"
        proc.wait()
    except BaseException:
        for value in result.values():
            if isinstance(value, int):
                os.close(value)
        raise
    finally:
        parent.close()
        child.close()
    return result


@contextmanager
def opened_as(
    uid: int, gid: int, groups: Sequence[int], paths: Sequence[str]
) -> Iterator[dict[str, int | str]]:
    """Open ``paths`` read-only as uid/gid/groups; yield path -> fd, or path -> errno name."""
    result = open_as(uid, gid, groups, paths)
    try:
        yield result
    finally:
        for value in result.values():
            if isinstance(value, int):
                os.close(value)


def _unopened(code: str, uid: int) -> str:
    if code == "SYMLINK":
        return "is a symbolic link now, not the file the manifest names; submit again"
    number = getattr(errno, code, None)
    reason = os.strerror(number) if isinstance(number, int) else code
    return f"cannot be opened by uid {uid}: {reason} ({code})"


def ingest_submission(
    store: Store, manifest: Manifest, uid: int, gid: int, groups: Sequence[int]
) -> Ingested:
    """Copy into ``store`` every file of ``manifest`` it lacks, read as the user.

    Raises SubmissionError naming the first path the user cannot read, that
    vanished, or whose content is not the manifest's digest any more.
    """
    wanted = {
        e.path: e for e in manifest if e.kind == "file" and e.sha256 and not store.has(e.sha256)
    }
    paths = list(wanted)
    new = size = 0
    if not paths:
        return Ingested(0, 0)
    with opened_as(uid, gid, groups, paths) as fds:
        for path in paths:
            fd = fds[path]
            if isinstance(fd, str):
                raise SubmissionError(path, _unopened(fd, uid))
            entry = wanted[path]
            try:
                # The magic link reopens the very file the user opened.
                read = store.ingest_file(Path(f"/proc/self/fd/{fd}"), expect_sha256=entry.sha256)
            except DigestMismatchError as exc:
                raise SubmissionError(path, "changed since it was hashed; submit again") from exc
            except (IngestError, SourceChangedError) as exc:
                raise SubmissionError(path, str(exc)) from exc
            new += 1
            size += read.size
    return Ingested(new, size)
