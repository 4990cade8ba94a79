"""How long a node takes to run a task in its environment root, start to reaped.

Root: /bin/sh's closure (resolver + snapshot into a store, node cache filled
from it), as a FUSE view. Figure: median of ``start_task`` + reading output +
``wait`` for ``sh -c 'exit 0'`` as nobody (private mount namespace, /proc,
/dev, /tmp bound, chroot, setuid). Baseline, same run, same root: the same
steps with util-linux (``unshare --mount``, ``mount --rbind`` x3, ``chroot
--userspec``) from a subprocess. Goal: under 0.1 s, so that starting the task
leaves most of beosub's 0.3 s launch budget to the network.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.record import report
from cachefs.cache import NodeCache
from cachefs.closure import resolve
from cachefs.dirsource import DirectorySource
from cachefs.snapshot import snapshot
from cachefs.store import Store
from launcher.node.roots.envroot import EnvRoot
from launcher.node.tasks.sandbox import TaskSpec, start_task

REPEAT = 30
NOBODY = 65534
ARGV = ["/bin/sh", "-c", "exit 0"]
SHELL_WAY = (
    'for d in proc dev; do mount --rbind /$d "$0/$d" || exit 1; done; '
    'mount --bind "$1" "$0/tmp" || exit 1; '
    f'exec chroot --userspec={NOBODY}:{NOBODY} "$0" /bin/sh -c "exit 0"'
)


async def _ours(root: EnvRoot, tmp: Path) -> None:
    spec = TaskSpec(ARGV, {"PATH": "/usr/bin:/bin"}, "/", NOBODY, NOBODY, [NOBODY], None)
    task = start_task(spec, root, tmp)
    async for _ in task.read_output():
        pass
    done = await task.wait()
    if done.status != 0:
        raise RuntimeError(f"the task exited {done.status}")


def _timed(call: object) -> float:
    assert callable(call)
    started = time.perf_counter()
    call()
    return time.perf_counter() - started


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-sandbox-") as work_dir:
        work = Path(work_dir)
        store = Store(work / "store")
        manifest = snapshot(
            "/bin/sh", resolve("/bin/sh", env={"PATH": "/usr/bin:/bin"}).paths, store
        )
        cache = NodeCache(work / "cache", 1 << 30)
        asyncio.run(cache.fill(manifest.objects(), [DirectorySource(work / "store")]))
        root = EnvRoot.create(manifest, cache, work / "roots", "bench")
        tmp = work / "tmp"
        tmp.mkdir(mode=0o1777)
        unshare = shutil.which("unshare") or "unshare"
        shell = [unshare, "--mount", "--propagation", "slave", "/bin/sh", "-c", SHELL_WAY]
        try:
            ours, theirs = [], []
            for _ in range(REPEAT):  # interleaved: both see the same machine load
                ours.append(_timed(lambda: asyncio.run(_ours(root, tmp))))
                theirs.append(
                    _timed(lambda: subprocess.run([*shell, str(root.path), str(tmp)], check=True))
                )
        finally:
            root.remove()
            cache.close()
    report(
        "sandbox_start",
        statistics.median(ours),
        statistics.median(theirs),
        "s",
        f"under 0.1 s ({root.variant} view; baseline: unshare+mount+chroot from a shell)",
        higher_is_better=False,
    )


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("bench.sandbox_start: needs root (mount, chroot)")
    main()
