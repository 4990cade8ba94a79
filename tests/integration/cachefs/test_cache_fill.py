"""The node cache filled through the real transports: the object service over
127.0.0.1 (HttpSource) and a peer's cache directory (DirectorySource)."""

from __future__ import annotations

import asyncio
import os
import random
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from cachefs.cache import FillProgress, JobPins, NodeCache
from cachefs.client import SMALL_LIMIT, HttpSource
from cachefs.dirsource import DirectorySource
from cachefs.errors import ObjectUnavailableError, SourceAuthError
from cachefs.store import Store
from tests.integration.cachefs.objects_server import SECRET, running

MiB = 1 << 20


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


@pytest.fixture
def store(tmp_path: Path) -> tuple[Store, dict[str, bytes]]:
    """A store with a closure-like mix: many small objects, an empty one, two
    larger than the client's batch limit (fetched by GET)."""
    rng = random.Random(4)
    contents = [rng.randbytes(rng.randrange(1, 60_000)) for _ in range(120)]
    contents += [b"", os.urandom(SMALL_LIMIT + 1), os.urandom(3 * MiB)]
    s = Store(tmp_path / "store")
    objects = {}
    for data in contents:
        digest, _ = s.ingest_bytes(data)
        objects[digest] = data
    return s, objects


def sizes(objects: dict[str, bytes]) -> dict[str, int]:
    return {digest: len(data) for digest, data in objects.items()}


def test_fill_from_the_object_service(
    tmp_path: Path, store: tuple[Store, dict[str, bytes]]
) -> None:
    s, objects = store
    total = sum(map(len, objects.values()))
    calls: list[FillProgress] = []

    async def scenario() -> None:
        async with running(s) as served:
            master = HttpSource(served.url, SECRET)
            with NodeCache(tmp_path / "cache", 64 * MiB) as cache:
                report = await cache.fill(sizes(objects), [master], job="j1", progress=calls.append)
                assert (report.objects_total, report.objects_hit) == (len(objects), 0)
                assert report.bytes_from == {"master": total}
                for digest, data in objects.items():
                    assert cache.object_path(digest).read_bytes() == data
                assert cache.usage().jobs == {"j1": JobPins(len(objects), total)}
            requests = len(served.seen)
            assert requests < len(objects) // 10  # batched, not one request per object
            with NodeCache(tmp_path / "cache", 64 * MiB) as reopened:
                again = await reopened.fill(sizes(objects), [master], job="j2")
            assert again.objects_hit == len(objects)
            assert len(served.seen) == requests  # the service was not asked again

    run(scenario())
    assert calls[-1] == FillProgress(len(objects), len(objects), total, total)
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_refused_token_fails_the_fill_cleanly(
    tmp_path: Path, store: tuple[Store, dict[str, bytes]]
) -> None:
    s, objects = store

    async def scenario() -> None:
        async with running(s) as served:
            with NodeCache(tmp_path / "cache", 64 * MiB) as cache:
                with pytest.raises(SourceAuthError):
                    await cache.fill(sizes(objects), [HttpSource(served.url, "wrong")], job="j1")
                usage = cache.usage()
                assert (usage.objects, usage.jobs) == (0, {})

    run(scenario())
    assert list((tmp_path / "cache" / "tmp").iterdir()) == []


def test_peer_cache_directory_first_with_a_damaged_copy(
    tmp_path: Path, store: tuple[Store, dict[str, bytes]]
) -> None:
    """A node fills from a peer's cache directory and the master: what the peer
    has comes from it, a damaged peer copy is caught and fetched from the master."""
    s, objects = store
    digests = sorted(objects)
    on_peer = {d: objects[d] for d in digests[:60]}
    damaged = next(d for d in digests[:60] if len(objects[d]) > 0)

    async def scenario() -> None:
        async with running(s) as served:
            master = HttpSource(served.url, SECRET)
            with NodeCache(tmp_path / "peer", 64 * MiB) as peer:
                await peer.fill(sizes(on_peer), [DirectorySource(s.root, kind="master")])
                path = peer.object_path(damaged)
                path.chmod(0o644)
                path.write_bytes(bytes(len(objects[damaged])))  # same size, zeroes
            with NodeCache(tmp_path / "node", 64 * MiB) as node:
                report = await node.fill(
                    sizes(objects), [DirectorySource(tmp_path / "peer"), master]
                )
                for digest, data in objects.items():
                    assert node.object_path(digest).read_bytes() == data
        peer_bytes = sum(len(d) for d in on_peer.values())
        assert report.discarded == 1
        assert report.bytes_from["peer"] == peer_bytes  # the damaged copy was received too
        assert report.bytes_from["master"] == sum(map(len, objects.values())) - peer_bytes + len(
            objects[damaged]
        )

    run(scenario())


def test_objects_the_store_lacks_are_named(
    tmp_path: Path, store: tuple[Store, dict[str, bytes]]
) -> None:
    s, objects = store
    gone = "0" * 64

    async def scenario() -> None:
        async with running(s) as served:
            with NodeCache(tmp_path / "cache", 64 * MiB) as cache:
                wanted = {**sizes(objects), gone: 10}
                with pytest.raises(ObjectUnavailableError) as err:
                    await cache.fill(wanted, [HttpSource(served.url, SECRET)], job="j1")
                assert err.value.missing == [gone]
                assert cache.usage().jobs == {}

    run(scenario())
