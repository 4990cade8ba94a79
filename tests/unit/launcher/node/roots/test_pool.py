"""RootPool's bookkeeping: which parked root a job gets, what is dropped when,
and the pins that keep a parked root's files in the cache.

The roots here are stand-ins (a manifest, a path, a ``remove`` that counts);
the cache is a real NodeCache holding the objects, since the pins are real.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import cast

from cachefs.cache import NodeCache
from cachefs.manifest import Entry, Manifest, build
from launcher.node.roots.envroot import EnvRoot
from launcher.node.roots.pool import RootPool


@dataclass
class FakeRoot:
    manifest: Manifest
    path: Path
    removed: int = 0
    late: None = None

    def remove(self) -> None:
        self.removed += 1


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _cache_with(tmp_path: Path, *contents: bytes) -> tuple[NodeCache, list[Manifest]]:
    """A cache holding each content, and one manifest showing each."""
    cache = NodeCache(tmp_path / "cache", 1 << 20)
    manifests = []
    for i, data in enumerate(contents):
        sha = hashlib.sha256(data).hexdigest()
        obj = cache.root / "objects" / sha[:2] / sha
        obj.parent.mkdir(parents=True, exist_ok=True)
        obj.write_bytes(data)
        os.chmod(obj, 0o444)
        entry = Entry(f"/bin/prog{i}", "file", 0o755, size=len(data), sha256=sha)
        manifests.append(build(f"/bin/prog{i}", [entry], 1000))
    return cache, manifests


def _root(manifest: Manifest, name: str) -> EnvRoot:
    return cast(EnvRoot, FakeRoot(manifest, Path("/roots") / name))


def test_take_matches_manifest_and_mounts_and_moves_the_pin(tmp_path: Path) -> None:
    cache, (m0, m1) = _cache_with(tmp_path, b"zero", b"one")
    pool = RootPool(cache, keep=4)
    root = _root(m0, "7")
    pool.park(root, ("/home/a",))
    assert "root:7" in cache.usage().jobs
    assert pool.take(m1.id, ("/home/a",)) is None  # other files
    assert pool.take(m0.id, ("/home/b",)) is None  # other home: no mount point for it
    assert pool.take(m0.id, ("/home/a", "/scratch")) is None  # a site bind it lacks
    assert pool.take(m0.id, ("/home/a",)) is root
    assert "root:7" not in cache.usage().jobs
    assert pool.take(m0.id, ("/home/a",)) is None  # given once
    assert cast(FakeRoot, root).removed == 0


def test_a_full_pool_drops_the_oldest_root(tmp_path: Path) -> None:
    cache, (m0,) = _cache_with(tmp_path, b"zero")
    pool = RootPool(cache, keep=2)
    roots = [_root(m0, str(i)) for i in range(3)]
    for root in roots:
        pool.park(root, ())
    assert [cast(FakeRoot, r).removed for r in roots] == [1, 0, 0]
    assert set(cache.usage().jobs) == {"root:1", "root:2"}
    assert pool.take(m0.id, ()) is roots[2]  # the most recently parked first


def test_keep_zero_removes_at_once(tmp_path: Path) -> None:
    cache, (m0,) = _cache_with(tmp_path, b"zero")
    pool = RootPool(cache, keep=0)
    root = _root(m0, "1")
    pool.park(root, ())
    assert cast(FakeRoot, root).removed == 1 and len(pool) == 0
    assert cache.usage().jobs == {}


def test_idle_roots_expire(tmp_path: Path) -> None:
    cache, (m0, m1) = _cache_with(tmp_path, b"zero", b"one")
    clock = Clock()
    pool = RootPool(cache, keep=4, idle_s=60.0, clock=clock)
    old, new = _root(m0, "1"), _root(m1, "2")
    pool.park(old, ())
    clock.now += 50
    pool.park(new, ())
    clock.now += 20  # old idle 70 s, new 20 s
    assert pool.take(m1.id, ()) is new
    assert cast(FakeRoot, old).removed == 1
    assert pool.take(m0.id, ()) is None
    assert cache.usage().jobs == {}


def test_clear_and_stale_pins(tmp_path: Path) -> None:
    cache, (m0,) = _cache_with(tmp_path, b"zero")
    pool = RootPool(cache, keep=4)
    roots = [_root(m0, str(i)) for i in range(2)]
    for root in roots:
        pool.park(root, ())
    cache.pin("5", m0.objects())
    assert pool.clear() == 2
    assert all(cast(FakeRoot, r).removed == 1 for r in roots)
    assert set(cache.usage().jobs) == {"5"}
    # pins of roots a crashed agent parked: dropped at the next start, jobs' kept
    cache.pin("root:9", m0.objects())
    assert RootPool.unpin_stale(cache) == ["root:9"]
    assert set(cache.usage().jobs) == {"5"}


def test_a_root_whose_objects_left_the_cache_is_not_kept(tmp_path: Path) -> None:
    cache, (m0,) = _cache_with(tmp_path, b"zero")
    for sha in m0.objects():
        path = cache.root / "objects" / sha[:2] / sha
        path.unlink()
    pool = RootPool(cache, keep=4)
    root = _root(m0, "1")
    pool.park(root, ())
    assert cast(FakeRoot, root).removed == 1 and len(pool) == 0
