"""Peer object services over real HTTP on 127.0.0.1: a node cache served with its
downloads in flight (cut-through), the job gate, and every way a peer can fail
a child: a corrupt copy, a parent that dies mid-stream, a refused token.

The parent's own upstream is a test source (tests/unit/cachefs/cache_sources)
that holds its bytes back at will; the master is the real object service over a
real store; parent and child are real NodeCaches, the peer service is real.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
from collections.abc import AsyncIterator, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cachefs.cache import FillReport, NodeCache
from cachefs.client import HttpSource
from cachefs.service import JOB_HEADER, base_url, make_app, secret_token_check, serve_app
from cachefs.source import Incoming, ObjectSource
from cachefs.store import Store, StoreReader
from tests.integration.cachefs.objects_server import SECRET, Served, running
from tests.unit.cachefs.cache_sources import CHUNK, MemorySource

BIG = os.urandom(6 << 20)  # above the client's batch limit: fetched by GET
SMALL = b"a small library\n" * 64  # travels in a batch frame
BUDGET = 1 << 30
WAIT_S = 30.0  # a liveness bound for polls, never asserted as a duration
JOB = "7"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


OBJECTS = {sha(BIG): len(BIG), sha(SMALL): len(SMALL)}


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


class HalfwaySource(MemorySource):
    """Sends small objects first (as the object service's batches do), then the
    first half of BIG, then waits for ``rest`` (set it to go on); with
    ``corrupt``, BIG's second half has a flipped byte."""

    def __init__(self, objects: dict[str, bytes], *, corrupt: bool = False) -> None:
        super().__init__(objects, kind="master", label="upstream")
        self.rest = asyncio.Event()
        self.corrupt = corrupt

    def fetch(self, wanted: Sequence[str]) -> AsyncIterator[Incoming]:
        return super().fetch(sorted(wanted, key=lambda s: len(self.objects.get(s, b""))))

    async def chunks(self, sha256: str, data: bytes) -> AsyncIterator[bytes]:
        if data is not BIG and len(data) != len(BIG):
            async for chunk in super().chunks(sha256, data):
                yield chunk
            return
        half = len(data) // 2
        if self.corrupt:
            data = data[:-1] + bytes([data[-1] ^ 0xFF])
        for start in range(0, half, CHUNK):
            yield data[start : min(start + CHUNK, half)]
        await self.rest.wait()
        for start in range(half, len(data), CHUNK):
            yield data[start : start + CHUNK]


@contextlib.asynccontextmanager
async def serving(cache: NodeCache, secret: str = SECRET) -> AsyncIterator[web.AppRunner]:
    """``cache`` served to peers on a free loopback port."""
    app = make_app(StoreReader(cache.root), secret_token_check(secret), flights=cache.flights)
    runner = await serve_app(app, "127.0.0.1", 0, shutdown_timeout=0.2)
    try:
        yield runner
    finally:
        await runner.cleanup()


def peer(runner: web.AppRunner, token: str = SECRET) -> HttpSource:
    return HttpSource(base_url(runner), token, kind="peer", headers={JOB_HEADER: JOB})


def master_store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "store")
    for data in (BIG, SMALL):
        store.ingest_bytes(data)
    return store


async def half_written(cache: NodeCache) -> None:
    """Return once ``cache`` has written at least half of BIG (its download runs)."""
    growing = await cache.flights.track(sha(BIG))
    assert growing is not None, f"{cache.root} is not downloading BIG"
    try:
        async for offset, count in growing.ranges(0, len(BIG)):
            if offset + count >= len(BIG) // 2:
                return
    finally:
        growing.close()


def installed_right(cache: NodeCache) -> None:
    for data in (BIG, SMALL):
        path = cache.object_path(sha(data))
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sha(data)


async def fill(cache: NodeCache, sources: Sequence[ObjectSource]) -> FillReport:
    return await cache.fill(OBJECTS, sources, job=JOB)


@dataclass
class Nodes:
    parent: NodeCache
    child: NodeCache
    served: Served  # the master's object service

    def sources(self, runner: web.AppRunner, token: str = SECRET) -> list[ObjectSource]:
        """The child's sources: its parent's peer service, then the master."""
        return [peer(runner, token), HttpSource(self.served.url, SECRET)]


@contextlib.asynccontextmanager
async def two_nodes(tmp_path: Path) -> AsyncIterator[Nodes]:
    store = master_store(tmp_path)
    with (
        NodeCache(tmp_path / "parent", BUDGET) as parent,
        NodeCache(tmp_path / "child", BUDGET) as child,
    ):
        async with running(store) as served:
            yield Nodes(parent, child, served)


