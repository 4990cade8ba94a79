"""cachefs.store: ingest, dedupe, atomic install, changes while reading, gc."""

from __future__ import annotations

import hashlib
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cachefs import store as store_module
from cachefs.errors import (
    BadDigestError,
    DigestMismatchError,
    IngestError,
    ObjectMissingError,
    SourceChangedError,
)
from cachefs.store import Store, hash_file


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "store")


def write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def test_open_creates_layout(tmp_path: Path) -> None:
    Store(tmp_path / "s")
    assert (tmp_path / "s" / "objects").is_dir()
    assert (tmp_path / "s" / "tmp").is_dir()


def test_ingest_stores_object_under_its_digest_read_only(store: Store, tmp_path: Path) -> None:
    data = os.urandom(3 * store_module.CHUNK + 17)  # several chunks, a partial last one
    digest, size = store.ingest(write(tmp_path / "f", data))
    assert (digest, size) == (sha(data), len(data))
    path = store.path(digest)
    assert path == store.root / "objects" / digest[:2] / digest
    assert path.read_bytes() == data
    assert stat.S_IMODE(path.stat().st_mode) == 0o444
    assert store.has(digest)
    with store.open(digest) as f:
        assert f.read() == data
    assert list(store.objects()) == [(digest, len(data))]
    assert list((store.root / "tmp").iterdir()) == []


def test_empty_file(store: Store, tmp_path: Path) -> None:
    digest, size = store.ingest(write(tmp_path / "empty", b""))
    assert (digest, size) == (sha(b""), 0)
    assert store.path(digest).read_bytes() == b""


def test_dedupe_keeps_the_existing_object(store: Store, tmp_path: Path) -> None:
    a = store.ingest(write(tmp_path / "a", b"same bytes"))
    inode = store.path(a[0]).stat().st_ino
    b = store.ingest(write(tmp_path / "b", b"same bytes"))
    c = store.ingest_bytes(b"same bytes")
    assert a == b == c
    assert store.path(a[0]).stat().st_ino == inode
    assert len(list(store.objects())) == 1
    assert list((store.root / "tmp").iterdir()) == []


def test_replaced_file_keeps_old_object(store: Store, tmp_path: Path) -> None:
    lib = tmp_path / "usr" / "lib" / "x.so"
    lib.parent.mkdir(parents=True)
    old = write(lib, b"version 1")
    old_digest, _ = store.ingest(old)
    # Replace the way package managers do (new file renamed over), then in place.
    write(tmp_path / "x.so.new", b"version 2").rename(lib)
    new_digest, _ = store.ingest(lib)
    lib.write_bytes(b"version 3, written in place")
    newest, _ = store.ingest(lib)
    assert len({old_digest, new_digest, newest}) == 3
    assert store.path(old_digest).read_bytes() == b"version 1"
    assert store.path(new_digest).read_bytes() == b"version 2"
    assert store.path(newest).read_bytes() == b"version 3, written in place"


def test_ingest_bytes(store: Store) -> None:
    digest, size = store.ingest_bytes(b"small")
    assert (digest, size) == (sha(b"small"), 5)
    assert store.path(digest).read_bytes() == b"small"


def test_expect_sha256_mismatch_stores_nothing(store: Store, tmp_path: Path) -> None:
    src = write(tmp_path / "f", b"actual")
    with pytest.raises(DigestMismatchError) as info:
        store.ingest(src, expect_sha256=sha(b"expected"))
    assert info.value.actual == sha(b"actual")
    assert info.value.path == str(src)
    assert list(store.objects()) == []
    assert list((store.root / "tmp").iterdir()) == []
    assert store.ingest(src, expect_sha256=sha(b"actual"))[0] == sha(b"actual")


@pytest.mark.parametrize(
    "digest", ["", "../../etc/passwd", "A" * 64, "a" * 63, "a" * 65, "g" * 64, "/" + "a" * 63]
)
def test_malformed_digest_refused(store: Store, digest: str) -> None:
    with pytest.raises(BadDigestError):
        store.path(digest)
    with pytest.raises(BadDigestError):
        store.has(digest)
    with pytest.raises(BadDigestError):
        store.open(digest)


def test_missing_object(store: Store) -> None:
    with pytest.raises(ObjectMissingError) as info:
        store.open("a" * 64)
    assert info.value.digest == "a" * 64
    assert not store.has("a" * 64)


def test_missing_or_special_source_refused(store: Store, tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="no such file"):
        store.ingest(tmp_path / "nope")
    with pytest.raises(IngestError, match="not a regular file"):
        store.ingest(tmp_path)
    os.mkfifo(tmp_path / "fifo")
    # Opening a fifo for reading blocks until it has a writer: hold one open.
    fd = os.open(tmp_path / "fifo", os.O_RDWR)
    try:
        with pytest.raises(IngestError, match="not a regular file"):
            store.ingest(tmp_path / "fifo")
    finally:
        os.close(fd)
    assert list(store.objects()) == []


