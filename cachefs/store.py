"""The master's content-addressed object store.

Layout (docs/cachefs.md)::

    ROOT/                                            mode 0700 (cachefs.privacy)
    ROOT/objects/<first two hex digits>/<sha256>   immutable, mode 0444
    ROOT/tmp/                                        partial writes

An object is copied into a tmp file (created with O_EXCL and held under
``flock`` while it is written, so a cleaner in another process can tell a live
write from a crashed one), hashed during that one copy, fsynced, hard-linked to
its name and its directory fsynced: nothing under ``objects/`` is ever partial,
and an existing object is never replaced (``link`` fails instead), so a master
that later replaces ``/usr/lib/x.so`` leaves the old object as it was.

A file that changes while it is read is detected (fstat before and after, and a
second read when its mtime is too recent for the coarse kernel clock to have
moved) and read again, up to ``attempts`` times, then refused: a file is never
recorded under a digest of bytes it did not hold at one moment.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import os
import secrets
import stat
import time
from collections.abc import Iterator, Set
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from cachefs.errors import (
    BadDigestError,
    DigestMismatchError,
    IngestError,
    ObjectMissingError,
    SourceChangedError,
)
from cachefs.manifest import is_sha256
from cachefs.privacy import make_private

#: Bytes per read while copying.
CHUNK = 1 << 20
#: A file whose mtime is this close to the start of our read is "racy": the
#: kernel stamps mtime from a coarse clock (one jiffy, up to 10 ms), so a write
#: in the same tick as our first fstat would not move it. Such a file is read a
#: second time once the clock has passed it.
RACY_NS = 20_000_000
#: Filesystems that keep whole seconds only (mtime and ctime both round) need more.
RACY_COARSE_NS = 2_000_000_000
#: An unlocked tmp file younger than this, named for a live pid, may be one that
#: process has just created and not yet locked; the cleaner leaves it.
TMP_STALE_S = 60.0
#: gc leaves objects written or re-ingested within this many seconds: a snapshot
#: still in progress has no manifest yet to put them in ``keep``.
GC_GRACE_S = 3600.0


@dataclass(frozen=True)
class StableRead:
    """What one consistent read of a file gave: its digest, its length, and the
    fstat of the opened file (unchanged from before to after the read)."""

    sha256: str
    size: int
    stat: os.stat_result


@dataclass(frozen=True)
class GcReport:
    removed: int
    freed_bytes: int
    kept: int
    tmp_removed: int


def _identity(st: os.stat_result) -> tuple[int, int, int, int, int]:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        data = data[os.write(fd, data) :]


def _copy(fd: int, sink: int | None, buf: bytearray, limit: int) -> tuple[str, int]:
    """Read ``fd`` to its end or ``limit`` bytes, hashing, and write every byte to ``sink``.

    The limit stops a file that grows as fast as it is read from being read forever.
    """
    h = hashlib.sha256()
    view = memoryview(buf)
    total = 0
    while total < limit:
        n = os.readv(fd, [view[: min(len(buf), limit - total)]])
        if n == 0:
            break
        h.update(view[:n])
        if sink is not None:
            _write_all(sink, view[:n])
        total += n
    return h.hexdigest(), total


def _racy_window(st: os.stat_result) -> int:
    whole_seconds = st.st_mtime_ns % 1_000_000_000 == 0 and st.st_ctime_ns % 1_000_000_000 == 0
    return RACY_COARSE_NS if whole_seconds else RACY_NS


def _open_source(src: Path, follow_symlinks: bool) -> int | None:
    """Open ``src`` for reading; None when it turned into a symlink (with
    follow_symlinks False: the caller saw a regular file a moment ago)."""
    flags = os.O_RDONLY | os.O_CLOEXEC | (0 if follow_symlinks else os.O_NOFOLLOW)
    try:
        return os.open(src, flags)
    except FileNotFoundError as exc:
        raise IngestError(str(src), "no such file (it vanished?)") from exc
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            return None
        raise IngestError(str(src), exc.strerror or str(exc)) from exc


class _TmpFile:
    """A tmp file in ROOT/tmp, created with O_EXCL and flocked while written."""

    def __init__(self, tmp_dir: Path) -> None:
        self.path = tmp_dir / f"{os.getpid()}-{secrets.token_hex(8)}.part"
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC | os.O_NOFOLLOW
        self.fd = os.open(self.path, flags, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def close(self) -> None:
        """Close and remove (a no-op when already done)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


