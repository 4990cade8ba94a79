"""Storing a submission's files: only what the submitting user can read, exactly as hashed.

``beosub`` resolves and hashes the closure as the user (``snapshot`` without a
store) and sends the manifest. The master, as root, then opens every file
entry through :mod:`launcher.opener` running as the user, so the kernel
decides access, whether or not the store already holds the content: a user
obtains an object's bytes only by showing read access, now, to a file with
that content. Each opened file is checked against the digest the manifest
names (hashed, unless :mod:`launcher.readproof` saw the same file unchanged),
so a file changed since ``beosub`` hashed it is refused (resubmit), never
stored under the wrong version; missing objects are copied into the store.
"""

from __future__ import annotations

import errno
import os
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cachefs.errors import DigestMismatchError, IngestError, SourceChangedError
from cachefs.manifest import Manifest
from cachefs.store import Store, hash_file
from launcher.errors import SubmissionError
from launcher.readproof import SeenFiles


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


#: Paths opened by one run of the opener helper: each is an open fd in the master
#: until it is checked, so a closure of thousands of files is taken in batches.
OPEN_BATCH = 512


def ingest_submission(
    store: Store,
    manifest: Manifest,
    uid: int,
    gid: int,
    groups: Sequence[int],
    seen: SeenFiles | None = None,
) -> Ingested:
    """Check that the user can read, now, a file with each file entry's content,
    and copy into ``store`` the objects it lacks.

    Every file entry is opened by the opener helper running as the user (the
    kernel decides access); the opened file must be a regular file of the
    entry's size holding the entry's sha256. ``seen`` (:mod:`launcher.readproof`)
    spares the hash of a file whose fstat is unchanged since the master last
    hashed it. Naming a digest the store holds proves nothing: the check is the
    same whether or not the store has the object.

    Raises SubmissionError naming the first path the user cannot open, that is
    not a regular file, vanished, or whose content is not the manifest's digest.
    """
    wanted = {e.path: e for e in manifest if e.kind == "file" and e.sha256}
    paths = list(wanted)
    new = size = 0
    for start in range(0, len(paths), OPEN_BATCH):
        batch = paths[start : start + OPEN_BATCH]
        with opened_as(uid, gid, groups, batch) as fds:
            for path in batch:
                fd = fds[path]
                if isinstance(fd, str):
                    raise SubmissionError(path, _unopened(fd, uid))
                entry = wanted[path]
                assert entry.sha256 is not None
                try:
                    got = _check_opened(store, fd, path, entry.sha256, entry.size, seen)
                except (IngestError, SourceChangedError) as exc:
                    raise SubmissionError(path, str(exc)) from exc
                if got is not None:
                    new += 1
                    size += got
    return Ingested(new, size)


def _check_opened(
    store: Store, fd: int, path: str, sha256: str, size: int | None, seen: SeenFiles | None
) -> int | None:
    """Check the file the user opened (``fd``) against the entry; store it if the
    store lacks it. Returns the bytes stored, or None when nothing was new."""
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        raise SubmissionError(
            path, "is not a regular file (a FIFO, device or directory); only files are shipped"
        )
    if st.st_size != size:
        raise SubmissionError(
            path,
            f"is {st.st_size} bytes, the manifest says {size} "
            "(changed since it was hashed?); submit again",
        )
    if seen is not None and seen.digest(st) == sha256 and store.has(sha256):
        return None
    # The magic link reopens the very file the user opened.
    source = Path(f"/proc/self/fd/{fd}")
    try:
        if store.has(sha256):
            read = hash_file(source)
            if read.sha256 != sha256:
                raise DigestMismatchError(path, sha256, read.sha256)
            stored = None
        else:
            read = store.ingest_file(source, expect_sha256=sha256)
            stored = read.size
    except DigestMismatchError as exc:
        raise SubmissionError(
            path,
            "does not hold the content the manifest names (changed since it was hashed?); "
            "submit again",
        ) from exc
    if seen is not None:
        seen.remember(read.stat, read.sha256)
    return stored
