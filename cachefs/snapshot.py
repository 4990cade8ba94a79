"""Closure paths -> Manifest: record each path as it is now, storing file bodies.

Each regular file is read once: hashed while it is copied into the
:class:`~cachefs.store.Store` (or only hashed when no store is given), with the
store's guarantee that a file changing during the read is read again or
refused. Symlinks are recorded as symlinks (their targets are separate closure
paths), never followed.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from cachefs.errors import IngestError, SnapshotError, SourceChangedError
from cachefs.manifest import Entry, Manifest, build, check_path
from cachefs.store import StableRead, Store, hash_file


@dataclass(frozen=True)
class SnapshotProgress:
    """Where a snapshot is: regular files and their bytes, done and in all.

    ``path`` is the file just finished ('' for the report before the first)."""

    files_done: int
    files_total: int
    bytes_done: int
    bytes_total: int
    path: str


_SPECIAL = {
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFIFO: "a fifo",
    stat.S_IFSOCK: "a socket",
}


def _lstat(path: str) -> os.stat_result:
    try:
        return os.lstat(path)
    except FileNotFoundError as exc:
        raise SnapshotError(
            path, "it does not exist (removed since the closure was resolved?); resolve it again"
        ) from exc
    except OSError as exc:
        raise SnapshotError(path, exc.strerror or str(exc)) from exc


def _read_file(path: str, store: Store | None, attempts: int) -> StableRead:
    try:
        if store is None:
            return hash_file(Path(path), attempts=attempts, follow_symlinks=False)
        return store.ingest_file(Path(path), attempts=attempts, follow_symlinks=False)
    except SourceChangedError:
        raise
    except IngestError as exc:
        raise SnapshotError(path, exc.problem) from exc


def _own(st: os.stat_result, owner: int | None) -> int | None:
    """The entry's uid: the owner's when the file is theirs (root's is the default)."""
    return owner if owner and st.st_uid == owner else None


def snapshot(
    root: str,
    paths: Iterable[str],
    store: Store | None,
    *,
    owner: int | None = None,
    progress: Callable[[SnapshotProgress], None] | None = None,
    attempts: int = 3,
) -> Manifest:
    """The manifest of ``paths`` (absolute, normalised; duplicates ignored) for program ``root``.

    Raises SnapshotError naming the path for one that vanished, cannot be read,
    or is a device, fifo or socket; SourceChangedError for a file that kept
    changing while read; ManifestError for a path that is not absolute and
    normalised. With ``store``, every file body is in it when this returns.
    """
    found: list[tuple[str, os.stat_result]] = []
    for path in dict.fromkeys(paths):
        check_path(path)
        st = _lstat(path)
        kind = _SPECIAL.get(stat.S_IFMT(st.st_mode))
        if kind is not None:
            raise SnapshotError(
                path, f"it is {kind}; a closure holds only files, directories and symlinks"
            )
        found.append((path, st))

    files = [st for _, st in found if stat.S_ISREG(st.st_mode)]
    total = SnapshotProgress(0, len(files), 0, sum(st.st_size for st in files), "")
    if progress is not None:
        progress(total)
    files_done = bytes_done = 0
    entries: list[Entry] = []
    for path, st in found:
        if stat.S_ISLNK(st.st_mode):
            try:
                target = os.readlink(path)
            except OSError as exc:
                raise SnapshotError(path, f"cannot read the symlink: {exc.strerror}") from exc
            entries.append(Entry(path, "symlink", 0o777, target=target))
        elif stat.S_ISDIR(st.st_mode):
            entries.append(Entry(path, "dir", stat.S_IMODE(st.st_mode), uid=_own(st, owner)))
        else:
            read = _read_file(path, store, attempts)
            mode, mtime = stat.S_IMODE(read.stat.st_mode), read.stat.st_mtime_ns
            uid = _own(read.stat, owner)
            entries.append(Entry(path, "file", mode, read.size, read.sha256, mtime=mtime, uid=uid))
            files_done += 1
            bytes_done += read.size
            if progress is not None:
                progress(
                    SnapshotProgress(
                        files_done, total.files_total, bytes_done, total.bytes_total, path
                    )
                )
    return build(root, entries, owner)
