"""What the Beolaunch prolog costs a warm-cache job's start, on a real Slurm.

A 2-node virtual cluster brought up by the real ``beoctl cluster up -n 2
--slurm`` (master, node agents, munged, slurmctld, slurmds, the Prolog/Epilog
wrappers) in a state dir of its own made by ``init_isolated`` (as ``beoctl
init --isolated``: own names, a free subnet, own ports), and a bench
user made here who stores a manifest of ``/bin/true`` through the master's
``POST /manifests``. One job with the manifest warms both caches and leaves
the kept root; then, interleaved so the machine's load falls on both alike:

- figure: median wall time of ``srun -N2 --comment=beolaunch:manifest=ID
  true`` as the user (the prolog admits the job on both nodes, the epilog
  releases it);
- baseline: the same ``srun -N2 true`` without the comment, same cluster (the
  wrapper passes it through in the shell: "no prolog" to within a shell's
  start).

Each timed job starts on idle nodes (the previous job's epilog over): the
epilog runs after srun has returned, so it is not part of a job's start, but
a job started at once after a Beolaunch job would wait for it (measured so,
back to back, the job without the comment took 393 ms against 195 ms).

When the hooks' C client was built (``cc`` on PATH), the wrappers run it; a
third series, interleaved too, makes it non-executable for one job each time
so the wrappers fall back to the Python hook (``slurm_prolog_start_python``).

The last record, ``slurm_prolog_passthrough``, sets the pass-through job
against the same cluster with no Prolog/Epilog in slurm.conf at all (Slurm
restarted on that file), i.e. what a wrapper that exits costs. Goal of issue
6: the Beolaunch job within 1.2x of no prolog.
"""

from __future__ import annotations

import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.record import report
from launcher import cluster as vc
from launcher import config as beoconfig
from launcher.cluster import slurmdaemons
from launcher.isolation import init_isolated
from launcher.slurm import hookclient
from launcher.slurm.paths import SlurmPaths

REPEAT = 15
NODES = 2
BIN = Path(sys.executable).parent

_STORE = """
import os, sys
from pathlib import Path
from cachefs.closure import resolve
from cachefs.snapshot import snapshot
from launcher.master.client import BlockingClient
found = resolve(sys.argv[2], env={"PATH": "/usr/bin:/bin"})
manifest = snapshot(found.root, found.paths, None, owner=os.getuid())
print(BlockingClient(Path(sys.argv[1])).store_manifest(manifest.document()))
"""


def _run(argv: list[str], **kw: object) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, **kw)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed ({done.returncode}): {done.stderr}{done.stdout}")
    return str(done.stdout)


def _slurm_rows(config: Path) -> int:
    """How many node admissions of Slurm jobs the master recorded (accepted job nodes)."""
    from sqlalchemy import func, select

    from launcher.state.db import transaction
    from launcher.state.migrate import open_engine
    from launcher.state.models import Job, JobNode

    engine = open_engine(beoconfig.load(str(config)).database_url)
    try:
        with transaction(engine, readonly=True) as session:
            query = (
                select(func.count())
                .select_from(JobNode)
                .join(Job, Job.id == JobNode.job_id)
                .where(Job.scheduler == "slurm", JobNode.accepted_at.is_not(None))
            )
            return int(session.scalar(query) or 0)
    finally:
        engine.dispose()


