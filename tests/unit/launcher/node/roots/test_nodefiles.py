"""A node's own files in job roots: read without following a symlink, cached
and pinned for the job, placed as root's 0644 files over what the manifest had."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
from pathlib import Path

import pytest

from cachefs.cache import NodeCache
from cachefs.errors import CacheFullError
from cachefs.manifest import Entry, Manifest, build
from launcher.node.roots.nodefiles import NodeFiles

BODY = b"#!/bin/sh\n"


def _manifest(*extra: Entry) -> Manifest:
    prog = Entry("/bin/prog", "file", 0o755, len(BODY), hashlib.sha256(BODY).hexdigest())
    return build("/bin/prog", [prog, *extra], owner=1000)


def test_a_node_file_is_cached_pinned_and_placed_as_roots(tmp_path: Path) -> None:
    (tmp_path / "hostname").write_bytes(b"node7\n")
    (tmp_path / "hostname").chmod(0o600)  # the node's mode is not the root's
    cache = NodeCache(tmp_path / "cache", 1 << 20)
    forged = Entry("/etc/hostname", "file", 0o600, 7, "e" * 64, uid=1000)
    got = asyncio.run(NodeFiles(cache).add(_manifest(forged), "42", [f"{tmp_path}/hostname"]))
    entry = got.get(f"{tmp_path}/hostname")
    sha = hashlib.sha256(b"node7\n").hexdigest()
    assert entry == Entry(f"{tmp_path}/hostname", "file", 0o644, 6, sha)
    assert cache.object_path(sha).read_bytes() == b"node7\n"
    assert cache.usage().jobs["42"].objects == 1  # pinned for the job
    assert got.owner == 1000 and got.get("/bin/prog") is not None
    assert got.get("/etc/hostname") == forged  # another path: untouched


def test_the_node_file_replaces_the_manifests_entry_and_what_lies_under_it(
    tmp_path: Path,
) -> None:
    (tmp_path / "resolv.conf").write_bytes(b"nameserver 10.0.0.1\n")
    path = f"{tmp_path}/resolv.conf"
    manifest = _manifest(
        Entry(path, "dir", 0o755),
        Entry(f"{path}/x", "file", 0o644, len(BODY), hashlib.sha256(BODY).hexdigest()),
    )
    files = NodeFiles(NodeCache(tmp_path / "cache", 1 << 20))
    got = files.place(manifest, files.read([path]))
    assert [e.path for e in got] == ["/bin/prog", path]
    assert got.get(path) is not None and got.get(path).kind == "file"  # type: ignore[union-attr]


def test_links_fifos_and_missing_paths_are_left_out_and_warned_once(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    (tmp_path / "real").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "real")
    os.mkfifo(tmp_path / "fifo")  # opened O_NONBLOCK: never waits for a writer
    (tmp_path / "dir").mkdir()
    files = NodeFiles(NodeCache(tmp_path / "cache", 1 << 20))
    paths = [f"{tmp_path}/{name}" for name in ("link", "fifo", "dir", "missing", "real")]
    with caplog.at_level(logging.WARNING, logger="launcher.node.roots.nodefiles"):
        assert [f.path for f in files.read(paths)] == [f"{tmp_path}/real"]
        assert [f.path for f in files.read(paths)] == [f"{tmp_path}/real"]
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 3, warned
    assert "symbolic link" in warned[0] and "not a regular file" in warned[1]


def test_a_file_that_cannot_stand_in_the_root_is_left_out(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    path = f"{tmp_path}/f"
    # The manifest has a symlink where the node file needs a directory.
    manifest = _manifest(Entry(str(tmp_path), "symlink", 0o777, target="/elsewhere"))
    files = NodeFiles(NodeCache(tmp_path / "cache", 1 << 20))
    assert files.place(manifest, files.read([path])) == manifest


def test_a_cache_too_full_for_the_node_files_refuses_and_leaves_no_pin(tmp_path: Path) -> None:
    (tmp_path / "big").write_bytes(b"x" * 2048)
    cache = NodeCache(tmp_path / "cache", 1024)
    cache.pin("42", [])  # as the job's own fill left it
    with pytest.raises(CacheFullError):
        asyncio.run(NodeFiles(cache).add(_manifest(), "42", [f"{tmp_path}/big"]))
    assert "42" not in cache.usage().jobs
