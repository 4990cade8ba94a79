"""Environment roots kept after their job, for the next job with the same manifest.

Building a root is the costly step of a warm launch: a FUSE server process is
started and mounted, about 0.11 s on an idle core and 0.3 s when four nodes
share two cores (measured with ``/bin/true``'s manifest), against 5 ms for the
task itself. A root shows one manifest's files, read-only, and nothing a job
does changes it: each task binds ``/proc``, ``/dev``, its job's ``/tmp``, the
site's binds and the home in its own mount namespace. So the next job with the
same manifest (the id covers the files, their metadata and the owner) and the
same mount points (the binds this node has, the home) can run in the same root.
:meth:`RootPool.park` keeps a released job's root, :meth:`RootPool.take` hands
it to the next such job.

A parked root pins its objects under its own holder (``root:NAME``), so the
cache never evicts a file it shows. The pool is small (``keep`` roots, each
with its FUSE server process), a root idle for ``idle_s`` is removed, and
:meth:`RootPool.clear` makes room when a fill finds the cache full of pins.
A root that fetched a file late (launcher/node/roots/late.py) is never kept: that
file is its job's, outside the manifest the next job is recorded with. Nor is
one told anything of a directory someone other than root may change: the
kernel caches what a root learned for an hour (libfuse2's high-level API,
which fusepy binds, cannot invalidate an entry), and a later job must see a
file made in a work directory since. One whose every answer was of
directories only root may change (``stable``: /usr...) is kept.
The agent's start removes every root left under the roots dir and
:meth:`RootPool.unpin_stale` drops the pins of roots parked before a crash.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from cachefs.cache import NodeCache
from cachefs.errors import CachefsError
from launcher.node.roots.envroot import EnvRoot

log = logging.getLogger(__name__)

HOLDER_PREFIX = "root:"
#: Roots kept by default: each one is a FUSE server process (about 20 MB).
KEEP = 4
#: A parked root unused this long is removed.
IDLE_S = 600.0


@dataclass
class _Parked:
    root: EnvRoot
    #: the root's mount points for host dirs (site binds, home: EnvRoot.binds)
    mounts: tuple[str, ...]
    since: float

    @property
    def holder(self) -> str:
        return f"{HOLDER_PREFIX}{self.root.path.name}"


class RootPool:
    """Idle environment roots by (manifest id, mount points of host dirs). Its methods may be called
    from worker threads (the agent builds and removes roots off its loop)."""

    def __init__(
        self,
        cache: NodeCache,
        *,
        keep: int = KEEP,
        idle_s: float = IDLE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cache = cache
        self.keep = keep
        self.idle_s = idle_s
        self.clock = clock
        self._parked: list[_Parked] = []  # oldest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._parked)

    def take(
        self, manifest_id: str, mounts: tuple[str, ...], *, late: bool = False
    ) -> EnvRoot | None:
        """A parked root showing ``manifest_id`` with exactly the mount points
        ``mounts`` for host dirs (site binds, home), that may fetch late files
        if and only if ``late``, now the caller's (its pin is dropped: pin the
        job's objects first), or None."""
        self.expire()
        with self._lock:
            found = next(
                (
                    p
                    for p in reversed(self._parked)  # the most recently used first
                    if p.root.manifest.id == manifest_id
                    and p.mounts == mounts
                    and (p.root.late is not None) == late
                ),
                None,
            )
            if found is None:
                return None
            self._parked.remove(found)
        self.cache.unpin(found.holder)
        return found.root

    def park(self, root: EnvRoot, mounts: tuple[str, ...]) -> None:
        """Keep ``root`` (its tasks must be gone) for a later job; with ``keep`` 0,
        or when its objects cannot be pinned, it is removed instead. The oldest
        parked root goes when the pool is full. Raises EnvRootError when a
        root to remove cannot be deleted."""
        parked = _Parked(root, mounts, self.clock())
        if self.keep <= 0:
            root.remove()
            return
        try:
            self.cache.pin(parked.holder, root.manifest.objects())
        except CachefsError as exc:  # an object evicted under it: not worth keeping
            log.warning("not keeping the root %s: %s", root.path, exc)
            root.remove()
            return
        with self._lock:
            self._parked.append(parked)
            surplus = self._parked[: max(0, len(self._parked) - self.keep)]
        self._drop(surplus)
        self.expire()

    def expire(self) -> None:
        """Remove the roots parked longer than ``idle_s``."""
        now = self.clock()
        with self._lock:
            old = [p for p in self._parked if now - p.since > self.idle_s]
        self._drop(old)

    def clear(self) -> int:
        """Remove every parked root; returns how many there were."""
        with self._lock:
            every = list(self._parked)
        self._drop(every)
        return len(every)

    def _drop(self, victims: list[_Parked]) -> None:
        with self._lock:
            victims = [p for p in victims if p in self._parked]
            for parked in victims:
                self._parked.remove(parked)
        for parked in victims:
            try:
                parked.root.remove()
            finally:
                self.cache.unpin(parked.holder)

    @staticmethod
    def unpin_stale(cache: NodeCache) -> list[str]:
        """Drop the pins of roots parked by an agent that is gone (call at start,
        before any root is parked). Returns the holders dropped."""
        stale = [h for h in cache.usage().jobs if h.startswith(HOLDER_PREFIX)]
        for holder in stale:
            cache.unpin(holder)
        return stale
