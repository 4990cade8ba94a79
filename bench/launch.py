"""Launching jobs on a real virtual cluster, as an ordinary user, through ``beosub``.

(a) Warm launch latency: median of 5 ``beosub -N 4 -- /bin/true`` (after one
run that fills the caches), timed as the user's whole command (``runuser`` and
the Python start of ``beosub`` included). Baseline, same run: ``/bin/true`` on
the 4 nodes one after another through ``ip netns exec``. Goal: under 0.3 s.

(b) Cold cache: a ~50 MB closure (a 48 MB random file shipped with
``--include``, plus ``/bin/true`` and its libraries) run on 1, 2, 4 and 8 nodes
whose caches are fresh (``cluster down`` and ``up`` before each size; the
master's store already holds the files, so only the fill is timed), submit to
done, and the master's egress (``bytes_from_master`` in ``beoacct usage``).
Goals at 8 nodes: egress under 2x the closure (reported as figure = egress,
baseline = 2 x closure, so ratio > 1 meets it) and time under 2x the time at 1
node (figure = time at 8, baseline = 2 x time at 1). Nodes fill from each
other: the master lays a tree over the job's nodes (``[peers] fanout``, default
2), only its root fetches from the master, and every parent relays objects
while it is still downloading them (docs/execution.md, "Peer fills"); before
that (master-only fills) the egress at 8 nodes was 8x the closure (400.6 MiB).

Runs on its own state dir, names, subnet and ports (``init_isolated``, as
``beoctl init --isolated``), so a demo can run beside it.
Needs root (namespaces, ``useradd``, ``runuser``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.record import report
from launcher.isolation import init_isolated

BIN = Path(sys.executable).parent
USER = "beobench"
WARM_NODES = 4
WARM_ROUNDS = 5
COLD_SIZES = (1, 2, 4, 8)
DATA_BYTES = 48 * 1024 * 1024
_MANIFEST_RE = re.compile(r"(\d+) objects \((\d+) bytes\)")


class Bench:
    """A state dir with its own layout and ports, driven through the console scripts."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.config = state / "config.toml"
        self.env = {**os.environ, "BEOLAUNCH_CONFIG": str(self.config)}

    def run(self, script: str, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / script), *args], env=self.env, capture_output=True, text=True, timeout=300
        )
        if done.returncode != 0:
            raise SystemExit(f"{script} {' '.join(args)} failed:\n{done.stderr}{done.stdout}")
        return done.stdout

    def json(self, script: str, *args: str) -> Any:
        return json.loads(self.run(script, *args, "--json"))

    def up(self, n: int) -> None:
        self.run("beoctl", "cluster", "up", "-n", str(n), "--cache-size", "256M")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if sum(node["state"] == "up" for node in self.json("beostat", "nodes")) >= n:
                return
            time.sleep(0.2)
        raise SystemExit(f"{n} nodes did not come up")

    def down(self) -> None:
        subprocess.run(
            [str(BIN / "beoctl"), "cluster", "down"], env=self.env, capture_output=True, timeout=120
        )

    def beosub_argv(self, *args: str) -> list[str]:
        """``beosub ARGS`` as the bench user."""
        as_user = ["runuser", "-u", USER, "--", "env", f"BEOLAUNCH_CONFIG={self.config}"]
        return [*as_user, str(BIN / "beosub"), *args]

    def beosub(self, cwd: Path, *args: str) -> float:
        """Seconds ``beosub ARGS`` took as the bench user; fails unless it exits 0."""
        t0 = time.perf_counter()
        done = subprocess.run(self.beosub_argv(*args), cwd=cwd, capture_output=True, text=True)
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            raise SystemExit(f"beosub {' '.join(args)} exited {done.returncode}:\n{done.stderr}")
        return seconds

    def last_job(self) -> int:
        return max(int(row["job"]) for row in self.json("beostat", "jobs", "--all"))

    def egress(self, job: int) -> int:
        rows = self.json("beoacct", "usage")
        return sum(int(r["bytes_from_master"]) for r in rows if str(r["job"]) == str(job))


