"""The node cache with real processes (SIGKILL mid-download, two processes
filling one object) and a real full filesystem (a 1 MiB tmpfs)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cachefs
from cachefs.cache import JobPins, NodeCache
from cachefs.errors import CacheDiskFullError
from tests.unit.cachefs.cache_sources import MemorySource, blobs, digest

REPO = Path(cachefs.__file__).resolve().parent.parent
KiB, MiB = 1 << 10, 1 << 20
CHILD = "tests.integration.cachefs.cache_child"


def start_child(root: Path, data: Path, log: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", CHILD, str(root), str(data), str(log), mode],
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for_part(root: Path, child: subprocess.Popen[str], min_size: int = 1) -> Path:
    """The child's temp file, once it holds at least ``min_size`` bytes."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        parts = [p for p in (root / "tmp").glob("*.part") if p.stat().st_size >= min_size]
        if parts:
            return parts[0]
        if child.poll() is not None:
            raise AssertionError(f"child exited early: {child.communicate()}")
        time.sleep(0.01)
    raise AssertionError("the child never started writing its download")


@pytest.fixture
def child_procs() -> Iterator[list[subprocess.Popen[str]]]:
    procs: list[subprocess.Popen[str]] = []
    yield procs
    for proc in procs:  # only ours, by pid
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_killed_mid_download_leaves_no_visible_object_and_reopen_cleans(
    tmp_path: Path, child_procs: list[subprocess.Popen[str]]
) -> None:
    root, data_file, log = tmp_path / "cache", tmp_path / "data", tmp_path / "log"
    data = os.urandom(MiB)
    sha = digest(data)
    data_file.write_bytes(data)
    child = start_child(root, data_file, log, "stall")
    child_procs.append(child)
    part = wait_for_part(root, child, len(data) // 2)
    assert part.name.startswith(sha)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()

    assert not (root / "objects" / sha[:2] / sha).exists()
    assert list((root / "objects").glob("*/*")) == []
    assert part.exists()  # left by the dead process ...
    with NodeCache(root, 4 * MiB) as cache:
        assert list((root / "tmp").iterdir()) == []  # ... and removed at open
        # The dead fill's pins were written before it downloaded: they stay
        # (the job's owner unpins it) and cover an object that is not there.
        assert cache.usage().objects == 0
        report = asyncio.run(cache.fill({sha: len(data)}, [MemorySource(blobs(data))]))
        assert report.objects_hit == 0
        assert cache.object_path(sha).read_bytes() == data


def test_two_processes_filling_one_object_download_it_once(
    tmp_path: Path, child_procs: list[subprocess.Popen[str]]
) -> None:
    root, data_file, log = tmp_path / "cache", tmp_path / "data", tmp_path / "log"
    data = os.urandom(MiB)
    data_file.write_bytes(data)
    first = start_child(root, data_file, log, "slow")
    child_procs.append(first)
    wait_for_part(root, first)  # the first process holds the object's lock
    second = start_child(root, data_file, log, "slow")
    child_procs.append(second)
    outputs = [proc.communicate(timeout=60) for proc in (first, second)]
    assert [proc.returncode for proc in (first, second)] == [0, 0], outputs
    reports = [json.loads(out) for out, _ in outputs]
    assert len(log.read_text().splitlines()) == 1  # one source was asked, once
    assert reports[1] == {"objects_hit": 1, "bytes_from": {}}
    assert reports[0]["bytes_from"] == {"master": len(data)}
    with NodeCache(root, 4 * MiB) as cache:
        assert cache.object_path(digest(data)).read_bytes() == data
        assert cache.usage().jobs == {
            f"job-{first.pid}": JobPins(1, len(data)),
            f"job-{second.pid}": JobPins(1, len(data)),
        }


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mountpoint = tmp_path / "tmpfs"
    mountpoint.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mountpoint)], check=True)
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def test_full_disk_is_a_clear_error_and_the_cache_stays_usable(small_tmpfs: Path) -> None:
    small, big = os.urandom(300 * KiB), os.urandom(900 * KiB)
    source = MemorySource(blobs(small, big))
    # The budget is larger than the filesystem: the disk fills before the budget.
    with NodeCache(small_tmpfs / "cache", 64 * MiB) as cache:
        asyncio.run(cache.fill({digest(small): len(small)}, [source], job="j1"))
        with pytest.raises(CacheDiskFullError) as err:
            asyncio.run(cache.fill({digest(big): len(big)}, [source], job="j2"))
        assert err.value.path == str(small_tmpfs / "cache" / "tmp")
        assert err.value.needed == len(big)
        assert list((small_tmpfs / "cache" / "tmp").iterdir()) == []
        usage = cache.usage()
        assert (usage.objects, usage.bytes_used) == (1, len(small))
        assert usage.jobs == {"j1": JobPins(1, len(small))}  # j2's pin rolled back

        cache.unpin("j1")
        cache.evict(64 * MiB)  # room made by the owner: the same fill now fits
        asyncio.run(cache.fill({digest(big): len(big)}, [source], job="j2"))
        assert cache.object_path(digest(big)).read_bytes() == big

    with NodeCache(small_tmpfs / "cache", 64 * MiB) as reopened:
        assert reopened.usage().jobs == {"j2": JobPins(1, len(big))}
