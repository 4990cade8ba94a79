"""How long ``beonode step`` takes to put a job step in its environment root.

Root: /bin/sh's closure (resolver + snapshot into a store, node cache filled
from it), as a FUSE view. Each run is as ``nobody``, with no privilege, of
``sh -c 'exit 0'`` in the root, started and reaped from here.

Figure: median wall time of the fast form (``python -I -S -c`` importing enter_step, what
a batch script uses; :func:`launcher.node.tasks.enter_step.command`). Baseline, same
run, same root, same user: the same steps with util-linux from a shell
(``unshare -rm``, ``mount --rbind`` x3, ``chroot``: four C programs; it maps
the user to root in the namespace, which ours does not). Also printed: the
console entry (``beonode step``), ``sh -c 'exit 0'`` alone (the floor), and
so the time from the launcher's exec to the program's exec (figure minus
floor). Goal: under 50 ms from exec to exec (a Python interpreter's own start
is ~10 ms here, about the whole baseline: the ratio shows that cost).
"""

from __future__ import annotations

import asyncio
import compileall
import os
import py_compile
import resource
import shutil
import statistics
import subprocess
import sys
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
from launcher.node.tasks import enter_step

REPEAT = 30
NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "--"]
PROGRAM = ["/bin/sh", "-c", "exit 0"]
SHELL_WAY = (
    'for d in proc dev; do mount --rbind /$d "$0/$d" || exit 1; done; '
    'mount --rbind "$1" "$0/tmp" || exit 1; '
    'exec chroot "$0" /bin/sh -c "exit 0"'
)


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _timed(argv: list[str]) -> tuple[float, float]:
    """(wall, CPU) seconds of one run, start to reaped; CPU barely depends on load."""
    cpu, started = _cpu(), time.perf_counter()
    done = subprocess.run(
        argv,
        capture_output=True,
        check=False,
        cwd="/",
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
    )
    took = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"{argv}: exit {done.returncode}: {done.stderr.decode()}")
    return took, _cpu() - cpu


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-step-") as work_dir:
        work = Path(work_dir)
        work.chmod(0o755)  # nobody walks to the root and the tmp
        store = Store(work / "store")
        manifest = snapshot(
            "/bin/sh",
            resolve("/bin/sh", env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}).paths,
            store,
        )
        cache = NodeCache(work / "cache", 1 << 30)
        asyncio.run(cache.fill(manifest.objects(), [DirectorySource(work / "store")]))
        root = EnvRoot.create(manifest, cache, work / "roots", "bench")
        tmp = work / "tmp"
        tmp.mkdir()
        tmp.chmod(0o1777)
        # Installed as pip installs (bytecode compiled): this session's Python may
        # run with PYTHONDONTWRITEBYTECODE, and nobody cannot write __pycache__.
        py_compile.compile(enter_step.__file__, doraise=True)
        for package in ("launcher", "cachefs"):  # what beonode step imports
            compileall.compile_dir(Path(enter_step.__file__).parents[3] / package, quiet=1)
        fast = [*NOBODY, *enter_step.command(str(root.path), str(tmp), PROGRAM, home="/")]
        console = [
            *NOBODY,
            str(Path(sys.executable).with_name("beonode")),
            *("step", "--root", str(root.path), "--tmp", str(tmp), "--home", "/", "--"),
            *PROGRAM,
        ]
        unshare = shutil.which("unshare") or "unshare"
        shell = [
            *NOBODY,
            *(unshare, "-rm", "--propagation", "private", "/bin/sh", "-c", SHELL_WAY),
            *(str(root.path), str(tmp)),
        ]
        floor = [*NOBODY, *PROGRAM]
        times: dict[str, list[float]] = {"fast": [], "console": [], "shell": [], "floor": []}
        cpus: dict[str, list[float]] = {name: [] for name in times}
        try:
            for _ in range(REPEAT):  # interleaved: all see the same machine load
                for name, argv in (
                    ("fast", fast),
                    ("console", console),
                    ("shell", shell),
                    ("floor", floor),
                ):
                    wall, cpu = _timed(argv)
                    times[name].append(wall)
                    cpus[name].append(cpu)
        finally:
            root.remove()
            cache.close()
    med = {name: statistics.median(values) for name, values in times.items()}
    cpu_ms = {name: statistics.median(values) * 1000 for name, values in cpus.items()}
    print(
        f"step_enter: console entry (beonode step) {med['console'] * 1000:.1f} ms, "
        f"sh alone {med['floor'] * 1000:.1f} ms; exec to exec: fast form "
        f"{(med['fast'] - med['floor']) * 1000:.1f} ms, console "
        f"{(med['console'] - med['floor']) * 1000:.1f} ms; CPU ms per run (load-proof): "
        f"fast {cpu_ms['fast']:.1f}, console {cpu_ms['console']:.1f}, "
        f"util-linux {cpu_ms['shell']:.1f}, sh alone {cpu_ms['floor']:.1f}"
    )
    report(
        "step_enter",
        med["fast"],
        med["shell"],
        "s",
        f"under 50 ms exec to exec ({root.variant} view, as nobody; "
        "baseline: util-linux unshare+mount+chroot from a shell)",
        higher_is_better=False,
    )


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit(
            "bench.step_enter: needs root (to build the root; the steps run as nobody)"
        )
    main()
