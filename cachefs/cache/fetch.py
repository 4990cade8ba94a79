"""Download objects from sources into a cache directory, verified and atomic.

Each object is streamed into a fresh ROOT/tmp file (O_EXCL) while its sha256
is computed; only a copy of exactly the expected size and digest is fsynced,
made 0444 and renamed into ROOT/objects, so nothing under objects/ is ever
partial or wrong. Callers hold the object's download lock (locks.py).

Sources are asked in order, in batches: all objects still wanted go to the
first source in their order in one ``fetch``; what a source does not have goes
to the next one. A bad copy (wrong digest, wrong size, source failing mid-way)
counts as one attempt and moves that source behind the others for that object,
so a peer with a damaged copy does not use up every attempt.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from cachefs.cache import layout
from cachefs.cache.report import Tally
from cachefs.errors import (
    CachefsError,
    CorruptObjectError,
    ObjectUnavailableError,
    SourceError,
)
from cachefs.source import Incoming, ObjectSource


@dataclass
class _Wanted:
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
    ) -> None:
        self.root = root
        self.tally = tally
        self.attempts = attempts
        self.on_installed = on_installed
        self._dirs: set[Path] = set()

    async def run(self, wanted: Mapping[str, int], sources: Sequence[ObjectSource]) -> None:
        """Install every wanted object (sha256 -> size).

        Raises ObjectUnavailableError (no source has some), CorruptObjectError
        (every copy was bad), SourceError (the last attempt's source failed),
        CacheDiskFullError / CacheIOError (writing failed; the temp file is gone).
        """
        pending = {sha: _Wanted(sha, size, list(sources)) for sha, size in wanted.items()}
        unavailable: list[str] = []
        for w in list(pending.values()):
            if not w.order:
                unavailable.append(w.sha)
                del pending[w.sha]
        try:
            while pending:
                for source in sources:
                    group = [w.sha for w in pending.values() if w.order[0] is source]
                    if group:
                        await self._fetch(source, group, pending, unavailable)
        finally:
            for directory in self._dirs:
                layout.fsync_dir(directory)
            self._dirs.clear()
        if unavailable:
            raise ObjectUnavailableError(sorted(unavailable), [s.label for s in sources])

    async def _fetch(
        self,
        source: ObjectSource,
        group: list[str],
        pending: dict[str, _Wanted],
        unavailable: list[str],
    ) -> None:
        asked = set(group)
        delivered: set[str] = set()  # the source sent it (good or bad)
        resolved: set[str] = set()  # installed, or counted as a bad copy
        stream = source.fetch(group)
        try:
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
                    self._failed(w, source, CorruptObjectError(sha, source.label, 0, problem))
        except SourceError as exc:
            # The object being received and every one not reached yet: one attempt each.
            for sha in group:
                if sha in pending and sha not in resolved:
                    self._failed(pending[sha], source, exc)
            return
        finally:
            await _close(stream)
        for sha in asked - delivered:  # the source does not have it: next source
            w = pending[sha]
            w.order.remove(source)
            if not w.order:
                del pending[sha]
                unavailable.append(sha)

    def _failed(self, w: _Wanted, source: ObjectSource, error: CachefsError) -> None:
        w.attempts += 1
        if w.attempts >= self.attempts:
            if isinstance(error, CorruptObjectError):
                raise CorruptObjectError(w.sha, source.label, w.attempts, error.problem)
            raise error
        w.order.remove(source)
        w.order.append(source)

    async def _receive(self, source: ObjectSource, w: _Wanted, incoming: Incoming) -> str | None:
        """Stream one object into place. None if installed, else what was wrong."""
        tmp = layout.part_path(self.root, w.sha)
        digest = hashlib.sha256()
        received = 0
        credited = 0
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise layout.io_error(tmp.parent, exc, w.size) from exc
        installed = False
        try:
            try:
                async for chunk in incoming.chunks:
                    received += len(chunk)
                    room = max(0, min(len(chunk), w.size - credited))
                    if room:
                        digest.update(chunk[:room])
                        layout.write_all(fd, chunk[:room])
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
            final = layout.object_path(self.root, w.sha)
            os.fchmod(fd, 0o444)
            os.fsync(fd)
            final.parent.mkdir(exist_ok=True)
            os.rename(tmp, final)
            installed = True
            self._dirs.add(final.parent)
            self.tally.object_done(0, hit=False)
            return None
        except OSError as exc:
            raise layout.io_error(tmp.parent, exc, w.size) from exc
        finally:
            os.close(fd)
            if not installed:
                layout.unlink_quietly(tmp)