def _writer_alive(name: str) -> bool:
    """Whether the process a tmp file is named for (``<pid>-<random>.part``) runs."""
    pid = name.split("-", 1)[0]
    if not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _read_stable(
    src: Path,
    *,
    attempts: int = 3,
    follow_symlinks: bool = True,
    tmp_dir: Path | None = None,
) -> tuple[StableRead, _TmpFile | None]:
    """Read ``src`` once consistently; with ``tmp_dir``, copy it into a new tmp file there.

    Returns the read and the still open tmp file (the caller installs or closes
    it). Raises IngestError when ``src`` cannot be opened or is not a regular
    file, SourceChangedError when it changed during each of ``attempts`` reads.
    """
    buf = bytearray(CHUNK)
    for _ in range(max(1, attempts)):
        start_ns = time.time_ns()
        fd = _open_source(src, follow_symlinks)
        if fd is None:
            continue
        tmp: _TmpFile | None = None
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                raise IngestError(str(src), "not a regular file")
            tmp = _TmpFile(tmp_dir) if tmp_dir is not None else None
            limit = before.st_size + 1  # one more byte than fstat said shows growth
            digest, size = _copy(fd, tmp.fd if tmp else None, buf, limit)
            ok = size == before.st_size and _identity(os.fstat(fd)) == _identity(before)
            window = _racy_window(before)
            # An mtime far in the future (skewed clocks, odd archives) is not
            # racy: any write now would stamp a different one.
            if ok and start_ns - window <= before.st_mtime_ns <= time.time_ns() + window:
                # Wait until any write would stamp a later mtime, then read again.
                wait_ns = before.st_mtime_ns + window - time.time_ns()
                time.sleep(min(max(wait_ns, 0), 2 * window) / 1e9)
                os.lseek(fd, 0, os.SEEK_SET)
                again = _copy(fd, None, buf, limit)
                ok = again == (digest, size) and _identity(os.fstat(fd)) == _identity(before)
            if ok:
                kept, tmp = tmp, None
                return StableRead(digest, size, before), kept
        except OSError as exc:
            raise IngestError(str(src), exc.strerror or str(exc)) from exc
        finally:
            os.close(fd)
            if tmp is not None:
                tmp.close()
    raise SourceChangedError(str(src), attempts)


def hash_file(src: Path, *, attempts: int = 3, follow_symlinks: bool = True) -> StableRead:
    """The sha256 and size of ``src`` from one consistent read (nothing is stored)."""
    result, _ = _read_stable(src, attempts=attempts, follow_symlinks=follow_symlinks)
    return result


