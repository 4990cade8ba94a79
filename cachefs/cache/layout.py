"""Where things live in a cache directory, and the small file operations on them.

    ROOT/                                           mode 0700 (cachefs.privacy)
    ROOT/objects/<first two hex digits>/<sha256>   verified objects, mode 0444
    ROOT/tmp/<sha256>.<random>.part                 a download in progress
    ROOT/tmp/pins.<random>.json                     the pin file being replaced
    ROOT/pins.json                                  pins per job (see pins.py)
    ROOT/lock                                       byte-range locks (see locks.py)

The first two are the store's layout (docs/cachefs.md), so a cache directory is
also a valid DirectorySource for a peer.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path

from cachefs.errors import CacheDiskFullError, CacheIOError, CacheRequestError
from cachefs.manifest import is_sha256

OBJECTS = "objects"
TMP = "tmp"
PINS = "pins.json"
LOCK = "lock"
PART_SUFFIX = ".part"

#: errno values that mean "the directory is full" (disk blocks, inodes or quota).
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def check_sha(value: object) -> str:
    if not is_sha256(value):
        raise CacheRequestError("expected a sha256 digest (64 lowercase hex digits)", value)
    assert isinstance(value, str)
    return value


def check_size(sha: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CacheRequestError(f"size of object {sha} must be an int >= 0", value)
    return value


# Hot paths build names as strings: pathlib costs more than the syscalls here.


def object_file(root: str, sha: str) -> str:
    return f"{root}/{OBJECTS}/{sha[:2]}/{sha}"


def object_path(root: Path, sha: str) -> Path:
    return Path(object_file(str(root), sha))


def part_file(root: str, sha: str) -> str:
    """A fresh temp name for a download of ``sha`` (the name carries the digest so
    the cleaner can tell whether a live process still holds it)."""
    return f"{root}/{TMP}/{sha}.{secrets.token_hex(6)}{PART_SUFFIX}"


def part_digest(name: str) -> str | None:
    """The digest a temp file name carries, or None if it is not a download's."""
    sha = name.split(".", 1)[0]
    return sha if name.endswith(PART_SUFFIX) and is_sha256(sha) else None


def scan(root: Path) -> dict[str, tuple[int, int]]:
    """Every installed object: sha256 -> (size in bytes, last use as st_atime_ns)."""
    found: dict[str, tuple[int, int]] = {}
    try:
        prefixes = list(os.scandir(root / OBJECTS))
    except OSError as exc:
        raise CacheIOError(str(root / OBJECTS), f"cannot list objects: {exc}") from exc
    for prefix in prefixes:
        if not prefix.is_dir(follow_symlinks=False):
            continue
        try:
            entries = list(os.scandir(prefix.path))
        except FileNotFoundError:
            continue
        for entry in entries:
            if not is_sha256(entry.name):
                continue
            try:
                st = entry.stat(follow_symlinks=False)
            except FileNotFoundError:  # evicted by another process meanwhile
                continue
            found[entry.name] = (st.st_size, st.st_atime_ns)
    return found


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def fsync_dir(path: str | Path) -> None:
    """Make renames in ``path`` durable. Filesystems that cannot fsync a
    directory (EINVAL: some FUSE and network mounts) are left to their own order."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as exc:
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP):
            raise CacheIOError(str(path), f"cannot fsync the directory: {exc}") from exc


def io_error(path: str | Path, exc: OSError, needed: int) -> CacheDiskFullError | CacheIOError:
    """The error to raise for a failed write of ``needed`` bytes under ``path``."""
    if exc.errno in DISK_FULL:
        return CacheDiskFullError(str(path), needed)
    return CacheIOError(str(path), exc.strerror or str(exc))


def unlink_quietly(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