def warm_launch(b: Bench, work: Path, netns_prefix: str) -> tuple[float, float]:
    """(median beosub seconds, median sequential ip netns exec seconds) on 4 nodes."""
    b.up(WARM_NODES)
    args = ("-N", str(WARM_NODES), "--", "/bin/true")
    b.beosub(work, *args)  # fills the caches and the page cache
    figure = statistics.median(b.beosub(work, *args) for _ in range(WARM_ROUNDS))
    namespaces = [f"{netns_prefix}{i}" for i in range(1, WARM_NODES + 1)]

    def sequential() -> float:
        t0 = time.perf_counter()
        for ns in namespaces:
            subprocess.run(["ip", "netns", "exec", ns, "/bin/true"], check=True)
        return time.perf_counter() - t0

    sequential()
    baseline = statistics.median(sequential() for _ in range(WARM_ROUNDS))
    return figure, baseline


def random_file(path: Path, size: int) -> Path:
    """``path`` filled with ``size`` random bytes, readable by all (the bench user ships it)."""
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    path.chmod(0o644)
    return path


def closure_bytes(b: Bench, work: Path, args: tuple[str, ...]) -> int:
    """Bytes of the closure ``beosub ARGS`` would ship (its ``--dry-run``)."""
    dry = subprocess.run(
        b.beosub_argv("--dry-run", *args), cwd=work, capture_output=True, text=True, check=True
    )
    m = _MANIFEST_RE.search(dry.stdout)
    if m is None:
        raise SystemExit(f"no object count in beosub --dry-run:\n{dry.stdout}")
    return int(m.group(2))


def cold_fill(b: Bench, work: Path) -> tuple[int, dict[int, tuple[float, int]]]:
    """Closure bytes, and per node count (submit-to-done seconds, master egress bytes)."""
    data = random_file(work / "data.bin", DATA_BYTES)
    args = ("--include", str(data), "--", "/bin/true")
    closure = closure_bytes(b, work, args)
    # One run to put the files in the master's store, so only fills are timed below.
    b.up(1)
    b.beosub(work, "-N", "1", *args)
    results: dict[int, tuple[float, int]] = {}
    for n in COLD_SIZES:
        b.down()  # fresh tmpfs caches
        b.up(n)
        seconds = b.beosub(work, "-N", str(n), *args)
        results[n] = (seconds, b.egress(b.last_job()))
    return closure, results


@contextlib.contextmanager
def isolated_bench(name: str, work_under: str | None = None) -> Iterator[tuple[Bench, Path, str]]:
    """A benchmark user, an isolated state dir and a work dir, all removed after:
    yields the Bench, the work dir and the isolated cluster's netns prefix."""
    if os.geteuid() != 0:
        raise SystemExit(f"bench.{name} needs root (namespaces, useradd, runuser)")
    made_user = subprocess.run(["id", USER], capture_output=True).returncode != 0
    if made_user:
        subprocess.run(
            ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", USER], check=True
        )
    state = Path(tempfile.mkdtemp(prefix=f"beobench-{name}-"))
    work = Path(tempfile.mkdtemp(prefix=f"beobench-{name}-work-", dir=work_under))
    b = Bench(state)
    try:
        for d in (state, work):
            d.chmod(0o755)
        iso = init_isolated(state, slurm=False)
        yield b, work, iso.netns_prefix
    finally:
        b.down()
        shutil.rmtree(state, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)
        if made_user:
            subprocess.run(["userdel", USER], capture_output=True)


def main() -> None:
    with isolated_bench("launch") as (b, work, prefix):
        warm, netns_exec = warm_launch(b, work, prefix)
        closure, cold = cold_fill(b, work)

    print(f"closure: {closure} bytes ({closure / 2**20:.1f} MiB)")
    print("nodes  submit->done s  master egress MiB  egress/closure")
    for n, (seconds, egress) in cold.items():
        print(f"{n:5d}  {seconds:13.3f}  {egress / 2**20:17.1f}  {egress / closure:14.2f}")
    report(
        "launch_warm_beosub_4_nodes",
        warm,
        netns_exec,
        "s",
        "beosub -N 4 -- /bin/true under 0.3 s (baseline: ip netns exec on the 4 nodes in turn)",
        higher_is_better=False,
    )
    t1, _ = cold[1]
    t8, egress8 = cold[8]
    report(
        "cold_fill_50MB_8_nodes_master_egress",
        egress8 / 2**20,
        2 * closure / 2**20,
        "MiB",
        "master egress at 8 nodes under 2x the closure (baseline = 2x closure; ratio > 1 meets it)",
        higher_is_better=False,
    )
    report(
        "cold_fill_50MB_8_nodes_time",
        t8,
        2 * t1,
        "s",
        "time at 8 nodes under 2x time at 1 node (baseline = 2x t1; ratio > 1 meets it)",
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
