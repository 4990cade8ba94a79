"""A node that goes silent ends its jobs as lost, never leaves them running (issue 12, item 5).

A real 2-node cluster (master, agents in namespaces) with ``[jobs] node_timeout_s``
short. An agent is killed with SIGKILL while its task runs, as a crash would:
back without the job, the job ends ``node_fail`` at once; never back, it ends
after the timeout, through a master restart too. The other node is freed and
its task killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from typing import Any

import psutil
import pytest
from sqlalchemy import select

from launcher.cluster import processes
from launcher.cluster import spec as specs
from launcher.config import load
from launcher.state.db import make_engine, transaction
from launcher.state.models import Job
from tests.integration import vcluster as vc
from tests.integration.vcluster import E2E

pytestmark = vc.needs_root_and(
    *vc.CLUSTER, "useradd", "runuser", reason="needs root, iproute2, util-linux and useradd"
)

BIN = vc.BIN
TIMEOUT_S = 6
poll = vc.Poll(60.0, 0.2)


@pytest.fixture(scope="module")
def e2e(vcluster: vc.Clusters) -> E2E:
    return vcluster.e2e(2, settings={"jobs": {"node_timeout_s": TIMEOUT_S}})


def _agent(e: E2E, node: str) -> psutil.Process:
    pid = int((e.state / "cluster" / node / "agent.pid").read_text().split()[0])
    return psutil.Process(pid)


def _job_row(e: E2E, job: int) -> dict[str, Any]:
    rows = e.json("beostat", "jobs", "--all")
    return next(r for r in rows if r["job"] == job)


def _nodes(e: E2E) -> dict[str, str]:
    return {r["name"]: r["state"] for r in e.json("beostat", "nodes")}


def _start_long_job(e: E2E, marker: str) -> tuple[subprocess.Popen[str], int, list[int]]:
    """``beosub -N 2`` of a task that runs until killed; its job id and task pids."""
    before = {r["job"] for r in e.json("beostat", "jobs", "--all")}
    proc = e.beosub_bg("-N", "2", "--", "/bin/sleep", f"300.{marker}")
    job = poll(
        "the job runs",
        lambda: next(
            (
                r["job"]
                for r in e.json("beostat", "jobs")
                if r["job"] not in before and r["state"] == "running"
            ),
            None,
        ),
    )
    pids = poll(
        "both tasks are up",
        lambda: (
            found
            if len(found := [p["pid"] for p in e.json("beostat", "ps") if p["job"] == job]) >= 2
            else None
        ),
    )
    return proc, job, pids


def _gone(pids: list[int]) -> bool:
    return not any(
        psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE for p in pids
    )


def test_an_agent_killed_and_restarted_ends_the_job_node_fail_at_once(e2e: E2E) -> None:
    proc, job, pids = _start_long_job(e2e, "1")
    _agent(e2e, "node2").kill()  # SIGKILL: the agent's tasks are orphaned, its state lost
    e2e.admin("beoctl", "cluster", "up", "-n", "2")  # starts a new agent: it kills the orphan
    out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, (out, err)
    assert "came back without the job's tasks" in err, err
    row = _job_row(e2e, job)
    assert row["state"] == "node_fail", row
    assert "node2" in row["reason"], row
    poll("every task of the job is gone", lambda: _gone(pids))
    poll("both nodes are free", lambda: _nodes(e2e) == {"node1": "up", "node2": "up"})


def _cut(e: E2E, node: str, up: bool) -> None:
    """Take ``node``'s cable out (its veth down) or put it back: the agent and its
    tasks keep running, nothing reaches the master, no connection is reset."""
    spec = specs.read(e.state)
    assert spec is not None
    veth = next(n.host_veth for n in spec.nodes if n.name == node)
    subprocess.run(["ip", "link", "set", veth, "up" if up else "down"], check=True)


def test_a_node_cut_off_ends_the_job_after_the_timeout_and_is_released_when_back(
    e2e: E2E,
) -> None:
    proc, job, pids = _start_long_job(e2e, "2")
    _cut(e2e, "node2", up=False)
    try:
        started = time.monotonic()
        out, err = proc.communicate(timeout=120)
        took = time.monotonic() - started
        assert proc.returncode != 0, (out, err)
        assert f"nothing heard from it for {TIMEOUT_S:g} s" in err, err
        assert took >= TIMEOUT_S - 5, took  # the clock runs from node2's last heartbeat
        assert _job_row(e2e, job)["state"] == "node_fail"
        nodes = _nodes(e2e)
        assert nodes["node1"] == "up" and nodes["node2"] == "down", nodes
        assert psutil.pid_exists(pids[1]) or psutil.pid_exists(pids[0])  # node2's still runs
    finally:
        _cut(e2e, "node2", up=True)
    # Back: its agent still holds the job, which ended: the master releases it there.
    poll("node2 is back", lambda: _nodes(e2e)["node2"] == "up")
    poll("node2's task is killed once it is back", lambda: _gone(pids))


def test_a_master_restart_does_not_keep_a_job_of_a_silent_node_running(e2e: E2E) -> None:
    proc, job, pids = _start_long_job(e2e, "3")
    _cut(e2e, "node2", up=False)
    try:
        master = int((e2e.state / "run" / "master.pid").read_text().split()[0])
        os.kill(master, signal.SIGKILL)
        proc.communicate(timeout=60)  # its stream ended with the master
        _start_master(e2e)  # not `cluster up`: it would plug node2 back in
        row = poll(
            "the job ends node_fail after the restart",
            lambda: r if (r := _job_row(e2e, job))["state"] == "node_fail" else None,
            seconds=TIMEOUT_S + 60,
        )
        assert "since the master started" in row["reason"], row
        assert _nodes(e2e)["node1"] == "up"
    finally:
        _cut(e2e, "node2", up=True)
    poll("node2 is back", lambda: _nodes(e2e)["node2"] == "up")
    poll("every task of the job is killed", lambda: _gone(pids))


def _start_master(e: E2E) -> None:
    """Start the master as ``cluster up`` does, and nothing else."""
    spec = specs.read(e.state)
    assert spec is not None and spec.master_argv is not None
    processes.start(
        spec.master_argv,
        specs.master_pid_file(e.state),
        specs.master_log_file(e.state),
        record=spec.master_argv,
    )
    poll("the master answers", lambda: e.admin("beostat", "nodes", check=False))


def test_kill_ends_a_job_the_database_says_runs_but_no_master_run_holds(e2e: E2E) -> None:
    config = load(str(e2e.config))
    engine = make_engine(config.database_url)
    try:
        with transaction(engine) as session:
            model = session.scalars(select(Job).order_by(Job.id.desc())).first()
            assert model is not None
            ghost = Job(
                scheduler="local",
                uid=e2e.uid,
                manifest_id=model.manifest_id,
                state="running",
                name="ghost",
            )
            session.add(ghost)
            session.flush()
            ghost_id = ghost.id
    finally:
        engine.dispose()
    out = e2e.admin("beoctl", "kill", str(ghost_id), "KILL")
    assert "cancelled" in out, out
    row = _job_row(e2e, ghost_id)
    assert row["state"] == "cancelled" and "no node held it" in row["reason"], row