def _settle(env: dict[str, str]) -> None:
    """Wait until every node is idle again: the last job's epilog has ended.

    Without this a job started right after a Beolaunch job waits for that
    job's epilog (its nodes are COMPLETING), and the wait lands on whichever
    job comes next."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        states = _run(["sinfo", "-h", "-N", "-o", "%T"], env=env).split()
        if states and all(state == "idle" for state in states):
            return
        time.sleep(0.02)
    raise RuntimeError("the nodes did not come back to idle within 60 s")


def _timed(argv: list[str], env: dict[str, str], cwd: str, ends: list[float]) -> float:
    """Wall time of ``argv`` started on idle nodes; appends to ``ends`` how long
    the nodes then took to be idle again (the epilog; coarse: sinfo's own
    start is its resolution)."""
    _settle(env)
    start = time.perf_counter()
    _run(argv, env=env, cwd=cwd)
    took = time.perf_counter() - start
    _settle(env)
    ends.append(time.perf_counter() - start - took)
    return took


def main() -> None:
    tag = secrets.token_hex(2)
    state = Path(tempfile.mkdtemp(prefix=f"beobs-{tag}-"))
    state.chmod(0o755)
    config = state / "config.toml"
    user = f"beobs{secrets.token_hex(3)}"
    beoctl = [str(BIN / "beoctl"), "--config", str(config)]
    made_user = False
    try:
        init_isolated(state, tag)
        config.chmod(0o644)
        _run(["useradd", "-m", "-s", "/bin/sh", user])
        made_user = True
        uid = int(_run(["id", "-u", user]))
        home = f"/home/{user}"
        _run([*beoctl, "cluster", "up", "-n", str(NODES), "--slurm"])
        paths = SlurmPaths.of_state(state)
        client = (paths.hooks_dir / hookclient.NAME).exists()
        hook = "the C hook client" if client else "the Python hook"
        env = {"PATH": f"{BIN}:/usr/bin:/bin", "HOME": home, "SLURM_CONF": str(paths.conf)}
        as_user = ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--init-groups", "--"]
        sock = str(state / "run" / "master.sock")
        out = _run([*as_user, sys.executable, "-c", _STORE, sock, "/bin/true"], env=env, cwd=home)
        manifest = out.strip().splitlines()[-1]
        plain = [*as_user, "srun", "-N", str(NODES), "true"]
        beo = [*plain[:-1], f"--comment=beolaunch:manifest={manifest}", "true"]
        ends: dict[str, list[float]] = {"c": [], "python": [], "plain": [], "none": []}
        _timed(beo, env, home, [])  # warm: fills both caches, leaves the kept root
        _timed(plain, env, home, [])
        figures: list[float] = []
        baselines: list[float] = []
        pythons: list[float] = []
        binary = paths.hooks_dir / hookclient.NAME
        for _ in range(REPEAT):
            figures.append(_timed(beo, env, home, ends["c"]))
            baselines.append(_timed(plain, env, home, ends["plain"]))
            if client:  # the wrapper runs the client only when executable
                binary.chmod(0o644)
                pythons.append(_timed(beo, env, home, ends["python"]))
                binary.chmod(0o755)
        admitted = _slurm_rows(config)
        if admitted < REPEAT + 1:
            raise RuntimeError(
                f"only {admitted} Slurm jobs admitted by the master, not {REPEAT + 1}"
            )
        # The same cluster with no Prolog/Epilog in slurm.conf at all.
        spec, _nodes = vc.status(state)
        if spec is None:
            raise RuntimeError(f"no virtual cluster in {state}")
        settings = beoconfig.load(str(config)).slurm
        slurmdaemons.up(state, spec, settings, hooks=None)
        _timed(plain, env, home, [])
        bare = [_timed(plain, env, home, ends["none"]) for _ in range(REPEAT)]
    finally:
        subprocess.run([*beoctl, "cluster", "down"], capture_output=True, timeout=300)
        if made_user:
            subprocess.run(["userdel", "-r", user], capture_output=True, check=False)
        shutil.rmtree(state, ignore_errors=True)
    figure, baseline, none = (statistics.median(x) * 1000 for x in (figures, baselines, bare))
    print(
        f"slurm_prolog ({hook}): srun -N{NODES} true as a user, median of {REPEAT}, interleaved: "
        f"warm Beolaunch job {figure:.1f} ms, same job without the comment "
        f"{baseline:.1f} ms; with no Prolog configured {none:.1f} ms ({admitted} node admissions)"
    )
    report(
        "slurm_prolog_start",
        figure,
        baseline,
        "ms",
        "a warm Beolaunch job within 1.2x of no prolog (issue 6)",
        higher_is_better=False,
    )
    idle = ", ".join(
        f"{what} {statistics.median(times) * 1000:.0f} ms" for what, times in ends.items() if times
    )
    print(f"slurm_prolog: from srun's return to idle nodes (the epilog), median: {idle}")
    if pythons:
        python = statistics.median(pythons) * 1000
        print(f"slurm_prolog: the same warm job with the Python hook: {python:.1f} ms")
        report(
            "slurm_prolog_start_python",
            python,
            baseline,
            "ms",
            "the Python hook, for comparison with the C client (issue 6: within 1.2x)",
            higher_is_better=False,
        )
    report(
        "slurm_prolog_passthrough",
        baseline,
        none,
        "ms",
        "a job without a manifest pays only the wrapper's shell",
        higher_is_better=False,
    )


if __name__ == "__main__":
    if os.geteuid() != 0:
        raise SystemExit("bench.slurm_prolog needs root (namespaces, Slurm daemons, a user)")
    main()
