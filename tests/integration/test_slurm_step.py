"""A real Slurm step entering its environment root through ``beonode step``.

A 1-node Slurm cluster of its own (``beoctl cluster up --slurm`` in a state dir
of its own made by ``init_isolated``: own names, a free subnet, own ports); the
root is built on the host (the node shares its filesystem; the prolog that
will build it there is not this test's part), and an ordinary user made here
runs ``srun``/``sbatch``. What it shows: the
program runs in the root as a child of slurmstepd, and ``scancel`` ends it
and is accounted as CANCELLED.
"""

from __future__ import annotations

import asyncio
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from cachefs.cache import NodeCache
from cachefs.closure import resolve
from cachefs.dirsource import DirectorySource
from cachefs.snapshot import snapshot
from cachefs.store import Store
from launcher.node.roots.envroot import EnvRoot
from launcher.node.tasks import enter_step
from launcher.slurm.adapter import SlurmCli
from tests.integration import vcluster as vc

pytestmark = vc.needs_root_and(
    *vc.SLURM,
    "useradd",
    "setpriv",
    reason="needs root, iproute2, util-linux, slurm-wlm, munge and useradd",
)

BIN = vc.BIN
poll = vc.Poll(60.0)  # how long a poll waits (not asserted)


@dataclass(frozen=True)
class Rig:
    cli: SlurmCli
    env: dict[str, str]  # SLURM_CONF for the user's srun/sbatch
    user: str
    uid: int
    home: str
    root: EnvRoot
    job_tmp: Path


@pytest.fixture(scope="module")
def rig(vcluster: vc.Clusters) -> Rig:
    account = vcluster.user()
    name, uid = account.pw_name, account.pw_uid
    home = f"/home/{name}"
    c = vcluster(1, slurm=True)
    # The root is built on the host; it is freed once the cluster is down.
    work = c.state / "work"
    work.mkdir(mode=0o755)
    store = Store(work / "store")
    manifest = snapshot("/bin/sh", resolve("/bin/sh", env={"PATH": "/bin"}).paths, store)
    cache = NodeCache(work / "cache", 1 << 30)
    vcluster.after_down(cache.close)
    asyncio.run(cache.fill(manifest.objects(), [DirectorySource(work / "store")]))
    root = EnvRoot.create(manifest, cache, work / "roots", "job", home=home)
    vcluster.after_down(root.remove)
    job_tmp = work / "tmp"
    job_tmp.mkdir()
    job_tmp.chmod(0o1777)
    os.mkfifo(job_tmp / "never", 0o666)  # a read that blocks until scancel
    env = {"PATH": "/usr/bin:/bin", "HOME": home, "SLURM_CONF": str(c.slurm.conf)}
    return Rig(c.slurm_cli(), env, name, uid, home, root, job_tmp)


def _as_user(rig: Rig, argv: list[str]) -> list[str]:
    return ["setpriv", f"--reuid={rig.uid}", f"--regid={rig.uid}", "--init-groups", "--", *argv]


def _step(rig: Rig, script: str) -> list[str]:
    return enter_step.command(str(rig.root.path), str(rig.job_tmp), ["/bin/sh", "-c", script])


def test_an_srun_step_runs_in_the_root_as_slurmstepds_child(rig: Rig) -> None:
    script = (
        'echo "$SLURM_JOB_ID"; while read -r k v; do [ "$k" = PPid: ] && p=$v; done '
        '< /proc/self/status; read -r parent < /proc/$p/comm; echo "$parent"; '
        "[ -e /usr/bin/srun ] && echo host-visible; exit 5"
    )
    argv = _as_user(rig, ["srun", "-N", "1", "--chdir", rig.home, *_step(rig, script)])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=rig.env)
    assert done.returncode == 5, done.stderr  # the program's own status, through srun
    job_id, parent = done.stdout.split()
    assert job_id.isdigit() and parent == "slurmstepd"


def test_scancel_ends_the_step_in_the_root_and_is_accounted(rig: Rig) -> None:
    step = shlex.join(_step(rig, "echo $$ > /tmp/pid.$SLURM_JOB_ID; read -r x < /tmp/never"))
    batch = f"#!/bin/sh\nexec {step}\n"
    out = f"{rig.home}/slurm-%j.out"
    sbatch = ["sbatch", "--parsable", "-N", "1", "--chdir", rig.home, "-o", out]
    submitted = subprocess.run(
        _as_user(rig, sbatch), input=batch, capture_output=True, text=True, env=rig.env, timeout=60
    )
    assert submitted.returncode == 0, submitted.stderr
    job_id = int(submitted.stdout.strip().split(";")[0])
    pid_file = rig.job_tmp / f"pid.{job_id}"
    pid = int(
        poll(f"the step's pid file ({out})", lambda: pid_file.exists() and pid_file.read_text())
    )
    proc = psutil.Process(pid)
    assert proc.uids().real == rig.uid
    parent = proc.parent()
    assert (
        parent is not None and parent.name() == "slurmstepd"
    )  # batch script exec'd the launcher, it the program
    assert os.readlink(f"/proc/{pid}/root") == str(rig.root.path)
    rig.cli.cancel(job_id)
    poll("the step's process gone", lambda: not proc.is_running() or _zombie(proc))
    done = poll("the jobcomp line", lambda: rig.cli.finished([job_id]))
    assert done[0].state == "CANCELLED"


def _zombie(proc: psutil.Process) -> bool:
    try:
        return bool(proc.status() == psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True