class StoreReader:
    """Read-only view of a directory laid out like the store (``ROOT/objects/xx/<sha256>``).

    Never writes or cleans anything: a node serves its cache directory to peers
    through one while its own fills write there (:class:`Store`'s constructor
    would remove their part files)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._objects = self.root / "objects"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    def path(self, sha256: str) -> Path:
        """Where the object lives (whether or not it is there). Raises BadDigestError."""
        if not is_sha256(sha256):
            raise BadDigestError(sha256)
        return self._objects / sha256[:2] / sha256

    def has(self, sha256: str) -> bool:
        try:
            return stat.S_ISREG(os.lstat(self.path(sha256)).st_mode)
        except FileNotFoundError:
            return False

    def open(self, sha256: str) -> BinaryIO:
        """Open the object for reading. Raises ObjectMissingError, BadDigestError."""
        path = self.path(sha256)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError as exc:
            raise ObjectMissingError(sha256, str(self.root)) from exc
        return os.fdopen(fd, "rb")

    def objects(self) -> Iterator[tuple[str, int]]:
        """Every object as (sha256, size), in digest order."""
        for digest, _, st in self._walk():
            yield digest, st.st_size

    def _walk(self) -> Iterator[tuple[str, Path, os.stat_result]]:
        for folder in sorted(self._objects.iterdir()):
            if len(folder.name) != 2 or not folder.is_dir():
                continue
            for path in sorted(folder.iterdir()):
                name = path.name
                if not is_sha256(name) or name[:2] != folder.name:
                    continue
                try:
                    st = os.lstat(path)
                except FileNotFoundError:
                    continue
                if stat.S_ISREG(st.st_mode):
                    yield name, path, st


class Store(StoreReader):
    """Objects on disk under ``root``; see the module docstring for the guarantees."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self._tmp = self.root / "tmp"
        make_private(self.root)  # objects are 0444: the directory keeps others out
        self._objects.mkdir(parents=True, exist_ok=True)
        self._tmp.mkdir(mode=0o700, exist_ok=True)
        self._clean_tmp()

    # --- writing -------------------------------------------------------------

    def ingest_file(
        self,
        src: Path,
        *,
        expect_sha256: str | None = None,
        attempts: int = 3,
        follow_symlinks: bool = True,
    ) -> StableRead:
        """Copy ``src`` into the store (one read, hashed during the copy) and say what it held.

        An object already present is kept as it is (and marked recently used
        for gc). Raises IngestError (missing, unreadable, not a regular file),
        SourceChangedError, DigestMismatchError (with ``expect_sha256``; nothing
        is stored then), BadDigestError for a malformed ``expect_sha256``.
        """
        if expect_sha256 is not None and not is_sha256(expect_sha256):
            raise BadDigestError(expect_sha256)
        read, tmp = _read_stable(
            Path(src), attempts=attempts, follow_symlinks=follow_symlinks, tmp_dir=self._tmp
        )
        assert tmp is not None
        try:
            if expect_sha256 is not None and read.sha256 != expect_sha256:
                raise DigestMismatchError(str(src), expect_sha256, read.sha256)
            self._install(tmp, read.sha256)
        finally:
            tmp.close()
        return read

    def repair(self, sha256: str, src: Path, quarantine: Path) -> StableRead:
        """Replace a damaged copy of ``sha256`` with the bytes of ``src`` (which must
        hash to it), keeping the damaged one as a hard link in ``quarantine``.

        The one exception to "an object is never replaced": readers see the old
        copy or the new one, never none (a rename over it). Raises what
        :meth:`ingest_file` raises, DigestMismatchError when ``src`` holds other
        bytes (nothing is changed then)."""
        if not is_sha256(sha256):
            raise BadDigestError(sha256)
        read, tmp = _read_stable(Path(src), tmp_dir=self._tmp)
        assert tmp is not None
        try:
            if read.sha256 != sha256:
                raise DigestMismatchError(str(src), sha256, read.sha256)
            os.fchmod(tmp.fd, 0o444)
            os.fsync(tmp.fd)
            dest = self.path(sha256)
            dest.parent.mkdir(exist_ok=True)
            quarantine.mkdir(mode=0o700, parents=True, exist_ok=True)
            kept = quarantine / f"{sha256}.{time.strftime('%Y%m%dT%H%M%S')}.{os.getpid()}"
            with contextlib.suppress(FileNotFoundError, FileExistsError):
                os.link(dest, kept)
            with self._lock(fcntl.LOCK_SH):
                os.rename(tmp.path, dest)
            _fsync_dir(dest.parent)
        finally:
            tmp.close()
        return read

    def ingest(
        self, src: Path, *, expect_sha256: str | None = None, attempts: int = 3
    ) -> tuple[str, int]:
        """Store the file at ``src``; return (sha256, size). See :meth:`ingest_file`."""
        read = self.ingest_file(src, expect_sha256=expect_sha256, attempts=attempts)
        return read.sha256, read.size

    def ingest_bytes(self, data: bytes) -> tuple[str, int]:
        """Store ``data``; return (sha256, size)."""
        digest = hashlib.sha256(data).hexdigest()
        if self._touch(digest):
            return digest, len(data)
        tmp = _TmpFile(self._tmp)
        try:
            _write_all(tmp.fd, memoryview(data))
            self._install(tmp, digest)
        finally:
            tmp.close()
        return digest, len(data)

    def _touch(self, digest: str) -> bool:
        """Mark a present object as just used (gc's grace); False when absent."""
        try:
            os.utime(self.path(digest))
        except FileNotFoundError:
            return False
        except PermissionError:
            pass  # another user's store: present is what matters
        return True

    def _install(self, tmp: _TmpFile, digest: str) -> None:
        os.fchmod(tmp.fd, 0o444)
        os.fsync(tmp.fd)
        folder = self._objects / digest[:2]
        try:
            folder.mkdir()
        except FileExistsError:
            pass
        else:
            _fsync_dir(self._objects)
        dest = folder / digest
        with self._lock(fcntl.LOCK_SH):
            try:
                # link, not rename: an object that exists is never replaced.
                os.link(tmp.path, dest)
            except FileExistsError:
                self._touch(digest)
                return
            except OSError as exc:
                if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOSYS):
                    raise
                # A filesystem without hard links: rename (same bytes if it raced).
                if self._touch(digest):
                    return
                os.rename(tmp.path, dest)
            _fsync_dir(folder)

    # --- cleaning ------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self, how: int) -> Iterator[None]:
        """gc holds this exclusively; installs share it, so gc never removes an
        object between an ingest finding it present and marking it used."""
        fd = os.open(self.root / "gc.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, how)
            yield
        finally:
            os.close(fd)

    def _clean_tmp(self) -> tuple[int, int]:
        """Remove tmp files no live writer holds; return (count, bytes)."""
        count = freed = 0
        now = time.time()
        for path in self._tmp.iterdir():
            try:
                fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                st = os.fstat(fd)
                if now - st.st_mtime < TMP_STALE_S and _writer_alive(path.name):
                    continue
                os.unlink(path)
                count += 1
                freed += st.st_size
            except OSError:
                continue  # locked: a live write
            finally:
                os.close(fd)
        return count, freed

    def gc(self, keep: Set[str], *, grace_s: float = GC_GRACE_S) -> GcReport:
        """Remove every object not in ``keep`` and not used within ``grace_s``
        seconds, and stale tmp files. ``keep`` is the objects of the manifests
        still within the retention period; the caller decides which those are."""
        removed = freed = kept = 0
        now_ns = time.time_ns()
        with self._lock(fcntl.LOCK_EX):
            for digest, path, st in list(self._walk()):
                recent = now_ns - max(st.st_mtime_ns, st.st_ctime_ns) < grace_s * 1e9
                if digest in keep or recent:
                    kept += 1
                    continue
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                removed += 1
                freed += st.st_size
        tmp_removed, tmp_freed = self._clean_tmp()
        return GcReport(removed, freed + tmp_freed, kept, tmp_removed)
