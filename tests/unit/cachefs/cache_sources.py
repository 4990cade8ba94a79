"""Test-only ObjectSources for node-cache tests: the cache is the part under test,
these stand in for the transports. Each counts what it was asked and served."""

from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from typing import Any

from cachefs.errors import SourceError
from cachefs.source import Incoming

CHUNK = 64 * 1024


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def blobs(*contents: bytes) -> dict[str, bytes]:
    return {digest(c): c for c in contents}


class MemorySource:
    """Serves bytes from a dict, in request order, in CHUNK-sized chunks."""

    def __init__(
        self,
        objects: dict[str, bytes],
        *,
        kind: str = "master",
        label: str = "",
        gate: asyncio.Event | None = None,
    ) -> None:
        self.objects = objects
        self.kind = kind
        self.label = label or f"memory-{kind}"
        self.requests: list[list[str]] = []
        self.served: Counter[str] = Counter()
        #: Set when an object's first chunk is about to be sent (its temp file exists).
        self.started = asyncio.Event()
        #: If given, each object's bytes wait for it.
        self.gate = gate

    async def fetch(self, wanted: Sequence[str]) -> AsyncIterator[Incoming]:
        self.requests.append(list(wanted))
        for sha in wanted:
            data = self.objects.get(sha)
            if data is None:
                continue
            self.served[sha] += 1
            yield Incoming(sha, len(data), self.gated(sha, self.body(sha, data)))

    async def gated(self, sha: str, data: bytes) -> AsyncIterator[bytes]:
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        async for chunk in self.chunks(sha, data):
            yield chunk

    def body(self, sha: str, data: bytes) -> bytes:
        """The bytes sent for the served[sha]-th copy (subclasses damage it)."""
        return data

    async def chunks(self, sha: str, data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), CHUNK):
            await asyncio.sleep(0)
            yield data[start : start + CHUNK]


class CorruptingSource(MemorySource):
    """Flips a byte (or, with ``short``, drops the last byte) of the first ``bad`` copies."""

    def __init__(self, objects: dict[str, bytes], bad: int, *, short: bool = False, **kw: Any):
        super().__init__(objects, **kw)
        self.bad = bad
        self.short = short

    def body(self, sha: str, data: bytes) -> bytes:
        if self.served[sha] > self.bad:
            return data
        if self.short:
            return data[:-1]
        return bytes([data[0] ^ 0xFF]) + data[1:]


class SlowSource(MemorySource):
    """Sleeps ``delay`` seconds before each chunk."""

    def __init__(self, objects: dict[str, bytes], delay: float = 0.01, **kw: Any) -> None:
        super().__init__(objects, **kw)
        self.delay = delay

    async def chunks(self, sha: str, data: bytes) -> AsyncIterator[bytes]:
        for start in range(0, len(data), CHUNK):
            await asyncio.sleep(self.delay)
            yield data[start : start + CHUNK]


class DyingSource(MemorySource):
    """Sends half of each of the first ``deaths`` copies, then fails as a broken connection."""

    def __init__(self, objects: dict[str, bytes], deaths: int, **kw: Any) -> None:
        super().__init__(objects, **kw)
        self.deaths = deaths

    async def chunks(self, sha: str, data: bytes) -> AsyncIterator[bytes]:
        if self.served[sha] > self.deaths:
            async for chunk in super().chunks(sha, data):
                yield chunk
            return
        yield data[: len(data) // 2]
        raise SourceError(self.label, "connection reset by peer")


class DownSource(MemorySource):
    """Cannot be reached: every fetch fails before sending anything."""

    async def fetch(self, wanted: Sequence[str]) -> AsyncIterator[Incoming]:
        self.requests.append(list(wanted))
        raise SourceError(self.label, "connection refused")
        yield  # an async generator, like the real sources
