"""The site's public files the master copies into every job's root
(``[envroot] master_files``: /etc/localtime, /etc/ssl/certs, ...).

Each configured path is taken as the closure takes a path: every symlink on
the way is kept as a symlink entry and the file (or directory) it ends at is
added too, so /etc/localtime stays a link to /usr/share/zoneinfo/... and
/etc/ssl/certs/*.pem stay links into /usr/share/ca-certificates. Directories
are taken recursively, their symlinks followed the same way.

The paths come from the master's own config, not from a user, and are read as
root; but what they hold goes to every job of every user, so only public files
are shipped: a file must be world-readable and every directory on its way
world-searchable (a directory taken recursively world-readable too). Anything
else is left out with one WARNING per path (per master run); a path missing
on the master is left out with one DEBUG line.

Cost. A walk ``lstat``-s every path it meets and remembers what each showed;
the next submission ``lstat``-s them again and, when none changed (and the
store still holds every object), reuses the entries. A change anywhere moves
something remembered: a file's or link's inode, size, mtime or ctime (ctime
also moves with its mode), a directory's mtime when an entry is added,
removed or renamed in it, a path absent before that now exists. Files are
hashed once per version (:class:`launcher.readproof.SeenFiles`: an unchanged
``lstat`` is the same bytes). Measured here (defaults: 450 entries, 159
files, 0.75 MB; CPU time, two shared cores): the first walk 0.1-0.2 s (it
hashes every file), a walk of files already hashed ~6 ms, the check that
nothing changed ~1.2 ms (462 ``lstat`` and 159 store ``lstat``).
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cachefs.errors import CachefsError
from cachefs.manifest import Entry
from cachefs.store import Store
from launcher.readproof import SeenFiles

log = logging.getLogger(__name__)

#: Directory levels taken below a configured directory (a deeper tree is not
#: site configuration; a symlink loop ends here too).
MAX_DEPTH = 16
#: Entries taken in all: the defaults are about 450; a config naming /usr by
#: mistake must not put the whole install into every manifest.
MAX_ENTRIES = 20_000
#: Links followed while resolving one path (Linux's limit: ELOOP past it).
MAX_SYMLINKS = 40

#: What an lstat showed of a path (None: it was absent or could not be looked at).
Signature = tuple[int, int, int, int, int, int] | None


def _parent(path: str) -> str:
    return path.rsplit("/", 1)[0] or "/"


def signature(path: str) -> Signature:
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return (st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _is_file(path: str) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


@dataclass(frozen=True)
class _Walked:
    entries: tuple[Entry, ...]
    looked_at: dict[str, Signature]
    #: the store's files of the entries' objects (paths as strings: pathlib
    #: doubled the cost of the check)
    objects: tuple[str, ...]

    def unchanged(self) -> bool:
        if any(signature(path) != sig for path, sig in self.looked_at.items()):
            return False
        return all(_is_file(path) for path in self.objects)


class SiteFiles:
    """Collects the entries of the configured paths; one per master process.
    Thread-safe: submissions are handled in worker threads."""

    def __init__(self, store: Store, paths: Iterable[str]) -> None:
        self.store = store
        self.paths = tuple(paths)
        self.seen = SeenFiles()
        self._told: set[str] = set()  # paths already warned (or debugged) about
        self._lock = threading.Lock()
        self._last: _Walked | None = None

    def entries(self) -> list[Entry]:
        """The entries of every configured path as the master holds it now; file
        bodies are in the store when this returns. Never raises for a path:
        one that cannot be shipped is left out and logged once."""
        last = self._last
        if last is not None and last.unchanged():
            return list(last.entries)
        walk = _Walk(self)
        for path in self.paths:
            walk.path(path, 0)
        found = tuple(walk.found.values())
        objects = tuple(str(self.store.path(e.sha256)) for e in found if e.sha256 is not None)
        self._last = _Walked(found, walk.looked_at, objects)
        return list(found)

    def tell(self, level: int, path: str, message: str) -> None:
        """Log ``message`` about ``path`` once per master run."""
        with self._lock:
            if path in self._told:
                return
            self._told.add(path)
        log.log(level, "[envroot] master_files: %s: %s", path, message)

    def file_entry(self, path: str, st: os.stat_result) -> Entry | None:
        """The entry of regular file ``path`` (``st``: its lstat), its body in the store."""
        digest = self.seen.digest(st)
        if digest is not None and self.store.has(digest):
            return Entry(
                path, "file", stat.S_IMODE(st.st_mode), st.st_size, digest, mtime=st.st_mtime_ns
            )
        try:
            read = self.store.ingest_file(Path(path), follow_symlinks=False)
        except (CachefsError, OSError) as exc:
            self.tell(logging.WARNING, path, f"cannot be read ({exc}); left out of job roots")
            return None
        self.seen.remember(read.stat, read.sha256)
        mode = stat.S_IMODE(read.stat.st_mode)
        if not mode & stat.S_IROTH:  # changed since the lstat: never ship it then
            self.tell(logging.WARNING, path, "is not world-readable; left out of job roots")
            return None
        return Entry(path, "file", mode, read.size, read.sha256, mtime=read.stat.st_mtime_ns)


class _Walk:
    """One collection: the entries found, by path, and every path looked at."""

    def __init__(self, site: SiteFiles) -> None:
        self.site = site
        self.found: dict[str, Entry] = {}
        self.looked_at: dict[str, Signature] = {}
        self._stats: dict[str, os.stat_result | None] = {}
        self._dirs_done: set[str] = set()

    def lstat(self, path: str) -> os.stat_result | None:
        """``os.lstat`` once per walk, remembered for the next one's check."""
        if path in self._stats:
            return self._stats[path]
        try:
            st: os.stat_result | None = os.lstat(path)
        except OSError:
            st = None
        self._stats[path] = st
        self.looked_at[path] = (
            None
            if st is None
            else (st.st_mode, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        )
        return st

    def chain(self, path: str) -> tuple[list[tuple[str, str]], str]:
        """Resolve absolute ``path`` component by component as the kernel does:
        the (link, target) of every symlink met, in order, and the physical
        path reached. Raises OSError(ELOOP) past MAX_SYMLINKS links."""
        todo = path.split("/")[::-1]
        current = "/"
        links: list[tuple[str, str]] = []
        while todo:
            part = todo.pop()
            if part in ("", "."):
                continue
            if part == "..":
                current = _parent(current)
                continue
            candidate = f"{current.rstrip('/')}/{part}"
            st = self.lstat(candidate)
            if st is None or not stat.S_ISLNK(st.st_mode):
                current = candidate
                continue
            target = os.readlink(candidate)
            links.append((candidate, target))
            if len(links) > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, f"more than {MAX_SYMLINKS} symlinks")
            if target.startswith("/"):
                current = "/"
            todo.extend(target.split("/")[::-1])
        return links, current

    def searchable(self, directory: str) -> bool:
        """Whether every directory from / down to ``directory`` (physical) is world-searchable."""
        while True:
            st = self.lstat(directory)
            if st is None or not stat.S_ISDIR(st.st_mode) or not st.st_mode & stat.S_IXOTH:
                return False
            if directory == "/":
                return True
            directory = _parent(directory)

    def path(self, path: str, depth: int) -> None:
        """Add ``path``: its symlinks and what it ends at."""
        if len(self.found) >= MAX_ENTRIES:
            self.site.tell(
                logging.WARNING,
                path,
                f"past {MAX_ENTRIES} entries in all; left out (is a configured path too broad?)",
            )
            return
        try:
            links, real = self.chain(path)
        except OSError as exc:
            self.site.tell(logging.WARNING, path, f"cannot be resolved ({exc}); left out")
            return
        for link, target in links:
            if not self.searchable(_parent(link)):
                self.site.tell(
                    logging.WARNING, link, "lies in a directory others cannot search; left out"
                )
                return
            self.found.setdefault(link, Entry(link, "symlink", 0o777, target=target))
        self.target(real, depth, asked=path)

    def target(self, real: str, depth: int, *, asked: str) -> None:
        """Add the physical path ``real`` a path ended at."""
        st = self.lstat(real)
        if st is None:
            self.site.tell(logging.DEBUG, asked, "not on the master (or unreadable); left out")
            return
        if not self.searchable(_parent(real)):
            self.site.tell(
                logging.WARNING, real, "lies in a directory others cannot search; left out"
            )
            return
        if stat.S_ISREG(st.st_mode):
            if not st.st_mode & stat.S_IROTH:
                self.site.tell(
                    logging.WARNING, real, "is not world-readable; left out of job roots"
                )
                return
            if real not in self.found:
                entry = self.site.file_entry(real, st)
                if entry is not None:
                    self.found[real] = entry
        elif stat.S_ISDIR(st.st_mode):
            self.directory(real, st, depth)
        else:
            self.site.tell(logging.WARNING, real, "is not a file or directory; left out")

    def directory(self, real: str, st: os.stat_result, depth: int) -> None:
        if real == "/":  # a link to / (or a config of it): never the whole install
            self.site.tell(logging.WARNING, real, "is the root directory; left out")
            return
        if real in self._dirs_done:
            return
        self._dirs_done.add(real)
        if (st.st_mode & (stat.S_IROTH | stat.S_IXOTH)) != (stat.S_IROTH | stat.S_IXOTH):
            self.site.tell(
                logging.WARNING, real, "is a directory others cannot list; left out of job roots"
            )
            return
        if depth >= MAX_DEPTH:
            self.site.tell(logging.WARNING, real, f"is more than {MAX_DEPTH} levels deep; left out")
            return
        self.found.setdefault(real, Entry(real, "dir", stat.S_IMODE(st.st_mode)))
        try:
            names = sorted(os.listdir(real))
        except OSError as exc:
            self.site.tell(logging.WARNING, real, f"cannot be listed ({exc.strerror}); left out")
            return
        for name in names:
            self.path(f"{real}/{name}", depth + 1)
