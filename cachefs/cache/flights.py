"""Downloads in progress in this process, so peers can stream them as they grow.

A node that serves its cache to peers (cut-through: a child need not wait
until its parent has the whole 48 MB file) answers for an object in one of
four states:

- installed: the peer service opens ``ROOT/objects/xx/<sha256>`` as usual;
- in flight: the Downloader is writing its part file; :meth:`Flights.track`
  returns a :class:`Growing` whose :meth:`~Growing.ranges` follow the bytes
  written, end once the object is installed and raise GrowingFailedError when
  the download failed (bad digest, source lost), so the receiver sees its
  stream broken off and asks its next source;
- expected: a running fill here wants it but has not started writing it;
  ``track`` waits until it is in flight or installed, or the fill ends;
- absent: ``track`` returns None at once and the peer answers "not here".

Jobs: a peer names the job it fills for; :meth:`Flights.join` waits (bounded)
until a fill for that job has started here, so a child asking before its
parent got its own ``prepare`` is not told "not here" too early.

Everything runs in the one event loop the NodeCache serves; the Downloader
writes synchronously between awaits, so a Flight's ``written`` bytes are on
disk when a reader sees the count.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter, OrderedDict
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from cachefs.cache import layout
from cachefs.errors import GrowingFailedError

#: Seconds a peer request naming a job waits for that job's fill to start here.
JOIN_WAIT_S = 5.0
#: Jobs remembered as started (oldest forgotten first).
JOBS_KEPT = 1024

RUNNING, INSTALLED, FAILED = "running", "installed", "failed"


class Flight:
    """One object being written to its part file."""

    def __init__(self, sha: str, size: int, path: str) -> None:
        self.sha = sha
        self.size = size
        self.path = path
        self.written = 0
        self.state = RUNNING
        # its own event: readers of this object are not woken by other downloads
        self._changed = asyncio.Event()

    def notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        """Return at this flight's next write or end."""
        await self._changed.wait()


class Growing:
    """An object in flight, opened for reading by a peer handler (close it)."""

    def __init__(self, flight: Flight, flights: Flights, file: BinaryIO) -> None:
        self._flight = flight
        self._flights = flights
        self.file = file
        self.size = flight.size

    def fileno(self) -> int:
        return self.file.fileno()

    def close(self) -> None:
        self.file.close()

    async def ranges(self, start: int, end: int) -> AsyncIterator[tuple[int, int]]:
        """(offset, count) of bytes in ``[start, end)`` as they are written.

        Ends once the object is installed (never on a copy that fails its
        check); raises GrowingFailedError when its download failed."""
        flight = self._flight
        offset = start
        while True:
            ready = min(flight.written, end)
            if ready > offset:
                yield offset, ready - offset
                offset = ready
                continue
            if flight.state == FAILED:
                raise GrowingFailedError(flight.sha, offset)
            if offset >= end and flight.state == INSTALLED:
                return
            await flight.changed()


class Flights:
    """Downloads in flight and objects expected by running fills, in one process."""

    def __init__(self, root: Path, *, join_wait_s: float = JOIN_WAIT_S) -> None:
        self._root = str(root)
        self.join_wait_s = join_wait_s
        self._flights: dict[str, Flight] = {}
        self._expected: Counter[str] = Counter()
        self._jobs: OrderedDict[str, None] = OrderedDict()
        self._changed = asyncio.Event()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self) -> None:
        """Return at the next flight begun or ended, expectation or job change."""
        await self._changed.wait()

    # --- the writing side: fills and the Downloader ------------------------------

    @contextmanager
    def filling(self, job: str | None, shas: Iterable[str]) -> Iterator[None]:
        """A fill for ``job`` will have ``shas`` (not yet installed) while in this block."""
        wanted = list(shas)
        self._expected.update(wanted)
        if job is not None:
            self.started(job)
        else:
            self._notify()
        try:
            yield
        finally:
            self._expected.subtract(wanted)
            for sha in wanted:
                if self._expected[sha] <= 0:
                    del self._expected[sha]
            self._notify()

    def started(self, job: str) -> None:
        """A fill for ``job`` began (or ended before it could): peers waiting for it go on."""
        self._jobs[job] = None
        self._jobs.move_to_end(job)
        while len(self._jobs) > JOBS_KEPT:
            self._jobs.popitem(last=False)
        self._notify()

    def begin(self, sha: str, size: int, path: str) -> Flight:
        flight = self._flights[sha] = Flight(sha, size, path)
        self._notify()
        return flight

    def advance(self, flight: Flight, count: int) -> None:
        """``count`` more bytes of ``flight`` are written to its part file."""
        if count:
            flight.written += count
            flight.notify()

    def end(self, flight: Flight, installed: bool) -> None:
        """The download is installed (its part file renamed into place) or failed."""
        flight.state = INSTALLED if installed else FAILED
        if self._flights.get(flight.sha) is flight:
            del self._flights[flight.sha]
        flight.notify()
        self._notify()

    # --- the reading side: the peer service ----------------------------------------

    async def join(self, job: str) -> None:
        """Wait until a fill for ``job`` has started here, at most ``join_wait_s``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.join_wait_s
        while job not in self._jobs:
            left = deadline - loop.time()
            if left <= 0:
                return
            try:
                await asyncio.wait_for(self.changed(), left)
            except TimeoutError:
                return

    async def track(self, sha: str) -> Growing | None:
        """The object's download in progress, opened; None once it is installed or
        when no fill here will have it. Waits while it is only expected."""
        while True:
            flight = self._flights.get(sha)
            if flight is not None:
                fd = os.open(flight.path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                return Growing(flight, self, os.fdopen(fd, "rb"))
            if sha not in self._expected or os.path.isfile(layout.object_file(self._root, sha)):
                return None
            await self.changed()
