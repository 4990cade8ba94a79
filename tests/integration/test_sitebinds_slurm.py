"""Site binds through a real Slurm (issue 13): the steps enter a root with the binds.

A 2-node Slurm cluster of its own (as test_beosub_slurm.py) whose config
binds a directory this machine has and one no node has. ``beosub --wait``
runs ``srun beonode step --slurm-job``, which asks the agent for the root and
its binds: the step starts in the submit dir under the bound directory and
writes there as the user. The missing bind is no line of the job's output;
nobody watches a Slurm job, so the nodes' events say it, once per node.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.integration import vcluster as vc

pytestmark = vc.needs_root_and(
    *vc.SLURM,
    "useradd",
    "runuser",
    reason="needs root, iproute2, util-linux, slurm-wlm, munge and useradd",
)

BIN = vc.BIN
NODES = ("node1", "node2")


@dataclass(frozen=True)
class Rig:
    config: Path
    user: str
    uid: int
    shared: Path  # bound in; its work dir is the user's
    missing: str  # bound in, on no node

    def beosub(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return vc.beosub_as(self.user, self.config, cwd, *args)

    def admin(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        return vc.admin_run(self.config, script, *args)


@pytest.fixture(scope="module")
def rig(vcluster: vc.Clusters) -> Rig:
    account = vcluster.user()
    shared = Path(tempfile.mkdtemp(prefix="beolaunch-bindtest-", dir="/var/tmp"))
    vcluster.after_down(shutil.rmtree, shared, ignore_errors=True)
    shared.chmod(0o755)
    (shared / "data").write_text("site data\n")
    (shared / "work").mkdir()
    os.chown(shared / "work", account.pw_uid, account.pw_gid)
    missing = f"/beolaunch-nowhere-{secrets.token_hex(4)}"
    settings = {"envroot": {"binds": [str(shared), missing]}}
    cluster = vcluster(len(NODES), slurm=True, settings=settings)
    return Rig(cluster.config, account.pw_name, account.pw_uid, shared, missing)


def test_a_step_starts_in_the_bound_submit_dir_and_the_missing_bind_is_an_event(
    rig: Rig,
) -> None:
    work = rig.shared / "work"
    script = 'pwd; read -r line < ../data; echo "$line"; echo written >> out'
    done = rig.beosub(work, "--wait", "-N", "2", "--", "/bin/sh", "-c", script)
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted([str(work), "site data"] * len(NODES))
    assert rig.missing not in done.stdout + done.stderr
    assert "not bound in" not in done.stderr  # the home is the user's, bound in
    out = work / "out"
    assert out.read_text() == "written\n" * len(NODES) and out.stat().st_uid == rig.uid
    for node in NODES:
        log = rig.admin("beoctl", "node", "log", node, "--level", "warning", "--json")
        assert log.returncode == 0, log.stderr
        notice = f"on {node}: {rig.missing} is not on this node; the job runs without it"
        said = [row for row in json.loads(log.stdout) if notice in row["message"]]
        assert len(said) == 1, log.stdout