def test_change_during_read_is_retried(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file is rewritten in place, same size, after the first chunk of the
    first read: the torn read must not be recorded; the retry gets the new bytes."""
    src = write(tmp_path / "f", b"A" * (2 * store_module.CHUNK))
    real_readv = os.readv
    calls = {"n": 0}

    def readv(fd: int, buffers: list[memoryview]) -> int:
        n = real_readv(fd, buffers)
        calls["n"] += 1
        if calls["n"] == 1:
            src.write_bytes(b"B" * (2 * store_module.CHUNK))
        return n

    monkeypatch.setattr(store_module.os, "readv", readv)
    digest, _ = store.ingest(src)
    monkeypatch.undo()
    assert digest == sha(b"B" * (2 * store_module.CHUNK))
    torn = sha(b"A" * store_module.CHUNK + b"B" * store_module.CHUNK)
    assert [d for d, _ in store.objects()] == [digest]
    assert not store.has(torn)
    assert calls["n"] > 3  # read again


def test_change_during_every_read_is_refused(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write(tmp_path / "f", b"x" * 100)
    real_readv = os.readv

    def readv(fd: int, buffers: list[memoryview]) -> int:
        n = real_readv(fd, buffers)
        if n:
            with src.open("ab") as f:
                f.write(b"more")
        return n

    monkeypatch.setattr(store_module.os, "readv", readv)
    with pytest.raises(SourceChangedError) as info:
        store.ingest(src, attempts=3)
    monkeypatch.undo()
    assert info.value.path == str(src)
    assert info.value.attempts == 3
    assert "changed while being read" in str(info.value)
    assert list(store.objects()) == []
    assert list((store.root / "tmp").iterdir()) == []


def test_hash_file_stores_nothing(store: Store, tmp_path: Path) -> None:
    read = hash_file(write(tmp_path / "f", b"abc"))
    assert (read.sha256, read.size) == (sha(b"abc"), 3)
    assert stat.S_ISREG(read.stat.st_mode)


def test_leftover_tmp_cleaned_at_open(tmp_path: Path) -> None:
    store = Store(tmp_path / "s")
    (store.root / "tmp" / "99999999-deadbeef.part").write_bytes(b"partial")
    (store.root / "tmp" / "junk").write_bytes(b"partial")
    Store(tmp_path / "s")
    assert list((store.root / "tmp").iterdir()) == []


def test_live_tmp_not_cleaned(tmp_path: Path) -> None:
    """A tmp file another writer holds (flocked) survives a second Store's open."""
    store = Store(tmp_path / "s")
    live = store_module._TmpFile(store.root / "tmp")
    try:
        os.utime(live.path, (0, 0))  # old, but locked
        Store(tmp_path / "s")
        assert live.path.exists()
    finally:
        live.close()
    assert not live.path.exists()


def test_gc_removes_unkept_objects(store: Store) -> None:
    keep, _ = store.ingest_bytes(b"keep me")
    drop, _ = store.ingest_bytes(b"drop me, 17 bytes")
    (store.root / "tmp" / "1-stale.part").write_bytes(b"12345")
    os.utime(store.root / "tmp" / "1-stale.part", (0, 0))
    report = store.gc({keep}, grace_s=0)
    assert report.removed == 1
    assert report.kept == 1
    assert report.tmp_removed == 1
    assert report.freed_bytes == 17 + 5
    assert store.has(keep)
    assert not store.has(drop)
    assert list((store.root / "tmp").iterdir()) == []


def test_gc_spares_recently_ingested_objects(store: Store) -> None:
    """A snapshot still running has no manifest in ``keep`` yet."""
    digest, _ = store.ingest_bytes(b"new")
    report = store.gc(set())
    assert report.removed == 0
    assert store.has(digest)


def test_reingest_refreshes_for_gc(store: Store) -> None:
    digest, _ = store.ingest_bytes(b"old object")
    os.utime(store.path(digest), (0, 0))
    store.ingest_bytes(b"old object")  # a new snapshot uses it again
    assert store.gc(set(), grace_s=60).removed == 0
    assert store.has(digest)


@pytest.mark.parametrize(
    ("age_s", "reads"),
    [(0, 4), (3600, 2), (-3600, 2)],
    ids=["just-written", "old", "future"],
)
def test_recently_modified_file_is_read_twice(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, age_s: int, reads: int
) -> None:
    """A file modified within the kernel's mtime granularity is read a second
    time (a same-tick write would not move its mtime); an old one, or one dated
    in the future, once (data, then end of file)."""
    # A wide window so a loaded machine's delay before the ingest cannot make
    # the just-written file look old.
    monkeypatch.setattr(store_module, "RACY_NS", 300_000_000)
    src = write(tmp_path / "f", b"content")
    if age_s:
        st = src.stat()
        os.utime(src, ns=(st.st_atime_ns, st.st_mtime_ns - age_s * 1_000_000_000))
    real_readv = os.readv
    calls: list[int] = []

    def readv(fd: int, buffers: list[memoryview]) -> int:
        calls.append(fd)
        return real_readv(fd, buffers)

    monkeypatch.setattr(store_module.os, "readv", readv)
    digest, _ = store.ingest(src)
    monkeypatch.undo()
    assert digest == sha(b"content")
    assert len(calls) == reads


def test_concurrent_ingests_of_one_content_make_one_object(store: Store, tmp_path: Path) -> None:
    data = os.urandom(3 * store_module.CHUNK)
    sources = [write(tmp_path / f"copy{i}", data) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(store.ingest, sources))
    assert set(results) == {(sha(data), len(data))}
    assert list(store.objects()) == [(sha(data), len(data))]
    assert store.path(sha(data)).read_bytes() == data
    assert list((store.root / "tmp").iterdir()) == []