def test_child_streams_an_object_its_parent_is_still_downloading(tmp_path: Path) -> None:
    async def main() -> None:
        upstream = HalfwaySource({sha(BIG): BIG, sha(SMALL): SMALL})
        async with two_nodes(tmp_path) as n, serving(n.parent) as runner:
            parent_fill = asyncio.create_task(fill(n.parent, [upstream]))
            await asyncio.wait_for(half_written(n.parent), WAIT_S)
            child_fill = asyncio.create_task(fill(n.child, n.sources(runner)))
            # Half of BIG reaches the child while the parent still lacks the rest.
            await asyncio.wait_for(half_written(n.child), WAIT_S)
            assert not upstream.rest.is_set() and not parent_fill.done()
            upstream.rest.set()
            report = await asyncio.wait_for(child_fill, WAIT_S)
            await parent_fill
            assert n.served.seen == []  # the master sent the child nothing
            assert report.bytes_from == {"peer": len(BIG) + len(SMALL)}
            installed_right(n.child)

    run(main())


def test_child_waits_for_its_parent_to_start_the_job(tmp_path: Path) -> None:
    """The child asks first; the parent's fill of the job starts later and wants
    SMALL only: SMALL comes from the parent, BIG ("not here") from the master."""

    async def main() -> None:
        async with two_nodes(tmp_path) as n, serving(n.parent) as runner:
            child_fill = asyncio.create_task(fill(n.child, n.sources(runner)))
            await asyncio.sleep(0.3)  # let the child's request reach the parent first
            upstream = MemorySource({sha(SMALL): SMALL}, label="upstream")
            await n.parent.fill({sha(SMALL): len(SMALL)}, [upstream], job=JOB)
            report = await asyncio.wait_for(child_fill, WAIT_S)
            assert report.bytes_from == {"peer": len(SMALL), "master": len(BIG)}
            installed_right(n.child)

    run(main())


def test_a_corrupt_copy_at_the_parent_is_never_installed_at_the_child(tmp_path: Path) -> None:
    async def main() -> None:
        bad = HalfwaySource({sha(BIG): BIG, sha(SMALL): SMALL}, corrupt=True)
        good = MemorySource({sha(BIG): BIG, sha(SMALL): SMALL}, label="upstream-2")
        async with two_nodes(tmp_path) as n, serving(n.parent) as runner:
            parent_fill = asyncio.create_task(fill(n.parent, [bad, good]))
            await asyncio.wait_for(half_written(n.parent), WAIT_S)
            child_fill = asyncio.create_task(fill(n.child, n.sources(runner)))
            await asyncio.wait_for(half_written(n.child), WAIT_S)  # the bad copy, relayed
            bad.rest.set()
            report = await asyncio.wait_for(child_fill, WAIT_S)
            await parent_fill
            assert report.bytes_from.get("master", 0) >= len(BIG)
            assert ("GET", f"/objects/{sha(BIG)}") in n.served.seen
            installed_right(n.child)
            installed_right(n.parent)

    run(main())


def test_a_parent_that_dies_mid_stream_leaves_the_child_to_the_master(tmp_path: Path) -> None:
    async def main() -> None:
        upstream = HalfwaySource({sha(BIG): BIG, sha(SMALL): SMALL})
        async with two_nodes(tmp_path) as n:
            parent_fill = asyncio.create_task(fill(n.parent, [upstream]))
            async with serving(n.parent) as runner:
                await asyncio.wait_for(half_written(n.parent), WAIT_S)
                child_fill = asyncio.create_task(fill(n.child, n.sources(runner)))
                await asyncio.wait_for(half_written(n.child), WAIT_S)
            # the parent's service is gone, mid-object
            report = await asyncio.wait_for(child_fill, WAIT_S)
            upstream.rest.set()
            await parent_fill
            assert report.bytes_from["peer"] >= len(BIG) // 2
            assert report.bytes_from["master"] >= len(BIG) // 2
            installed_right(n.child)

    run(main())


@pytest.mark.slow  # the refused request first waits out the job-join bound: 5 s
def test_a_child_refused_by_the_token_check_falls_back_to_the_master(tmp_path: Path) -> None:
    async def main() -> None:
        async with two_nodes(tmp_path) as n:
            await n.parent.fill(OBJECTS, [MemorySource({sha(BIG): BIG, sha(SMALL): SMALL})])
            async with serving(n.parent) as runner:
                report = await fill(n.child, n.sources(runner, "not-the-secret"))
            assert report.bytes_from == {"master": len(BIG) + len(SMALL)}
            installed_right(n.child)

    run(main())
