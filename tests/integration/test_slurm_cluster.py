"""Slurm on the virtual cluster: real munged, slurmctld and slurmds in the nodes' namespaces.

One 2-node cluster for the module, brought up by the real ``beoctl cluster up
--slurm`` in a state dir of its own, made by ``init_isolated`` (as ``beoctl
init --isolated``: its own names, a free subnet and free ports for the services,
slurmctld and slurmd), so it runs beside other suites. Jobs go through the
scheduler adapter's command backend. Teardown runs ``beoctl cluster down`` and
checks with psutil that no daemon of this state dir and no namespace is left.
"""

from __future__ import annotations

import json
import pwd
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from launcher.cli.beoctl.slurm import daemon_rows
from launcher.slurm.adapter import SlurmCli
from tests.integration import vcluster as vc

pytestmark = vc.needs_root_and(
    *vc.SLURM,
    reason="Slurm on the virtual cluster needs root, iproute2, util-linux, slurm-wlm, munge",
)

BIN = vc.BIN
NODES = ("node1", "node2")
poll = vc.Poll(60.0)  # how long a poll waits (not asserted)


@dataclass(frozen=True)
class SlurmCluster:
    state: Path
    config: Path
    work: Path
    netns_prefix: str
    cli: SlurmCli

    def beoctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "beoctl"), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=180,
        )


@pytest.fixture(scope="module")
def sc(vcluster: vc.Clusters) -> SlurmCluster:
    c = vcluster(len(NODES), slurm=True)
    work = c.state / "work"
    work.mkdir()
    return SlurmCluster(c.state, c.config, work, c.netns_prefix, c.slurm_cli())


def test_nodes_are_idle_after_up(sc: SlurmCluster) -> None:
    nodes = {n.name: n for n in sc.cli.nodes()}
    assert sorted(nodes) == list(NODES)
    assert all(n.state == "idle" and not n.drained for n in nodes.values())


def test_batch_job_runs_on_a_node_and_is_accounted(sc: SlurmCluster) -> None:
    job_id = sc.cli.submit(["--chdir", str(sc.work), "-o", "out-%j.txt", "--wrap", "hostname"])
    job = poll(f"job {job_id} completed", lambda: vc.ended(sc.cli, job_id))
    assert job.state == "COMPLETED" and job.exit_code == 0
    assert len(job.nodes) == 1 and job.nodes[0] in NODES
    # The job ran in that node's UTS namespace: it printed the node's hostname.
    assert (sc.work / f"out-{job_id}.txt").read_text().strip() == job.nodes[0]
    done = poll("the jobcomp line", lambda: sc.cli.finished([job_id]))
    assert done[0].state == "COMPLETED" and done[0].nodes == job.nodes


def test_srun_across_both_nodes_sees_both_hostnames(sc: SlurmCluster) -> None:
    step = sc.cli.run(["-N", str(len(NODES)), "hostname"], timeout=120)
    assert step.returncode == 0, step.stderr
    assert sorted(step.stdout.split()) == list(NODES)


def test_failed_job_reports_its_exit_code(sc: SlurmCluster) -> None:
    job_id = sc.cli.submit(["--chdir", str(sc.work), "-o", "/dev/null", "--wrap", "exit 3"])
    job = poll(f"job {job_id} ended", lambda: vc.ended(sc.cli, job_id))
    assert (job.state, job.exit_code) == ("FAILED", 3)
    assert [j.job_id for j in sc.cli.jobs([job_id])] == [job_id]


def test_status_shows_the_daemons_and_second_up_restarts_none(sc: SlurmCluster) -> None:
    before = json.loads(sc.beoctl("cluster", "status", "--json").stdout)
    pids = {row["name"]: row["slurmd_pid"] for row in before}
    assert set(pids) == set(NODES) and all(isinstance(p, int) for p in pids.values())
    again = sc.beoctl("cluster", "up", "-n", str(len(NODES)), "--slurm")
    assert again.returncode == 0, again.stderr
    after = json.loads(sc.beoctl("cluster", "status", "--json").stdout)
    assert {row["name"]: row["slurmd_pid"] for row in after} == pids
    table = sc.beoctl("cluster", "status").stdout
    assert "slurmctld" in table and "munged" in table


def test_an_ordinary_user_runs_steps_through_the_clusters_munged(sc: SlurmCluster) -> None:
    # The socket dir is 0755 and slurm.conf 0644: a user's srun authenticates too.
    conf = sc.cli.env["SLURM_CONF"] if sc.cli.env else ""
    srun = ["srun", "-N", "1", "--chdir", "/tmp", "id", "-u"]
    done = subprocess.run(
        ["runuser", "-u", "nobody", "--", "env", f"SLURM_CONF={conf}", *srun],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(pwd.getpwnam("nobody").pw_uid)


def _slurm_pids(sc: SlurmCluster) -> dict[str, int]:
    rows = [r for r in _status_rows(sc) if r["alive"]]
    return {r["daemon"]: r["pid"] for r in rows}


def _status_rows(sc: SlurmCluster) -> list[dict[str, Any]]:
    return daemon_rows(sc.state)


def test_up_restarts_a_crashed_slurmctld_and_keeps_the_rest(sc: SlurmCluster) -> None:
    first = sc.cli.submit(["--chdir", str(sc.work), "-o", "/dev/null", "--wrap", "true"])
    poll(f"job {first} ended", lambda: vc.ended(sc.cli, first))
    before = _slurm_pids(sc)
    psutil.Process(before["slurmctld"]).kill()
    again = sc.beoctl("cluster", "up", "-n", str(len(NODES)), "--slurm")
    assert again.returncode == 0, again.stderr
    after = _slurm_pids(sc)
    assert after["slurmctld"] != before["slurmctld"]
    assert {k: v for k, v in after.items() if k != "slurmctld"} == {
        k: v for k, v in before.items() if k != "slurmctld"
    }
    step = sc.cli.run(["-N", str(len(NODES)), "hostname"], timeout=120)
    assert sorted(step.stdout.split()) == list(NODES), step.stderr
    # slurmctld restarts with -c: job ids go on past the jobs it had finished,
    # never reusing one the state DB may hold
    later = sc.cli.submit(["--chdir", str(sc.work), "-o", "/dev/null", "--wrap", "true"])
    assert later > first


def test_growing_the_cluster_restarts_slurm_on_the_new_config_and_shrinking_stops_it(
    sc: SlurmCluster,
) -> None:
    held = sc.cli.submit(["--hold", "-o", "/dev/null", "--wrap", "true"])  # not in jobcomp
    grown = sc.beoctl("cluster", "up", "-n", "3", "--slurm")
    assert grown.returncode == 0, grown.stderr
    try:
        # the restarted slurmctld goes on from what the old one would have given next
        after = sc.cli.submit(["--chdir", str(sc.work), "-o", "/dev/null", "--wrap", "true"])
        assert after > held
        assert sorted(n.name for n in sc.cli.nodes()) == [*NODES, "node3"]
        step = sc.cli.run(["-N", "3", "hostname"], timeout=120)
        assert sorted(step.stdout.split()) == [*NODES, "node3"], step.stderr
        node3 = _slurm_pids(sc)["slurmd.node3"]
    finally:
        shrunk = sc.beoctl("cluster", "up", "-n", str(len(NODES)), "--slurm")
    assert shrunk.returncode == 0, shrunk.stderr
    assert sorted(n.name for n in sc.cli.nodes()) == list(NODES)
    assert not psutil.pid_exists(node3) or psutil.Process(node3).status() == psutil.STATUS_ZOMBIE
