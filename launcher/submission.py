"""Storing a submission's files: only what the submitting user can read, exactly as hashed.

``beosub`` resolves and hashes the closure as the user (``snapshot`` without a
store) and sends the manifest. The master, as root, then copies each file the
store lacks, opened by :mod:`launcher.opener` running as the user, so the
kernel decides access; and checks each copy against the digest the user's
manifest names, so a file changed since ``beosub`` hashed it is refused
(resubmit), never stored under the wrong version.
"""

from __future__ import annotations

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
    """Open ``paths`` as uid/gid/groups: path -> fd (the caller closes it), or -> errno name.

    Read-only by default; ``append`` opens for writing, creating a missing file as
    the user (see :mod:`launcher.opener`). Blocks while the helper runs.
    """
    parent, child = socket.socketpair()
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
            msg, fds, _flags, _addr = socket.recv_fds(parent, 64, 1)
            if fds:
                result[path] = fds[0]
            else:
                result[path] = msg.decode().split()[-1] if msg else "EIO"
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
                raise SubmissionError(path, f"cannot be opened by uid {uid} ({fd})")
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
