"""cachefs.snapshot: a real directory tree with a symlink chain -> Manifest."""

from __future__ import annotations

import hashlib
import os
import socket
from pathlib import Path

import pytest

from cachefs.errors import ManifestError, SnapshotError
from cachefs.manifest import Entry, loads
from cachefs.snapshot import SnapshotProgress, snapshot
from cachefs.store import Store


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """root/bin/prog (0755), root/lib/libfoo.so -> libfoo.so.1 -> libfoo.so.1.2.3."""
    root = tmp_path / "root"
    (root / "bin").mkdir(parents=True)
    (root / "lib").mkdir(mode=0o750)
    os.chmod(root / "lib", 0o750)
    (root / "bin" / "prog").write_bytes(b"\x7fELF program")
    os.chmod(root / "bin" / "prog", 0o755)
    (root / "lib" / "libfoo.so.1.2.3").write_bytes(b"library body" * 1000)
    os.chmod(root / "lib" / "libfoo.so.1.2.3", 0o644)
    (root / "lib" / "libfoo.so.1").symlink_to("libfoo.so.1.2.3")
    (root / "lib" / "libfoo.so").symlink_to(root / "lib" / "libfoo.so.1")  # absolute
    return root


def paths(root: Path) -> list[str]:
    return [
        str(root / "bin" / "prog"),
        str(root / "lib"),
        str(root / "lib" / "libfoo.so"),
        str(root / "lib" / "libfoo.so.1"),
        str(root / "lib" / "libfoo.so.1.2.3"),
    ]


def mtime(path: str | Path) -> int:
    return os.stat(path).st_mtime_ns


def test_snapshot_records_files_dirs_and_symlink_chain(tree: Path, tmp_path: Path) -> None:
    store = Store(tmp_path / "store")
    prog = str(tree / "bin" / "prog")
    manifest = snapshot(prog, [*paths(tree), prog], store, owner=1000)
    lib = tree / "lib"
    body = b"library body" * 1000
    assert list(manifest) == sorted(
        [
            Entry(prog, "file", 0o755, 12, sha(b"\x7fELF program"), mtime=mtime(prog)),
            Entry(str(lib), "dir", 0o750),
            Entry(str(lib / "libfoo.so"), "symlink", 0o777, target=str(lib / "libfoo.so.1")),
            Entry(str(lib / "libfoo.so.1"), "symlink", 0o777, target="libfoo.so.1.2.3"),
            Entry(
                str(lib / "libfoo.so.1.2.3"),
                "file",
                0o644,
                len(body),
                sha(body),
                mtime=mtime(lib / "libfoo.so.1.2.3"),
            ),
        ]
    )
    assert manifest.root == prog
    assert manifest.owner == 1000
    assert sorted(store.objects()) == sorted(manifest.objects().items())
    assert store.path(sha(body)).read_bytes() == body
    assert loads(manifest.canonical()) == manifest


def test_snapshot_without_store_only_hashes(tree: Path) -> None:
    prog = str(tree / "bin" / "prog")
    manifest = snapshot(prog, paths(tree), None)
    entry = manifest.get(prog)
    assert entry is not None and entry.sha256 == sha(b"\x7fELF program")


def test_progress_reports_files_and_bytes(tree: Path) -> None:
    seen: list[SnapshotProgress] = []
    snapshot(str(tree / "bin" / "prog"), paths(tree), None, progress=seen.append)
    total_bytes = 12 + 12 * 1000
    assert [(p.files_done, p.bytes_done) for p in seen] == [(0, 0), (1, 12), (2, total_bytes)]
    assert {(p.files_total, p.bytes_total) for p in seen} == {(2, total_bytes)}
    assert seen[-1].path == str(tree / "lib" / "libfoo.so.1.2.3")


def test_vanished_path_is_named(tree: Path) -> None:
    gone = str(tree / "lib" / "libgone.so.2")
    with pytest.raises(SnapshotError) as info:
        snapshot(str(tree / "bin" / "prog"), [*paths(tree), gone], None)
    assert info.value.path == gone
    assert "does not exist" in str(info.value)


def test_fifo_and_socket_refused(tree: Path) -> None:
    fifo = tree / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(SnapshotError, match="fifo") as info:
        snapshot(str(tree / "bin" / "prog"), [str(fifo)], None)
    assert info.value.path == str(fifo)
    sock_path = tree / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(SnapshotError, match="socket"):
            snapshot(str(tree / "bin" / "prog"), [str(sock_path)], None)


def test_device_refused(tree: Path) -> None:
    with pytest.raises(SnapshotError, match="character device") as info:
        snapshot(str(tree / "bin" / "prog"), ["/dev/null"], None)
    assert info.value.path == "/dev/null"


def test_relative_path_refused(tree: Path) -> None:
    with pytest.raises(ManifestError):
        snapshot(str(tree / "bin" / "prog"), ["lib/libfoo.so"], None)


def test_nothing_stored_for_a_refused_snapshot_before_reading(tree: Path, tmp_path: Path) -> None:
    """Kinds are checked before any file is read: a refused snapshot stores nothing."""
    store = Store(tmp_path / "store")
    with pytest.raises(SnapshotError):
        snapshot(str(tree / "bin" / "prog"), [*paths(tree), "/dev/null"], store)
    assert list(store.objects()) == []
