"""cachefs.dirsource: objects from a directory laid out like the store."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from cachefs.dirsource import CHUNK, DirectorySource
from cachefs.errors import SourceUnreachableError
from cachefs.source import ObjectSource
from cachefs.store import Store


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


async def collect(source: ObjectSource, wanted: list[str]) -> dict[str, list[bytes]]:
    got: dict[str, list[bytes]] = {}
    async for incoming in source.fetch(wanted):
        chunks = [c async for c in incoming.chunks]
        assert sum(map(len, chunks)) == incoming.size
        got[incoming.sha256] = chunks
    return got


def test_fetch_streams_present_objects_and_leaves_out_the_rest(tmp_path: Path) -> None:
    store = Store(tmp_path / "peer")
    big = os.urandom(2 * CHUNK + 5)
    blobs = {sha(d): d for d in (b"one", b"", big)}
    for data in blobs.values():
        store.ingest_bytes(data)
    source = DirectorySource(tmp_path / "peer")
    absent = sha(b"absent")
    got = asyncio.run(collect(source, [absent, *blobs, "../../etc/passwd", sha(b"one")]))
    assert {d: b"".join(c) for d, c in got.items()} == blobs
    assert len(got[sha(big)]) == 3  # streamed in chunks, not read whole
    assert source.kind == "peer"
    assert source.label == str(tmp_path / "peer")


def test_missing_directory_is_source_unreachable(tmp_path: Path) -> None:
    source = DirectorySource(tmp_path / "not-mounted", kind="master")
    with pytest.raises(SourceUnreachableError, match="mounted") as info:
        asyncio.run(collect(source, [sha(b"x")]))
    assert info.value.source == str(tmp_path / "not-mounted")
