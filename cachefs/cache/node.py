"""NodeCache: fill, pin, evict and look up objects in a node's cache directory."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

from cachefs.cache import layout, pins
from cachefs.cache.claims import Claims
from cachefs.cache.flights import Flights
from cachefs.cache.locks import LockFile
from cachefs.cache.report import CacheUsage, FillProgress, FillReport, JobPins, Tally
from cachefs.closable import Closable
from cachefs.errors import (
    CacheFullError,
    CacheIOError,
    CacheRequestError,
    ObjectNotCachedError,
)
from cachefs.privacy import make_private
from cachefs.source import ObjectSource

log = logging.getLogger(__name__)


class NodeCache(Closable):
    """A verified, content-addressed object cache with per-job pins and an LRU budget.

    Several NodeCache objects (in one process or many) may share a directory.
    ``budget_bytes`` bounds the objects' total size: fills evict unpinned
    objects, least recently used first, to stay under it. One NodeCache serves
    one thread (its event loop's): concurrent fills are tasks of that loop.
    """

    def __init__(self, root: Path, budget_bytes: int) -> None:
        if isinstance(budget_bytes, bool) or not isinstance(budget_bytes, int) or budget_bytes < 1:
            raise CacheRequestError("the budget must be an int >= 1 (bytes)", budget_bytes)
        self.root = Path(root)
        self.budget_bytes = budget_bytes
        try:
            make_private(self.root)  # objects are 0444: the directory keeps others out
            (self.root / layout.OBJECTS).mkdir(parents=True, exist_ok=True)
            (self.root / layout.TMP).mkdir(exist_ok=True)
        except OSError as exc:
            raise CacheIOError(str(self.root), f"cannot open the cache: {exc}") from exc
        self._lock = LockFile(self.root / layout.LOCK)
        self._mutex = threading.Lock()  # one OFD lock serves every thread: order them
        #: downloads in flight, for the peer service (cut-through)
        self.flights = Flights(self.root)
        self._claims = Claims(self.root, self._lock, self.flights)
        #: sha256 -> (st_ino, st_size, st_mtime_ns) of each object this process
        #: verified: a hit whose file still shows them is trusted without a hash
        self._verified: dict[str, tuple[int, int, int]] = {}
        self._protected: Counter[str] = Counter()  # objects of fills running here
        self._protected_size: dict[str, int] = {}
        self._clock = 0
        self._clean_tmp()

    # -- lifecycle ------------------------------------------------------------------

    def close(self) -> None:
        self._lock.close()

    @contextmanager
    def _meta(self) -> Iterator[None]:
        with self._mutex:
            self._lock.lock_meta()
            try:
                yield
            finally:
                self._lock.unlock_meta()

    def _clean_tmp(self) -> None:
        """Remove temp files no live process is writing (their download lock is free)."""
        tmp = self.root / layout.TMP
        with self._meta():
            for entry in os.scandir(tmp):
                path = Path(entry.path)
                sha = layout.part_digest(entry.name)
                if sha is None:
                    if entry.is_dir(follow_symlinks=False):
                        shutil.rmtree(path, ignore_errors=True)
                    else:
                        layout.unlink_quietly(path)
                elif self._lock.try_lock_object(sha):
                    try:
                        layout.unlink_quietly(path)
                    finally:
                        self._lock.unlock_object(sha)

    # -- lookups --------------------------------------------------------------------

    def object_path(self, sha256: str) -> Path:
        """The installed object's path; ObjectNotCachedError if it is not cached."""
        path = layout.object_path(self.root, layout.check_sha(sha256))
        if not path.is_file():
            raise ObjectNotCachedError(sha256, str(self.root))
        return path

    def usage(self) -> CacheUsage:
        objects = layout.scan(self.root)
        with self._meta():
            held = pins.load(self.root)
        pinned = pins.union(held)
        return CacheUsage(
            bytes_used=sum(size for size, _ in objects.values()),
            budget_bytes=self.budget_bytes,
            objects=len(objects),
            pinned_objects=len(pinned),
            pinned_bytes=sum(pinned.values()),
            jobs={job: JobPins(len(o), sum(o.values())) for job, o in sorted(held.items())},
        )

    # -- pins and eviction --------------------------------------------------------------

    def pin(self, job: str, shas: Iterable[str]) -> None:
        """Pin cached objects for ``job``; ObjectNotCachedError if one is not cached."""
        job = _check_job(job)
        sizes: dict[str, int] = {}
        for sha in shas:
            path = layout.object_path(self.root, layout.check_sha(sha))
            try:
                sizes[sha] = path.stat().st_size
            except FileNotFoundError:
                raise ObjectNotCachedError(sha, str(self.root)) from None
        with self._meta():
            held = pins.load(self.root)
            held.setdefault(job, {}).update(sizes)
            pins.save(self.root, held)

    def unpin(self, job: str) -> None:
        """Drop every pin of ``job`` (nothing happens if it has none)."""
        job = _check_job(job)
        with self._meta():
            held = pins.load(self.root)
            if held.pop(job, None) is not None:
                pins.save(self.root, held)

    def evict(self, needed_bytes: int = 0) -> list[str]:
        """Remove unpinned objects, least recently used first, until the objects
        plus ``needed_bytes`` fit in the budget (or nothing unpinned is left).
        Objects of fills running in this process are kept too. Returns the
        evicted digests in eviction order."""
        if isinstance(needed_bytes, bool) or not isinstance(needed_bytes, int) or needed_bytes < 0:
            raise CacheRequestError("needed_bytes must be an int >= 0", needed_bytes)
        with self._meta():
            keep = set(pins.union(pins.load(self.root))) | set(self._protected)
            objects = layout.scan(self.root)
            used = sum(size for size, _ in objects.values())
            used += self._claims.bytes_pending(objects)
            victims = sorted(
                (used_at, sha) for sha, (_, used_at) in objects.items() if sha not in keep
            )
            evicted: list[str] = []
            for _, sha in victims:
                if used + needed_bytes <= self.budget_bytes:
                    break
                layout.unlink_quietly(layout.object_path(self.root, sha))
                used -= objects[sha][0]
                evicted.append(sha)
            return evicted

    # -- fill -------------------------------------------------------------------

    async def fill(
        self,
        objects: Mapping[str, int],
        sources: Sequence[ObjectSource],
        *,
        job: str | None = None,
        progress: Callable[[FillProgress], None] | None = None,
        attempts: int = 3,
    ) -> FillReport:
        """Make every object (sha256 -> size) present and verified, from ``sources`` in order.

        With ``job``, every object is pinned for it, before anything is
        downloaded; if the fill fails, the pins it added are removed again.
        Raises CacheFullError (before downloading) when the objects cannot fit
        beside the pinned ones, ObjectUnavailableError, CorruptObjectError
        (after ``attempts`` bad copies of one object), SourceError,
        CacheDiskFullError, CacheIOError.
        """
        started = time.monotonic()
        wanted = {
            layout.check_sha(sha): layout.check_size(sha, size) for sha, size in objects.items()
        }
        if job is not None:
            job = _check_job(job)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1:
            raise CacheRequestError("attempts must be an int >= 1", attempts)
        tally = Tally(len(wanted), sum(wanted.values()), progress)
        self._protect(wanted)
        added: list[str] = []
        try:
            added = self._admit(wanted, job)
            missing = await self._present(wanted, tally)
            if missing:
                self.evict(sum(size for sha, size in missing.items() if sha not in self._claims))
            with self.flights.filling(job, missing):
                await self._claims.obtain(missing, sources, tally, attempts)
            self._mark_verified(missing)  # installed from copies hashed on the way in
            self._touch(wanted)
        except BaseException:
            if job is not None:
                self.flights.started(job)  # peers waiting for this job: nothing will come
            if added:
                assert job is not None
                self._drop_pins(job, added)
            raise
        finally:
            self._unprotect(wanted)
        tally.report()
        return FillReport(
            objects_total=len(wanted),
            objects_hit=tally.hits,
            bytes_total=tally.bytes_total,
            bytes_from=dict(tally.bytes_from),
            seconds=time.monotonic() - started,
            discarded=tally.discarded,
        )

    def _protect(self, wanted: Mapping[str, int]) -> None:
        self._protected.update(wanted.keys())
        self._protected_size.update(wanted)

    def _unprotect(self, wanted: Mapping[str, int]) -> None:
        self._protected.subtract(wanted.keys())
        for sha in wanted:
            if self._protected[sha] <= 0:
                del self._protected[sha]
                self._protected_size.pop(sha, None)

    def _admit(self, wanted: Mapping[str, int], job: str | None) -> list[str]:
        """Check the fill fits beside what is held; pin it for ``job``. Returns the new pins."""
        with self._meta():
            held = pins.load(self.root)
            others = pins.union(held)  # held by jobs and by the other fills running here
            for sha, count in self._protected.items():
                if count - (sha in wanted) > 0:
                    others.setdefault(sha, self._protected_size[sha])
            needed = sum(size for sha, size in wanted.items() if sha not in others)
            if needed + sum(others.values()) > self.budget_bytes:
                raise CacheFullError(needed, self.budget_bytes, sum(others.values()))
            if job is None:
                return []
            mine = held.setdefault(job, {})
            added = [sha for sha in wanted if sha not in mine]
            if added:
                mine.update({sha: wanted[sha] for sha in added})
                pins.save(self.root, held)
            return added

    def _drop_pins(self, job: str, shas: list[str]) -> None:
        with self._meta():
            held = pins.load(self.root)
            mine = held.get(job, {})
            for sha in shas:
                mine.pop(sha, None)
            pins.save(self.root, held)

    async def _present(self, wanted: Mapping[str, int], tally: Tally) -> dict[str, int]:
        """Count the sound cached objects as hits; return the others (sha256 -> size).

        A copy this process verified and nobody wrote since (same inode, size and
        mtime) is trusted; any other is hashed first, in a worker thread (a
        restarted agent hashes its whole cache once), and a damaged one removed
        (the fill fetches it again). Writes move mtime (only root, who may set it
        back, can write here: the directory is 0700 and objects 0444), so a
        flipped byte is caught before a job runs it."""
        missing: dict[str, int] = {}
        unsure: dict[str, int] = {}
        for sha, size in wanted.items():
            state = self._cached(sha, size)
            if state is None:
                unsure[sha] = size
            elif state:
                tally.object_done(size, hit=True, report=False)
            else:
                missing[sha] = size
        if unsure:
            sound = await asyncio.to_thread(self._verify, unsure)
            for sha, size in unsure.items():
                if sha in sound:
                    tally.object_done(size, hit=True, report=False)
                else:
                    missing[sha] = size
        tally.report()
        return missing

    def _cached(self, sha: str, size: int) -> bool | None:
        """True: a trusted copy is here; False: none is; None: one that must be hashed."""
        path = layout.object_file(str(self.root), sha)
        try:
            st = os.stat(path)
        except FileNotFoundError:
            return False
        found = st.st_size
        if found == size:
            return True if self._verified.get(sha) == _marker(st) else None
        # Objects are verified when installed, so the request's size is wrong,
        # unless the file was damaged since: check before trusting either.
        if _sha256_of(path) == sha:
            raise CacheRequestError(f"object {sha} is {found} bytes, the request says", size)
        layout.unlink_quietly(path)
        return False

    def _verify(self, unsure: Mapping[str, int]) -> set[str]:
        """Hash each object of ``unsure``; the sound ones (remembered), the damaged
        ones removed."""
        sound = set()
        root = str(self.root)
        for sha in unsure:
            path = layout.object_file(root, sha)
            try:
                st = os.stat(path)
                good = _sha256_of(path) == sha
            except FileNotFoundError:
                continue
            if good:
                self._verified[sha] = _marker(st)
                sound.add(sha)
                continue
            log.warning("object %s in the cache %s was damaged: fetching it again", sha, root)
            self._verified.pop(sha, None)
            layout.unlink_quietly(path)
        return sound

    def _mark_verified(self, installed: Mapping[str, int]) -> None:
        root = str(self.root)
        for sha in installed:
            with contextlib.suppress(OSError):
                self._verified[sha] = _marker(os.stat(layout.object_file(root, sha)))

    def _touch(self, wanted: Mapping[str, int]) -> None:
        """Mark the objects used now: last use is the object file's atime."""
        now = max(time.time_ns(), self._clock + 1)
        self._clock = now
        root = str(self.root)
        for sha in wanted:
            path = layout.object_file(root, sha)
            # Evicted by another process, or another uid's file: no LRU update.
            with contextlib.suppress(FileNotFoundError, PermissionError):
                os.utime(path, ns=(now, os.stat(path).st_mtime_ns))


def _marker(st: os.stat_result) -> tuple[int, int, int]:
    # Not ctime: the LRU's utime (atime) moves it at every fill.
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _check_job(job: object) -> str:
    if not isinstance(job, str) or not job:
        raise CacheRequestError("a job must be named by a non-empty string", job)
    return job


def _sha256_of(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
