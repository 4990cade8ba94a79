"""Byte-range locks on ROOT/lock that order the processes sharing a cache directory.

Open-file-description (OFD) locks (``F_OFD_SETLK``, Linux >= 3.15), not classic
POSIX ``lockf`` locks: those belong to the process, so two NodeCache objects in
one process would not exclude each other, and closing any descriptor of the file
would drop every lock the process holds. OFD locks belong to the open file, are
released by the kernel when the owning process dies (SIGKILL included), and work
on tmpfs, local filesystems and NFS alike.

- byte 0: the pin metadata (held for a read-modify-write of pins.json, and
  while the temp dir is cleaned);
- byte 1 + (first 60 bits of a sha256): the download of that object. Two
  digests sharing 60 bits only serialise their downloads, which is harmless.

Locks held through one descriptor do not exclude each other, so a NodeCache
adds an in-process map of downloads (one task per digest) on top.
"""

from __future__ import annotations

import errno
import fcntl
import os
import struct
from pathlib import Path

from cachefs.errors import CacheIOError

# struct flock on Linux (x86_64, aarch64): l_type, l_whence, 4 bytes of padding,
# l_start, l_len, l_pid (must be 0 for OFD locks), 4 bytes of padding.
_FLOCK = "hhqqi4x"
META_BYTE = 0


def object_byte(sha: str) -> int:
    return 1 + int(sha[:15], 16)


class LockFile:
    """ROOT/lock, opened once per NodeCache (one open file description)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CacheIOError(str(path), f"cannot open the lock file: {exc}") from exc

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def _set(self, kind: int, start: int, *, wait: bool) -> bool:
        request = struct.pack(_FLOCK, kind, os.SEEK_SET, start, 1, 0)
        try:
            fcntl.fcntl(self._fd, fcntl.F_OFD_SETLKW if wait else fcntl.F_OFD_SETLK, request)
        except OSError as exc:
            if not wait and exc.errno in (errno.EAGAIN, errno.EACCES):
                return False
            # EINVAL/ENOLCK: a filesystem without OFD locks (some FUSE network mounts).
            raise CacheIOError(str(self.path), f"cannot lock byte {start}: {exc}") from exc
        return True

    def lock_meta(self) -> None:
        """Block until this open file holds the metadata lock."""
        self._set(fcntl.F_WRLCK, META_BYTE, wait=True)

    def unlock_meta(self) -> None:
        self._set(fcntl.F_UNLCK, META_BYTE, wait=True)

    def try_lock_object(self, sha: str) -> bool:
        """Take the download lock of ``sha`` unless another open file holds it."""
        return self._set(fcntl.F_WRLCK, object_byte(sha), wait=False)

    def unlock_object(self, sha: str) -> None:
        self._set(fcntl.F_UNLCK, object_byte(sha), wait=True)
