"""What the FUSE environment root costs a job, warm.

(a) ``python3 -c pass`` 50 times, chrooted onto the FUSE view of python3's
closure (made as a submission makes it: ``cachefs.closure.resolve``, then
``snapshot`` into a store, which records mtimes so the closure's ``.pyc``
files stay valid), against the same 50 runs directly on the host (chrooted at
'/', so both pay the same fork and chroot).
(b) Read a 200 MiB file through the view against reading its object file
directly, both read once first (warm page cache). Goal for each: within
1.10x of direct. Needs root and /dev/fuse; skipped otherwise.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.record import report
from cachefs.closure import resolve
from cachefs.manifest import Entry, build
from cachefs.snapshot import snapshot
from cachefs.store import Store
from cachefs.view.fuse import mount
from cachefs.view.tree import Tree

RUNS, ROUNDS = 50, 3
BIG = 200 * 1024 * 1024
CHUNK = 1024 * 1024
GOAL = "within 1.10x of direct, warm"


def _python_runs(root: Path) -> float:
    """Seconds per ``python3 -c pass`` chrooted at ``root``: median of ROUNDS x RUNS."""

    def enter() -> None:
        os.chroot(root)
        os.chdir("/")

    env = {"PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    argv = ["/usr/bin/python3", "-c", "pass"]
    subprocess.run(argv, preexec_fn=enter, env=env, check=True)  # warm
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(RUNS):
            subprocess.run(argv, preexec_fn=enter, env=env, check=True)
        rounds.append((time.perf_counter() - start) / RUNS)
    return statistics.median(rounds)


def _read_seconds(path: Path) -> float:
    """Seconds to read ``path`` whole, warm: median of 5 after one read."""
    buf = bytearray(CHUNK)

    def once() -> float:
        start = time.perf_counter()
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass
        return time.perf_counter() - start

    once()
    return statistics.median(once() for _ in range(5))


def _big_file_tree(work: Path, store: Store) -> tuple[Tree, Path]:
    source = work / "big.bin"
    with open(source, "wb") as f:
        for _ in range(BIG // CHUNK):
            f.write(os.urandom(CHUNK))
    sha, size = store.ingest(source)
    source.unlink()
    manifest = build("/data/big.bin", [Entry("/data/big.bin", "file", 0o644, size, sha)])
    return Tree.from_manifest(manifest, store.path), store.path(sha)


def _python_tree(store: Store) -> Tree:
    found = resolve("/usr/bin/python3", env={"PATH": "/usr/bin:/bin"})
    return Tree.from_manifest(snapshot(found.root, found.paths, store), store.path)


def _with_mount(tree: Tree, where: Path, measure: Callable[[Path], float]) -> float:
    where.mkdir()
    with mount(tree, where):
        return measure(where)


def main() -> None:
    if os.geteuid() != 0 or not os.path.exists("/dev/fuse"):
        print("view: skipped (needs root for chroot and /dev/fuse)")
        return
    with tempfile.TemporaryDirectory(prefix="bench-view-") as tmp:
        work = Path(tmp)
        store = Store(work / "store")
        view_python = _with_mount(_python_tree(store), work / "mnt", _python_runs)
        host_python = _python_runs(Path("/"))

        big_tree, big_object = _big_file_tree(work, store)
        fuse_read = _with_mount(
            big_tree, work / "mnt-big", lambda m: _read_seconds(m / "data/big.bin")
        )
        direct_read = _read_seconds(big_object)

    report(
        "view_python_startup_fuse_vs_host",
        view_python * 1000,
        host_python * 1000,
        "ms/run",
        GOAL,
        higher_is_better=False,
    )
    report(
        "view_read_200mib_fuse",
        fuse_read * 1000,
        direct_read * 1000,
        "ms",
        GOAL,
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
