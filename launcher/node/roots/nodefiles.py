"""The files a node puts in every job root from its own filesystem
(``[envroot] node_files``: /etc/hostname, /etc/resolv.conf by default).

These paths come from the master's config (in each ``prepare``), never from a
user, and are read as root from the node's own root. Each is opened once with
``O_NOFOLLOW``: only a regular file is taken (a symlink, a FIFO or a device is
left out with a warning, once per path), and a missing one is left out
quietly. Its bytes enter the node cache as a verified object pinned for the job
(through :meth:`NodeCache.fill`, like fetched objects) and the job's manifest
gets a root-owned 0644 file entry at that path, replacing any entry there or
under it. The root is built from that manifest, so the agent's jobs and Slurm
steps see the same files, and a kept root is reused only by a job whose node
files are the same (the manifest id covers them).
"""

from __future__ import annotations

import asyncio
import errno
import hashlib
import logging
import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass

from cachefs.bytesource import BytesSource
from cachefs.cache import NodeCache
from cachefs.errors import ManifestError
from cachefs.manifest import Entry, Manifest, check_path

log = logging.getLogger(__name__)

#: The largest node file taken (a resolv.conf or hostname is a few hundred bytes).
MAX_BYTES = 1 << 20
#: Mode of the entries: root's, readable by all, as on the node.
MODE = 0o644


@dataclass(frozen=True)
class NodeFile:
    path: str
    body: bytes


class NodeFiles:
    """Reads node files and adds them to job manifests (one per agent)."""

    def __init__(self, cache: NodeCache) -> None:
        self.cache = cache
        self._told: set[str] = set()
        self._lock = threading.Lock()

    def _tell(self, level: int, path: str, message: str) -> None:
        with self._lock:
            if path in self._told:
                return
            self._told.add(path)
        log.log(level, "[envroot] node_files: %s: %s", path, message)

    async def add(self, manifest: Manifest, job: str, paths: Iterable[str]) -> Manifest:
        """``manifest`` with this node's files at ``paths``, their objects cached
        and pinned for ``job``. Raises what :meth:`NodeCache.fill` raises
        (CacheFullError, CacheIOError, ...), after dropping every pin of ``job``:
        called once its manifest is filled, the job is refused then."""
        files = await asyncio.to_thread(self.read, paths)
        if not files:
            return manifest
        source = BytesSource(f.body for f in files)
        try:
            await self.cache.fill(source.objects(), [source], job=job)
        except BaseException:
            self.cache.unpin(job)
            raise
        return self.place(manifest, files)

    def read(self, paths: Iterable[str]) -> list[NodeFile]:
        """The regular files at ``paths`` on this node, each opened once without
        following a symlink at the path; others are left out (logged once)."""
        found = []
        for path in dict.fromkeys(paths):
            try:
                check_path(path)
            except ManifestError as exc:
                self._tell(logging.WARNING, str(path), f"not an absolute path ({exc}); left out")
                continue
            body = self._read_one(path)
            if body is not None:
                found.append(NodeFile(path, body))
        return found

    def _read_one(self, path: str) -> bytes | None:
        flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except (FileNotFoundError, NotADirectoryError):
            self._tell(logging.DEBUG, path, "not on this node; left out")
            return None
        except OSError as exc:
            why = (
                "is a symbolic link; only a regular file is taken"
                if exc.errno == errno.ELOOP
                else f"cannot be opened ({exc.strerror})"
            )
            self._tell(logging.WARNING, path, f"{why}; left out of job roots")
            return None
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                self._tell(logging.WARNING, path, "is not a regular file; left out of job roots")
                return None
            chunks = []
            left = MAX_BYTES + 1
            while left > 0:
                chunk = os.read(fd, min(left, 1 << 16))
                if not chunk:
                    break
                chunks.append(chunk)
                left -= len(chunk)
            body = b"".join(chunks)
        except OSError as exc:
            self._tell(logging.WARNING, path, f"cannot be read ({exc.strerror}); left out")
            return None
        finally:
            os.close(fd)
        if len(body) > MAX_BYTES:
            self._tell(logging.WARNING, path, f"is over {MAX_BYTES} bytes; left out of job roots")
            return None
        return body

    def place(self, manifest: Manifest, files: Iterable[NodeFile]) -> Manifest:
        """``manifest`` with each of ``files`` as a root-owned 0644 entry, replacing
        what the manifest had at or under its path; a file that cannot stand
        there (a symlink or file where it needs a directory) is left out."""
        for f in files:
            prefix = f.path + "/"
            entries = [e for e in manifest if e.path != f.path and not e.path.startswith(prefix)]
            digest = hashlib.sha256(f.body).hexdigest()
            try:
                manifest = Manifest(
                    manifest.root,
                    (*entries, Entry(f.path, "file", MODE, len(f.body), digest)),
                    manifest.owner,
                )
            except ManifestError as exc:
                self._tell(logging.WARNING, f.path, f"cannot stand in the job's root ({exc})")
        return manifest
