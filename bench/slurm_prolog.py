"""What a Slurm prolog costs a job's start, on the virtual cluster's real Slurm.

A 2-node virtual cluster (own names, subnet and ports; no master or agents)
with this state dir's Slurm (:mod:`launcher.slurm.daemons`). Figure: median
wall time of ``srun -N2 true`` with ``Prolog``/``Epilog`` set to wrapper
scripts (``PrologFlags=Alloc``, so both nodes run the prolog before the step);
baseline, same run: the same with no Prolog/Epilog. The prolog is
``beoctl slurm prolog`` once that exists (an srun job has no Beolaunch
manifest, so it passes through: the pass-through cost), else a wrapper that
exits 0 (the mechanism's own cost). Goal of issue 6: the Beolaunch prolog
within 1.2x of no prolog for a warm-cache job.
"""

from __future__ import annotations

import os
import random
import secrets
import shutil
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.record import report
from launcher import cluster as vc
from launcher.cli.beoctl.slurm import beoctl_path, hooks_implemented
from launcher.slurm import conf, daemons
from launcher.slurm.paths import SlurmPaths
from launcher.slurm.settings import SlurmSettings

REPEAT = 20
NODES = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def _free_subnet() -> str:
    used = subprocess.run(["ip", "-4", "-o", "addr"], capture_output=True, text=True).stdout
    for _ in range(100):
        third = random.randint(1, 254)
        if f" 10.82.{third}." not in used:
            return f"10.82.{third}.0/24"
    raise RuntimeError("no free 10.82.x.0/24")


def _trivial_hooks(directory: Path) -> conf.Hooks:
    directory.mkdir(parents=True, exist_ok=True)
    hooks = conf.Hooks.in_dir(directory)
    for path in (hooks.prolog, hooks.epilog):
        path.write_text("#!/bin/sh\nexit 0\n")
        path.chmod(0o755)
    return hooks


def _median_srun(paths: SlurmPaths) -> float:
    env = paths.env()
    argv = ["srun", "-N", str(NODES), "true"]
    subprocess.run(argv, env=env, check=True, capture_output=True)  # warm up
    times = []
    for _ in range(REPEAT):
        start = time.perf_counter()
        subprocess.run(argv, env=env, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    tag = secrets.token_hex(2)
    state = Path(tempfile.mkdtemp(prefix=f"beobench-slurm-{tag}-"))
    state.chmod(0o755)
    layout = vc.Layout(
        bridge=f"bb{tag}",
        veth_prefix=f"bb{tag}v",
        netns_prefix=f"beobench{tag}-node",
        subnet=_free_subnet(),
    )
    settings = SlurmSettings(
        cluster_name=f"bb{tag}", slurmctld_port=_free_port(), slurmd_port=_free_port()
    )
    paths = SlurmPaths.of_state(state)
    try:
        spec = vc.up(state, NODES, layout=layout, cache_size="8M")
        daemons.up(state, spec, settings, hooks=None)
        baseline = _median_srun(paths)
        if hooks_implemented():
            what = "beoctl slurm prolog (pass-through)"
            config = state / "config.toml"
            hooks = daemons.write_hooks(paths.hooks_dir, beoctl_path(), config)
        else:
            what = "a prolog that exits 0"
            hooks = _trivial_hooks(paths.hooks_dir)
        daemons.up(state, spec, settings, hooks=hooks)
        figure = _median_srun(paths)
    finally:
        vc.down(state, layout=layout)
        shutil.rmtree(state, ignore_errors=True)
    print(f"slurm_prolog: srun -N{NODES} true, median of {REPEAT}, with {what}")
    report(
        "slurm_prolog_start",
        figure * 1000,
        baseline * 1000,
        "ms",
        "the Beolaunch prolog within 1.2x of no prolog (issue 6)",
        higher_is_better=False,
    )


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("bench.slurm_prolog needs root (namespaces, Slurm daemons)")
    main()
