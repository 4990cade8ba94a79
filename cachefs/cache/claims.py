"""Who downloads which object: one task per object in a process, one process per
object on a node.

In a process, a map digest -> (future, size) of downloads in flight: a fill
wanting an object already in flight waits for that future instead of asking a
source. The future resolves True once the object is installed, False if that
download failed, in which case each waiter tries it again with its own sources
(they may have a source the failed fill lacked).

Across processes, the download lock of the object (locks.py) is taken with a
non-blocking try; an object another process holds is polled for, then found
installed (or downloaded by us if that process failed). A fill never waits for
a lock while holding another, so two processes cannot deadlock.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from cachefs.cache import layout
from cachefs.cache.fetch import Downloader
from cachefs.cache.flights import Flights
from cachefs.cache.locks import LockFile
from cachefs.cache.report import Tally
from cachefs.source import ObjectSource

#: Polling interval bounds (seconds) while another process downloads an object.
POLL_MIN, POLL_MAX = 0.01, 0.2


class Claims:
    def __init__(self, root: Path, lock: LockFile, flights: Flights | None = None) -> None:
        self.root = root
        self.lock = lock
        self.flights = flights
        self._root = str(root)
        self._inflight: dict[str, tuple[asyncio.Future[bool], int]] = {}

    def __contains__(self, sha: object) -> bool:
        return sha in self._inflight

    def bytes_pending(self, installed: Mapping[str, object]) -> int:
        """Bytes being downloaded in this process that are not in ``installed`` yet."""
        return sum(size for sha, (_, size) in self._inflight.items() if sha not in installed)

    def _installed(self, sha: str) -> bool:
        return os.path.isfile(layout.object_file(self._root, sha))

    async def obtain(
        self,
        missing: Mapping[str, int],
        sources: Sequence[ObjectSource],
        tally: Tally,
        attempts: int,
    ) -> None:
        """Make every missing object (sha256 -> size) installed, downloading only
        what no other fill here or process on this node is downloading."""
        loop = asyncio.get_running_loop()
        remaining = dict(missing)
        while remaining:
            claimed: dict[str, int] = {}
            waiting: dict[str, asyncio.Future[bool]] = {}
            for sha, size in remaining.items():
                if sha in self._inflight:
                    waiting[sha] = self._inflight[sha][0]
                elif self._installed(sha):
                    tally.object_done(size, hit=True)
                else:
                    self._inflight[sha] = (loop.create_future(), size)
                    claimed[sha] = size
            waiter = asyncio.ensure_future(_wait_all(waiting)) if waiting else None
            try:
                if claimed:
                    await self._download(claimed, sources, tally, attempts)
                failed = await waiter if waiter is not None else set()
            finally:
                if waiter is not None and not waiter.done():
                    waiter.cancel()
            for sha in waiting.keys() - failed:
                tally.object_done(remaining[sha], hit=True)
            remaining = {sha: remaining[sha] for sha in failed}

    def _settle(self, sha: str, ok: bool) -> None:
        entry = self._inflight.pop(sha, None)
        if entry is not None and not entry[0].done():
            entry[0].set_result(ok)

    async def _download(
        self,
        claimed: Mapping[str, int],
        sources: Sequence[ObjectSource],
        tally: Tally,
        attempts: int,
    ) -> None:
        held: set[str] = set()

        def installed(sha: str) -> None:
            if sha in held:
                held.discard(sha)
                self.lock.unlock_object(sha)
            self._settle(sha, True)

        def found(sha: str) -> bool:
            """After taking its lock: was the object installed meanwhile?"""
            if not self._installed(sha):
                return False
            tally.object_done(claimed[sha], hit=True)
            installed(sha)
            return True

        fetcher = Downloader(self.root, tally, attempts, installed, self.flights)
        try:
            busy: list[str] = []
            for sha in claimed:
                if self.lock.try_lock_object(sha):
                    held.add(sha)
                else:
                    busy.append(sha)
            mine = {sha: claimed[sha] for sha in sorted(held) if not found(sha)}
            if mine:
                await fetcher.run(mine, sources)
            delay = POLL_MIN
            while busy:
                for sha in [s for s in busy if self.lock.try_lock_object(s)]:
                    busy.remove(sha)
                    held.add(sha)
                    if not found(sha):
                        await fetcher.run({sha: claimed[sha]}, sources)
                    delay = POLL_MIN
                if busy:
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, POLL_MAX)
        finally:
            for sha in held:
                self.lock.unlock_object(sha)
            for sha in claimed:
                self._settle(sha, False)


async def _wait_all(waiting: Mapping[str, asyncio.Future[bool]]) -> set[str]:
    """Wait for other fills' downloads; return the digests whose download failed."""
    failed: set[str] = set()
    for sha, future in waiting.items():
        # shield: cancelling this waiter must not cancel the other fill's download.
        if not await asyncio.shield(future):
            failed.add(sha)
    return failed
