"""Flights: downloads in flight followed as they grow, expected objects, job joins."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from cachefs.cache import layout
from cachefs.cache.flights import Flights
from cachefs.errors import GrowingFailedError

SHA = "ab" * 32
SIZE = 10


def run(coro: Coroutine[Any, Any, None]) -> None:
    asyncio.run(coro)


def cache_root(tmp_path: Path) -> Path:
    (tmp_path / layout.OBJECTS).mkdir()
    (tmp_path / layout.TMP).mkdir()
    return tmp_path


def write(path: str, data: bytes) -> None:
    with open(path, "ab") as f:
        f.write(data)


async def collect(flights: Flights, start: int = 0, end: int = SIZE) -> list[tuple[int, int]]:
    growing = await flights.track(SHA)
    assert growing is not None
    try:
        return [r async for r in growing.ranges(start, end)]
    finally:
        growing.close()


def test_ranges_follow_the_writes_and_end_when_installed(tmp_path: Path) -> None:
    async def main() -> None:
        flights = Flights(cache_root(tmp_path))
        part = layout.part_file(str(tmp_path), SHA)
        write(part, b"")
        flight = flights.begin(SHA, SIZE, part)
        reader = asyncio.create_task(collect(flights))
        await asyncio.sleep(0)
        for piece in (b"0123", b"456789"):
            write(part, piece)
            flights.advance(flight, len(piece))
            await asyncio.sleep(0)
        assert not reader.done()  # all bytes written, but not yet installed
        flights.end(flight, installed=True)
        assert await reader == [(0, 4), (4, 6)]

    run(main())


def test_ranges_raise_when_the_download_fails(tmp_path: Path) -> None:
    async def main() -> None:
        flights = Flights(cache_root(tmp_path))
        part = layout.part_file(str(tmp_path), SHA)
        write(part, b"")
        flight = flights.begin(SHA, SIZE, part)
        reader = asyncio.create_task(collect(flights))
        write(part, b"0" * SIZE)
        flights.advance(flight, SIZE)  # a complete copy that then fails its check
        await asyncio.sleep(0)
        flights.end(flight, installed=False)
        with pytest.raises(GrowingFailedError) as caught:
            await reader
        assert caught.value.sha256 == SHA and caught.value.offset == SIZE

    run(main())


def test_a_range_starts_where_asked(tmp_path: Path) -> None:
    async def main() -> None:
        flights = Flights(cache_root(tmp_path))
        part = layout.part_file(str(tmp_path), SHA)
        write(part, b"0123456789")
        flight = flights.begin(SHA, SIZE, part)
        flights.advance(flight, SIZE)
        reader = asyncio.create_task(collect(flights, 3, 8))
        await asyncio.sleep(0)
        flights.end(flight, installed=True)
        assert await reader == [(3, 5)]

    run(main())


def test_absent_objects_are_answered_at_once(tmp_path: Path) -> None:
    async def main() -> None:
        flights = Flights(cache_root(tmp_path))
        assert await flights.track(SHA) is None

    run(main())


def test_an_expected_object_is_waited_for_until_it_is_in_flight(tmp_path: Path) -> None:
    async def main() -> None:
        flights = Flights(cache_root(tmp_path))
        with flights.filling("1", [SHA]):
            tracking = asyncio.create_task(flights.track(SHA))
            await asyncio.sleep(0)
            assert not tracking.done()
            part = layout.part_file(str(tmp_path), SHA)
            write(part, b"")
            flights.begin(SHA, SIZE, part)
            growing = await tracking
            assert growing is not None and growing.size == SIZE
            growing.close()

    run(main())


def test_an_expected_object_is_given_up_when_its_fill_ends(tmp_path: Path) -> None:
    async def main() -> None:
        flights = Flights(cache_root(tmp_path))
        with flights.filling("1", [SHA]):
            tracking = asyncio.create_task(flights.track(SHA))
            await asyncio.sleep(0)
            assert not tracking.done()
        assert await tracking is None

    run(main())


def test_an_expected_object_already_installed_is_not_waited_for(tmp_path: Path) -> None:
    async def main() -> None:
        root = cache_root(tmp_path)
        os.makedirs(os.path.dirname(layout.object_file(str(root), SHA)))
        write(layout.object_file(str(root), SHA), b"x")
        flights = Flights(root)
        with flights.filling("1", [SHA]):
            assert await flights.track(SHA) is None

    run(main())


def test_join_waits_for_the_job_to_start(tmp_path: Path) -> None:
    async def main() -> None:
        flights = Flights(cache_root(tmp_path), join_wait_s=30.0)
        joining = asyncio.create_task(flights.join("5"))
        await asyncio.sleep(0)
        flights.started("4")
        await asyncio.sleep(0)
        assert not joining.done()
        with flights.filling("5", []):
            await asyncio.wait_for(joining, 5)

    run(main())


def test_join_gives_up_after_its_bound(tmp_path: Path) -> None:
    async def main() -> None:
        flights = Flights(cache_root(tmp_path), join_wait_s=0.01)
        await asyncio.wait_for(flights.join("5"), 5)  # returns although job 5 never starts

    run(main())
