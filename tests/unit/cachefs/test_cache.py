"""NodeCache on real files under tmp_path, fed by the test-only sources of cache_sources."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachefs.cache import FillProgress, JobPins, NodeCache
from cachefs.errors import (
    CacheFullError,
    CacheMetadataError,
    CacheRequestError,
    CorruptObjectError,
    ObjectNotCachedError,
    ObjectUnavailableError,
    SourceError,
)
from tests.unit.cachefs.cache_sources import (
    CorruptingSource,
    DownSource,
    DyingSource,
    MemorySource,
    SlowSource,
    blobs,
    digest,
)

MiB = 1 << 20
A, B, C, D = (bytes([n]) * (1000 * (n + 1)) for n in range(4))
SA, SB, SC, SD = (digest(x) for x in (A, B, C, D))
ALL = blobs(A, B, C, D)


def sizes(*contents: bytes) -> dict[str, int]:
    return {digest(c): len(c) for c in contents}


def tmp_files(root: Path) -> list[str]:
    return sorted(os.listdir(root / "tmp"))


@pytest.fixture
def cache(tmp_path: Path) -> Iterator[NodeCache]:
    c = NodeCache(tmp_path / "cache", 10 * MiB)
    yield c
    c.close()


def test_fill_installs_verified_read_only_objects_then_hits(cache: NodeCache) -> None:
    source = MemorySource(ALL)
    report = asyncio.run(cache.fill(sizes(A, B), [source]))
    assert (report.objects_total, report.objects_hit, report.bytes_total) == (2, 0, len(A + B))
    assert report.bytes_from == {"master": len(A + B)}
    path = cache.object_path(SA)
    assert path == cache.root / "objects" / SA[:2] / SA
    assert path.read_bytes() == A
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    before = path.stat()
    again = asyncio.run(cache.fill(sizes(A, B), [source]))
    assert (again.objects_hit, again.bytes_from) == (2, {})
    after = path.stat()  # a use moves atime (the LRU key), never mtime (a farm shows it)
    assert after.st_atime_ns > before.st_atime_ns
    assert after.st_mtime_ns == before.st_mtime_ns
    assert len(source.requests) == 1
    assert tmp_files(cache.root) == []


def test_objects_a_source_lacks_come_from_the_next(cache: NodeCache) -> None:
    peer = MemorySource(blobs(A), kind="peer")
    master = MemorySource(ALL)
    report = asyncio.run(cache.fill(sizes(A, B), [peer, master]))
    assert report.bytes_from == {"peer": len(A), "master": len(B)}
    assert [sorted(r) for r in peer.requests] == [sorted([SA, SB])]
    assert master.requests == [[SB]]


def test_object_in_no_source_is_named(cache: NodeCache) -> None:
    with pytest.raises(ObjectUnavailableError) as err:
        asyncio.run(cache.fill(sizes(A, B), [MemorySource(blobs(A), label="m1")]))
    assert err.value.missing == [SB] and err.value.sources == ["m1"]
    with pytest.raises(ObjectUnavailableError):
        asyncio.run(cache.fill(sizes(C), []))
    with pytest.raises(ObjectNotCachedError):
        cache.object_path(SB)


def test_corrupt_copy_is_discarded_and_fetched_again(cache: NodeCache) -> None:
    source = CorruptingSource(ALL, bad=1)
    report = asyncio.run(cache.fill(sizes(B), [source]))
    assert source.served[SB] == 2
    assert report.discarded == 1
    assert report.bytes_from == {"master": 2 * len(B)}
    assert cache.object_path(SB).read_bytes() == B


def test_short_copy_is_discarded_and_fetched_again(cache: NodeCache) -> None:
    source = CorruptingSource(ALL, bad=2, short=True)
    asyncio.run(cache.fill(sizes(C), [source]))
    assert source.served[SC] == 3
    assert cache.object_path(SC).read_bytes() == C


def test_always_corrupt_fails_after_attempts_and_installs_nothing(cache: NodeCache) -> None:
    source = CorruptingSource(ALL, bad=99, label="bad-master")
    with pytest.raises(CorruptObjectError) as err:
        asyncio.run(cache.fill(sizes(A), [source], attempts=4, job="j1"))
    assert (err.value.sha256, err.value.source, err.value.attempts) == (SA, "bad-master", 4)
    assert source.served[SA] == 4
    assert not (cache.root / "objects" / SA[:2] / SA).exists()
    assert tmp_files(cache.root) == []
    assert cache.usage().jobs == {}


def test_peer_with_a_damaged_copy_is_passed_over_for_the_master(cache: NodeCache) -> None:
    peer = CorruptingSource(ALL, bad=99, kind="peer")
    master = MemorySource(ALL)
    report = asyncio.run(cache.fill(sizes(A), [peer, master], attempts=2))
    assert (peer.served[SA], master.served[SA]) == (1, 1)
    assert report.discarded == 1


def test_source_dying_mid_stream_is_retried(cache: NodeCache) -> None:
    source = DyingSource(ALL, deaths=1)
    asyncio.run(cache.fill(sizes(D, A), [source]))
    assert cache.object_path(SD).read_bytes() == D
    assert cache.object_path(SA).read_bytes() == A
    assert source.served[SD] == 2


def test_source_always_dying_raises_its_error_and_leaves_no_temp_file(cache: NodeCache) -> None:
    source = DyingSource(ALL, deaths=99, label="flaky")
    with pytest.raises(SourceError) as err:
        asyncio.run(cache.fill(sizes(D), [source], attempts=2))
    assert err.value.source == "flaky"
    assert source.served[SD] == 2
    assert tmp_files(cache.root) == []


def test_unreachable_peer_is_skipped_without_using_up_attempts(cache: NodeCache) -> None:
    peer, master = DownSource(ALL, kind="peer"), MemorySource(ALL)
    asyncio.run(cache.fill(sizes(A, B), [peer, master], attempts=1))
    assert len(peer.requests) == 1
    assert cache.object_path(SB).read_bytes() == B
    with pytest.raises(SourceError) as err:
        asyncio.run(cache.fill(sizes(C), [DownSource(ALL, label="down")], attempts=3))
    assert err.value.source == "down"


def test_zero_byte_object(cache: NodeCache) -> None:
    asyncio.run(cache.fill(sizes(b""), [MemorySource(blobs(b""))]))
    assert cache.object_path(digest(b"")).read_bytes() == b""


def test_cancelled_fill_leaves_no_temp_file_pin_or_stuck_waiter(cache: NodeCache) -> None:
    async def cancel() -> None:
        stalled = MemorySource(ALL, gate=asyncio.Event())  # never opens
        first = asyncio.create_task(cache.fill(sizes(B), [stalled], job="j1"))
        await stalled.started.wait()
        second = asyncio.create_task(cache.fill(sizes(B), [MemorySource(ALL)], job="j2"))
        await asyncio.sleep(0.01)
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        await second

    asyncio.run(cancel())
    assert tmp_files(cache.root) == []
    assert cache.usage().jobs == {"j2": JobPins(1, len(B))}
    assert cache.object_path(SB).read_bytes() == B


def test_concurrent_fills_of_one_object_download_it_once(cache: NodeCache) -> None:
    big = os.urandom(3 * MiB)

    async def both() -> tuple[int, int]:
        source = SlowSource(blobs(big, A), delay=0.001)
        first = asyncio.create_task(cache.fill(sizes(big, A), [source]))
        await source.started.wait()  # the first fill is mid-download
        second = await cache.fill(sizes(big), [source])
        await first
        return source.served[digest(big)], second.objects_hit

    served, hit = asyncio.run(both())
    assert served == 1
    assert hit == 1


def test_two_caches_on_one_directory_download_an_object_once(tmp_path: Path) -> None:
    """Two NodeCache objects exclude each other through the object's lock, as
    two processes do (OFD locks belong to the open file, not the process)."""

    async def race(one: NodeCache, two: NodeCache) -> tuple[int, int]:
        source = MemorySource(ALL, gate=asyncio.Event())
        first = asyncio.create_task(one.fill(sizes(C), [source]))
        await source.started.wait()
        second = asyncio.create_task(two.fill(sizes(C), [source]))
        await asyncio.sleep(0.05)  # the second polls the lock the first holds
        assert source.gate is not None
        source.gate.set()
        await first
        report = await second
        return source.served[SC], report.objects_hit

    with NodeCache(tmp_path / "c", MiB) as one, NodeCache(tmp_path / "c", MiB) as two:
        assert asyncio.run(race(one, two)) == (1, 1)


def test_waiter_retries_when_the_first_download_fails(cache: NodeCache) -> None:
    async def race() -> None:
        gate = asyncio.Event()
        # The first fill's only source dies mid-object; the second fill, waiting
        # for that download, retries it with its own, good source.
        dying = DyingSource(ALL, deaths=99, gate=gate)
        good = MemorySource(ALL)
        first = asyncio.create_task(cache.fill(sizes(B), [dying], attempts=1))
        await dying.started.wait()
        second = asyncio.create_task(cache.fill(sizes(B), [good]))
        await asyncio.sleep(0.01)
        assert good.requests == []  # waiting on the first fill's download
        gate.set()
        with pytest.raises(SourceError):
            await first
        report = await second
        assert report.objects_hit == 0
        assert (dying.served[SB], good.served[SB]) == (1, 1)

    asyncio.run(race())
    assert cache.object_path(SB).read_bytes() == B


def test_job_pins_and_rollback_of_a_failed_fill(cache: NodeCache) -> None:
    asyncio.run(cache.fill(sizes(A, B), [MemorySource(ALL)], job="j1"))
    assert cache.usage().jobs == {"j1": JobPins(2, len(A + B))}
    with pytest.raises(ObjectUnavailableError):
        asyncio.run(cache.fill(sizes(A, C), [MemorySource(blobs(A))], job="j1"))
    assert cache.usage().jobs == {"j1": JobPins(2, len(A + B))}  # C's pin rolled back
    cache.unpin("j1")
    cache.unpin("j1")
    usage = cache.usage()
    assert (usage.jobs, usage.pinned_objects, usage.objects) == ({}, 0, 2)


def test_pin_of_an_absent_object_is_refused(cache: NodeCache) -> None:
    with pytest.raises(ObjectNotCachedError):
        cache.pin("j1", [SA])
    asyncio.run(cache.fill(sizes(A), [MemorySource(ALL)]))
    cache.pin("j1", [SA])
    assert cache.usage().jobs == {"j1": JobPins(1, len(A))}


def test_eviction_is_lru_and_spares_pinned_objects(tmp_path: Path) -> None:
    source = MemorySource(ALL)
    budget = len(A + B + C + D)
    with NodeCache(tmp_path / "c", budget) as cache:
        for content in (A, B, C, D):  # use order A, B, C, D
            asyncio.run(cache.fill(sizes(content), [source]))
        asyncio.run(cache.fill(sizes(A), [source]))  # A used again: B is now the oldest
        cache.pin("j", [SB])
        assert cache.evict(len(C)) == [SC]  # B is older but pinned
        assert cache.evict(len(C + D + A)) == [SD, SA]
        assert cache.evict(budget) == []  # only pinned objects are left
        assert cache.object_path(SB).read_bytes() == B
        assert cache.usage().bytes_used == len(B)


def test_fill_evicts_least_recently_used_to_make_room(tmp_path: Path) -> None:
    source = MemorySource(ALL)
    with NodeCache(tmp_path / "c", len(B + C)) as cache:
        asyncio.run(cache.fill(sizes(B), [source]))
        asyncio.run(cache.fill(sizes(A), [source]))
        asyncio.run(cache.fill(sizes(C), [source]))  # needs room: B (oldest) goes
        assert {SA, SC} == set(_present(cache))


def _present(cache: NodeCache) -> list[str]:
    return [p.name for p in (cache.root / "objects").glob("*/*")]


def test_pinned_set_over_budget_fails_before_downloading(tmp_path: Path) -> None:
    source = MemorySource(ALL)
    with NodeCache(tmp_path / "c", len(C + D)) as cache:
        asyncio.run(cache.fill(sizes(D), [source], job="j1"))
        with pytest.raises(CacheFullError) as err:
            asyncio.run(cache.fill(sizes(C, A), [source], job="j2"))
        assert (err.value.needed, err.value.pinned) == (len(C + A), len(D))
        assert err.value.budget == len(C + D)
        assert len(source.requests) == 1
        assert cache.usage().jobs == {"j1": JobPins(1, len(D))}
        cache.unpin("j1")
        asyncio.run(cache.fill(sizes(C, A), [source], job="j2"))  # D is evictable now


def test_pins_survive_reopening(tmp_path: Path) -> None:
    with NodeCache(tmp_path / "c", MiB) as cache:
        asyncio.run(cache.fill(sizes(A, B), [MemorySource(ALL)], job="j1"))
    with NodeCache(tmp_path / "c", len(A + B)) as cache:
        assert cache.usage().jobs == {"j1": JobPins(2, len(A + B))}
        assert cache.evict(len(A)) == []
        assert cache.object_path(SA).read_bytes() == A


def test_progress_reports_files_and_bytes_without_a_call_per_chunk(cache: NodeCache) -> None:
    big = os.urandom(5 * MiB)
    asyncio.run(cache.fill(sizes(A), [MemorySource(ALL)]))
    calls: list[FillProgress] = []
    asyncio.run(
        cache.fill(sizes(A, B, big), [MemorySource(blobs(A, B, big))], progress=calls.append)
    )
    total = len(A + B + big)
    assert calls[0] == FillProgress(1, 3, len(A), total)  # the hit, before any download
    assert calls[-1] == FillProgress(3, 3, total, total)
    assert [c.bytes_done for c in calls] == sorted(c.bytes_done for c in calls)
    assert 5 <= len(calls) <= 12  # ~1 MiB steps, not 80 chunks of 64 KiB


def test_leftover_temp_files_are_removed_at_open_but_not_a_live_download(tmp_path: Path) -> None:
    root = tmp_path / "c"
    with NodeCache(root, MiB) as cache:

        async def stall() -> None:
            gate = asyncio.Event()
            source = MemorySource(ALL, gate=gate)
            task = asyncio.create_task(cache.fill(sizes(A), [source]))
            await source.started.wait()
            (root / "tmp" / f"{SB}.0.part").write_bytes(b"left by a dead process")
            (root / "tmp" / "junk").write_bytes(b"")
            live = tmp_files(root)
            NodeCache(root, MiB).close()  # a second opener, while the download runs
            assert tmp_files(root) == [n for n in live if n.startswith(SA)]
            gate.set()
            await task

        asyncio.run(stall())
        assert cache.object_path(SA).read_bytes() == A


def test_bad_requests_are_refused(cache: NodeCache, tmp_path: Path) -> None:
    with pytest.raises(CacheRequestError):
        asyncio.run(cache.fill({"../etc/passwd": 1}, []))
    with pytest.raises(CacheRequestError):
        asyncio.run(cache.fill({SA: -1}, []))
    with pytest.raises(CacheRequestError):
        cache.object_path("A" * 64)
    with pytest.raises(CacheRequestError):
        NodeCache(tmp_path / "x", 0)
    asyncio.run(cache.fill(sizes(A), [MemorySource(ALL)]))
    with pytest.raises(CacheRequestError):  # the object is fine: the size asked is wrong
        asyncio.run(cache.fill({SA: len(A) + 1}, []))
    assert cache.object_path(SA).read_bytes() == A


def test_damaged_cached_object_is_replaced(cache: NodeCache) -> None:
    asyncio.run(cache.fill(sizes(A), [MemorySource(ALL)]))
    path = cache.object_path(SA)
    path.chmod(0o644)
    path.write_bytes(A[:-10])
    report = asyncio.run(cache.fill(sizes(A), [MemorySource(ALL)]))
    assert report.objects_hit == 0
    assert cache.object_path(SA).read_bytes() == A


def test_edited_pin_file_is_refused(cache: NodeCache) -> None:
    (cache.root / "pins.json").write_text(json.dumps({"version": 1, "pins": {"j": {"x": 1}}}))
    with pytest.raises(CacheMetadataError):
        cache.usage()


def _flip_a_byte(path: Path) -> None:
    """What a bad disk or a careless root does: one byte changed in place (mtime moves)."""
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        first = f.read(1)
        f.seek(0)
        f.write(bytes([first[0] ^ 0xFF]))
    os.chmod(path, 0o444)


def test_a_damaged_cached_object_is_fetched_again_not_hit(cache: NodeCache) -> None:
    # Issue 12: a hit was trusted on its size alone, so a job ran the flipped byte.
    source = MemorySource(ALL)
    asyncio.run(cache.fill(sizes(A, B), [source]))
    path = cache.object_path(SA)
    _flip_a_byte(path)
    report = asyncio.run(cache.fill(sizes(A, B), [source]))
    assert report.objects_hit == 1  # B only
    assert report.bytes_from == {"master": len(A)}
    assert path.read_bytes() == A
    assert len(source.requests) == 2


def test_a_cache_opened_again_hashes_its_hits_once(tmp_path: Path) -> None:
    source = MemorySource(ALL)
    with NodeCache(tmp_path / "c", 10 * MiB) as first:
        asyncio.run(first.fill(sizes(A), [source]))
        _flip_a_byte(first.object_path(SA))
    with NodeCache(tmp_path / "c", 10 * MiB) as again:  # a restarted agent trusts nothing
        report = asyncio.run(again.fill(sizes(A), [source]))
        assert report.objects_hit == 0 and again.object_path(SA).read_bytes() == A
        report = asyncio.run(again.fill(sizes(A), [source]))
        assert report.objects_hit == 1
