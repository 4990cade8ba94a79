"""Download objects from sources into a cache directory, verified and atomic.

Each object is streamed into a fresh ROOT/tmp file (O_EXCL) while its sha256
is computed; only a copy of exactly the expected size and digest is fsynced,
made 0444 and renamed into ROOT/objects, so nothing under objects/ is ever
partial or wrong. Callers hold the object's download lock (locks.py).

Sources are asked in order, in batches: all objects still wanted go to the
first source in their order in one ``fetch``; what a source does not have goes
to the next one. A bad copy (wrong digest or size) uses one of the object's
``attempts`` and moves that source behind the others for that object, so a
peer with a damaged copy does not use up every attempt. A source that breaks
off (SourceError: unreachable, connection lost mid-object) moves behind the
others for what it had not delivered; after ``attempts`` such failures in one
fill it is dropped, and an object left without any source raises its error.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cachefs.cache import layout
from cachefs.cache.flights import Flights
from cachefs.cache.report import Tally
from cachefs.errors import (
    CorruptObjectError,
    ObjectUnavailableError,
    SourceError,
)
from cachefs.source import Incoming, ObjectSource


@dataclass
class Wanted:
    """An object still to fetch, and the sources left to try, in order."""

    sha: str
    size: int
    order: list[ObjectSource]
    attempts: int = 0


async def _drain(chunks: AsyncIterator[bytes]) -> None:
    async for _ in chunks:
        pass


async def _close(stream: AsyncIterator[Incoming]) -> None:
    aclose = getattr(stream, "aclose", None)
    if aclose is not None:
        await aclose()


class Downloader:
    """Fetches a set of objects for one fill; raises as soon as one cannot be had."""

    def __init__(
        self,
        root: Path,
        tally: Tally,
        attempts: int,
        on_installed: Callable[[str], None],
        flights: Flights | None = None,
    ) -> None:
        self.root = root
        self.flights = flights
        self.tally = tally
        self.attempts = attempts
        self.on_installed = on_installed
        self._root = str(root)
        self._tmp_dir = f"{root}/{layout.TMP}"
        self._dirs: set[str] = set()
        self._pending: dict[str, Wanted] = {}
        self._source_failures: dict[int, int] = {}  # id(source) -> failures in this fill

    async def run(self, wanted: Mapping[str, int], sources: Sequence[ObjectSource]) -> None:
        """Install every wanted object (sha256 -> size).

        Raises ObjectUnavailableError (no source has some), CorruptObjectError
        (every copy was bad), SourceError (the last attempt's source failed),
        CacheDiskFullError / CacheIOError (writing failed; the temp file is gone).
        """
        pending = self._pending = {
            sha: Wanted(sha, size, list(sources)) for sha, size in wanted.items()
        }
        unavailable = [w.sha for w in pending.values() if not w.order]
        for sha in unavailable:
            del pending[sha]
        try:
            while pending:
                for source in sources:
                    group = [w.sha for w in pending.values() if w.order and w.order[0] is source]
                    if group:
                        unavailable += await self._fetch(source, group)
        finally:
            for directory in self._dirs:
                layout.fsync_dir(directory)
            self._dirs.clear()
        if unavailable:
            raise ObjectUnavailableError(sorted(unavailable), [s.label for s in sources])

    async def _fetch(self, source: ObjectSource, group: list[str]) -> list[str]:
        """One ``fetch`` of ``group`` from ``source``. Returns the objects that
        turned out to be in no source."""
        pending = self._pending
        asked = set(group)
        delivered: set[str] = set()  # the source sent it (good or bad)
        resolved: set[str] = set()  # installed, or counted as a bad copy
        stream: AsyncIterator[Incoming] | None = None
        try:
            stream = source.fetch(group)
            async for incoming in stream:
                sha = incoming.sha256
                if sha not in asked or sha in delivered:
                    await _drain(incoming.chunks)  # not asked for: keep the stream in step
                    continue
                delivered.add(sha)
                w = pending[sha]
                problem = await self._receive(source, w, incoming)
                resolved.add(sha)
                if problem is None:
                    del pending[sha]
                    self.on_installed(sha)
                else:
                    self._failed(w, source, problem)
        except SourceError as exc:
            self._source_failed(source, exc, set(group) - resolved)
            return []
        finally:
            if stream is not None:
                await _close(stream)
        unavailable = []
        for sha in asked - delivered:  # the source does not have it: next source
            w = pending[sha]
            w.order.remove(source)
            if not w.order:
                del pending[sha]
                unavailable.append(sha)
        return unavailable

    def _failed(self, w: Wanted, source: ObjectSource, problem: str) -> None:
        """A bad copy: one attempt of the object used; its source goes to the back."""
        w.attempts += 1
        if w.attempts >= self.attempts:
            raise CorruptObjectError(w.sha, source.label, w.attempts, problem)
        w.order.remove(source)
        w.order.append(source)

    def _source_failed(self, source: ObjectSource, exc: SourceError, unserved: set[str]) -> None:
        """The source broke off: the objects it did not deliver go to the next
        source; after ``attempts`` failures in one fill it is not asked again.
        Raises ``exc`` when an object has no source left."""
        failures = self._source_failures[id(source)] = self._source_failures.get(id(source), 0) + 1
        for w in self._pending.values():
            if failures >= self.attempts and source in w.order:
                w.order.remove(source)
            elif w.sha in unserved:
                w.order.remove(source)
                w.order.append(source)
            if not w.order:
                raise exc

    async def _receive(self, source: ObjectSource, w: Wanted, incoming: Incoming) -> str | None:
        """Stream one object into place. None if installed, else what was wrong."""
        tmp = layout.part_file(self._root, w.sha)
        digest = hashlib.sha256()
        received = 0
        credited = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise layout.io_error(self._tmp_dir, exc, w.size) from exc
        installed = False
        # Peers stream the part file as it grows (flights.py).
        flight = self.flights.begin(w.sha, w.size, tmp) if self.flights is not None else None
        try:
            try:
                async for chunk in incoming.chunks:
                    received += len(chunk)
                    room = max(0, min(len(chunk), w.size - credited))
                    if room:
                        digest.update(chunk[:room])
                        layout.write_all(fd, chunk[:room])
                        if flight is not None:
                            self.flights.advance(flight, room)  # type: ignore[union-attr]
                    credited += room
                    self.tally.received(source.kind, len(chunk), room)
            except SourceError:
                self.tally.discard(credited)
                raise
            if received != w.size:
                self.tally.discard(credited)
                return f"{received} bytes, expected {w.size}"
            if digest.hexdigest() != w.sha:
                self.tally.discard(credited)
                return f"content has sha256 {digest.hexdigest()}"
            final = layout.object_file(self._root, w.sha)
            os.fchmod(fd, 0o444)
            os.fsync(fd)
            try:
                os.rename(tmp, final)
            except FileNotFoundError:  # the first object of its objects/xx directory
                os.makedirs(os.path.dirname(final), exist_ok=True)
                os.rename(tmp, final)
            installed = True
            self._dirs.add(os.path.dirname(final))
            self.tally.object_done(0, hit=False)
            return None
        except OSError as exc:
            raise layout.io_error(self._tmp_dir, exc, w.size) from exc
        finally:
            os.close(fd)
            if not installed:
                layout.unlink_quietly(tmp)
            if flight is not None:
                self.flights.end(flight, installed)  # type: ignore[union-attr]
