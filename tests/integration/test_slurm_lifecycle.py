"""The end of a Beolaunch job under a real Slurm: scancel, the epilog, time limits.

A 2-node cluster of its own (``beoctl cluster up --slurm`` in a state dir of
its own made by ``init_isolated``: own names, a free subnet, own service and
Slurm ports) and a user made here, who submits
with ``beosub`` (Slurm is the default: the state dir has a slurm.conf). The
job's program is a shell script that forks a tree (children, grandchildren,
and one process whose parent exits, so it leaves the step's process tree but
not its env root) and writes every pid to a file in the work dir (the user's
home, which the env root binds). What it shows: ``scancel`` leaves no process
of the tree alive on any node, neither by pid nor by root; the epilog
unpinned the job's objects in each node's cache and the master recorded the
job's end; ``beosub -t 1`` ends TIMEOUT with nothing left; the epilog run
twice more by hand changes nothing.

The time limit cannot be shortened: Slurm's minimum is one minute and the
generated slurm.conf has no OverTimeLimit/KillWait setting, so that job takes
60-90 s (slurmctld checks limits about every 30 s). It is submitted first (the
scancel fixture asks for it), so that its minute overlaps the other tests.

slurmd's epilog says exit 0 for a job Slurm killed: the master's record of
such a job must follow Slurm's state (cancelled; a timeout failed, 128+signal).
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import Engine, select

from launcher import config as beoconfig
from launcher.slurm.adapter import SlurmCli
from launcher.slurm.paths import SlurmPaths
from launcher.slurm.types import Job as SlurmJob
from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.models import CachePin, Event, Job, JobNode
from tests.integration import vcluster as vc

pytestmark = vc.needs_root_and(
    *vc.SLURM,
    "useradd",
    "runuser",
    reason="needs root, iproute2, util-linux, slurm-wlm, munge and useradd",
)

BIN = vc.BIN
NODES = ("node1", "node2")
poll = vc.Poll(90.0, 0.2)  # how long a poll waits (not asserted)
TIMEOUT_WAIT_S = 200.0  # a one-minute limit, slurmctld's ~30 s check, KillWait 30 s
#: [slurm] unreported_grace: how long a job over in Slurm waits for a silent epilog
UNREPORTED_GRACE_S = 5

# Each task writes its pids to pids-JOB-NODEID in the work dir: 2 children, each
# with 2 grandchildren, one process orphaned on purpose (its parent exits, so it
# is reparented out of the step's tree but stays in the env root), and itself.
# The orphan lets go of the step's output: holding it would keep slurmstepd
# waiting (proctrack/linuxproc does not see the orphan) and delay the job's end,
# and so its epilog, by about 70 s (Slurm gives up, then runs the epilog anyway).
TREE = """#!/bin/sh
out="$PWD/pids-$SLURM_JOB_ID-$SLURM_NODEID"
child() {
    sleep "$1" & echo "$!" >> "$out"
    sleep "$1" & echo "$!" >> "$out"
    wait
}
child "$1" & echo "$!" >> "$out"
child "$1" & echo "$!" >> "$out"
( sleep "$1" </dev/null >/dev/null 2>&1 & echo "$!" >> "$out" )
echo "$$" >> "$out"
wait
"""
TREE_PIDS = 8  # per task: 2 children + 4 grandchildren + 1 orphan + the script


@dataclass(frozen=True)
class Rig:
    state: Path
    config: Path
    work: Path  # in the user's home: jobs are submitted from here and write here
    user: str
    uid: int
    cli: SlurmCli
    engine: Engine
    tree: Path  # the TREE script, the user's

    def beosub(self, *args: str) -> subprocess.CompletedProcess[str]:
        argv = ["runuser", "-u", self.user, "--", "env", f"BEOLAUNCH_CONFIG={self.config}"]
        return subprocess.run(
            [*argv, str(BIN / "beosub"), *args],
            cwd=self.work,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def submit_tree(self, *options: str, seconds: str = "300") -> int:
        done = self.beosub(
            *options, "-o", "out-%j.txt", "--include", "/usr/bin/sleep",
            "--", str(self.tree), seconds,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return int(done.stdout.strip())

    def node_dir(self, node: str) -> Path:
        return self.state / "cluster" / node


@pytest.fixture(scope="module")
def rig(vcluster: vc.Clusters) -> Rig:
    account = vcluster.user()
    work = Path(account.pw_dir) / "work"
    work.mkdir()
    os.chown(work, account.pw_uid, account.pw_gid)
    tree = work / "tree.sh"
    tree.write_text(TREE)
    tree.chmod(0o755)
    os.chown(tree, account.pw_uid, account.pw_gid)
    settings = {"slurm": {"unreported_grace": UNREPORTED_GRACE_S}}
    c = vcluster(2, slurm=True, settings=settings)
    engine = open_engine(beoconfig.load(str(c.config)).database_url)
    vcluster.after_down(engine.dispose)
    cli = c.slurm_cli()
    return Rig(c.state, c.config, work, account.pw_name, account.pw_uid, cli, engine, tree)


# --- what the tests look at -------------------------------------------------------


def _job_row(rig: Rig, slurm_job: int) -> dict[str, Any] | None:
    """The master's record of a Slurm job: state, exit, each node's part, pins, events."""
    with transaction(rig.engine, readonly=True) as session:
        job = session.scalars(
            select(Job).where(Job.scheduler == "slurm", Job.scheduler_job_id == str(slurm_job))
        ).first()
        if job is None:
            return None
        parts = {
            p.node.name: (p.accepted_at is not None, p.exit_status)
            for p in session.scalars(select(JobNode).where(JobNode.job_id == job.id))
        }
        pins = len(list(session.scalars(select(CachePin).where(CachePin.job_id == job.id))))
        events = [e.message for e in session.scalars(select(Event).where(Event.job_id == job.id))]
        return {
            "id": job.id,
            "state": job.state,
            "reason": job.reason,
            "exit": job.exit_status,
            "ended": job.ended_at is not None,
            "parts": parts,
            "pins": pins,
            "events": sorted(events),
        }


def _ended_row(rig: Rig, slurm_job: int) -> dict[str, Any]:
    row = poll(
        f"the master's end of slurm job {slurm_job}",
        lambda: (r := _job_row(rig, slurm_job)) and r["ended"] and r,
    )
    assert isinstance(row, dict)
    return row


def _pins(rig: Rig, node: str) -> dict[str, Any]:
    """The holders pinning objects in a node's cache (its pins.json)."""
    path = rig.node_dir(node) / "cache" / "pins.json"
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    pins = doc["pins"]
    assert isinstance(pins, dict)
    return pins


def _tree_pids(rig: Rig, slurm_job: int, node_id: int) -> list[int]:
    path = rig.work / f"pids-{slurm_job}-{node_id}"
    try:
        pids = [int(p) for p in path.read_text().split()]
    except FileNotFoundError:
        return []
    return pids if len(pids) >= TREE_PIDS else []


def _root_of(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/root")
    except OSError:
        return None


def _alive(pid: int, started: float | None) -> bool:
    """Whether the process ``pid`` that started at ``started`` still runs (a zombie
    does not: PID 1 reaps orphans late here). With no start time known, a live
    ``pid`` counts when it still runs the tree's script or its sleep."""
    try:
        proc = psutil.Process(pid)
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if started is None:
            return any("tree.sh" in a or a == "sleep" for a in proc.cmdline())
        return proc.create_time() == started
    except psutil.NoSuchProcess:
        return False


def _in_roots(roots: set[str]) -> list[tuple[int, str]]:
    """Live processes whose root is one of ``roots``."""
    found = []
    for proc in psutil.process_iter():
        root = _root_of(proc.pid)
        try:
            if root in roots and proc.status() != psutil.STATUS_ZOMBIE:
                found.append((proc.pid, root))
        except psutil.NoSuchProcess:
            continue
    return found


@dataclass(frozen=True)
class Tree:
    started: dict[int, float | None]  # pid -> start time (None: not known)
    roots: set[str]  # the env roots the tree ran in


def _running_tree(rig: Rig, slurm_job: int, tasks: int) -> Tree:
    """Every pid of the job's trees (once all are written) with its start time;
    each one is checked to run inside an env root under its node's roots dir."""
    pids = poll(
        f"the pids of slurm job {slurm_job}",
        lambda: (p := [_tree_pids(rig, slurm_job, i) for i in range(tasks)]) and all(p) and p,
    )
    job = rig.cli.job(slurm_job)
    assert job.state == "RUNNING", job
    tops = tuple(os.path.realpath(rig.node_dir(n) / "roots") + "/" for n in job.nodes)
    started: dict[int, float | None] = {}
    roots = set()
    for task in pids:
        parents = {}
        for pid in task:
            proc = psutil.Process(pid)
            started[pid] = proc.create_time()
            root = _root_of(pid)
            assert root is not None and root.startswith(tops), (pid, proc.cmdline(), root)
            roots.add(root)
            if proc.ppid() not in task:
                parents[pid] = psutil.Process(proc.ppid()).name()
        # the script is slurmstepd's child; the orphan has left the step's tree
        assert sorted(parents.values()).count("slurmstepd") == 1 and len(parents) == 2, parents
    return Tree(started, roots)


def _nothing_left(tree: Tree) -> None:
    """Poll until no process of ``tree`` runs, by pid and by root; fail naming them."""

    def left() -> list[Any]:
        by_pid = [pid for pid, at in tree.started.items() if _alive(pid, at)]
        return by_pid + _in_roots(tree.roots)

    try:
        poll("no process of the tree left", lambda: not left(), 30.0)
    except AssertionError:
        raise AssertionError(f"left alive (pid or (pid, root)): {left()}") from None


@dataclass(frozen=True)
class Ended:
    """A Beolaunch job Slurm ended, as Slurm and the master saw it."""

    slurm: SlurmJob
    tree: Tree
    row: dict[str, Any]  # _job_row after the master recorded the end
    pinned_while_running: dict[str, bool]  # node -> its pins.json held the job


@dataclass(frozen=True)
class Running:
    """A Beolaunch job whose trees all run: its pids and roots, its pins."""

    job_id: int
    master_job: str  # the master's id of the job: its pin holder, its root's name
    tree: Tree
    pinned: dict[str, bool]  # node -> its pins.json holds the job


def _running(rig: Rig, job_id: int, tasks: int) -> Running:
    tree = _running_tree(rig, job_id, tasks)
    row = poll("the job accepted", lambda: _job_row(rig, job_id))
    nodes = rig.cli.job(job_id).nodes
    master_job = str(row["id"])
    return Running(job_id, master_job, tree, {n: master_job in _pins(rig, n) for n in nodes})


def _until_ended(rig: Rig, running: Running) -> Ended:
    job_id = running.job_id
    slurm = poll(f"slurm job {job_id} ended", lambda: vc.ended(rig.cli, job_id), TIMEOUT_WAIT_S)
    return Ended(slurm, running.tree, _ended_row(rig, job_id), running.pinned)


@pytest.fixture(scope="module")
def time_limited(rig: Rig) -> Running:
    """A one-node tree sleeping forever under a one-minute limit, submitted before
    the other tests so that its minute runs meanwhile."""
    job_id = rig.submit_tree("-N", "1", "-t", "1", seconds="infinity")
    return _running(rig, job_id, 1)


@pytest.fixture(scope="module")
def cancelled(rig: Rig, time_limited: Running) -> Ended:
    """A 2-node tree, scancelled once it all runs."""
    job_id = rig.submit_tree("-N", "2")
    running = _running(rig, job_id, len(NODES))
    rig.cli.cancel(job_id)
    return _until_ended(rig, running)


@pytest.fixture(scope="module")
def timed_out(rig: Rig, time_limited: Running) -> Ended:
    return _until_ended(rig, time_limited)


def _check_released(rig: Rig, ended: Ended) -> None:
    """Nothing of the tree is left; each node's epilog unpinned; the master ended the job."""
    _nothing_left(ended.tree)
    row = ended.row
    nodes = ended.slurm.nodes
    assert ended.pinned_while_running == dict.fromkeys(nodes, True)
    pins = {n: _pins(rig, n) for n in nodes}
    assert all(str(row["id"]) not in p for p in pins.values()), pins
    assert set(row["parts"]) == set(nodes), row
    assert all(accepted and status is not None for accepted, status in row["parts"].values()), row
    assert row["pins"] == 0, row
    for node in nodes:
        slurm_job = ended.slurm.job_id
        assert any(e.startswith(f"slurm job {slurm_job} on {node}: exit") for e in row["events"])


# --- the tests -----------------------------------------------------------------


def test_scancel_leaves_nothing_of_the_tree_and_the_epilog_unpins(
    rig: Rig, cancelled: Ended
) -> None:
    assert cancelled.slurm.state == "CANCELLED", cancelled.slurm
    assert len(cancelled.tree.started) == TREE_PIDS * len(NODES)
    assert len(cancelled.tree.roots) == len(NODES)
    _check_released(rig, cancelled)


def _killed_status(job: SlurmJob) -> int:
    """The status a job Slurm killed is recorded with (docs/slurm.md, Admission 4)."""
    return 128 + job.signal if job.signal else max(job.exit_code or 0, 1)


def test_the_master_records_a_cancelled_job_as_slurm_ended_it(cancelled: Ended) -> None:
    # slurmd's epilog says exit 0 for it: the master must take Slurm's word
    row = cancelled.row
    status = _killed_status(cancelled.slurm)
    assert (row["state"], row["exit"]) == ("cancelled", status), (row, cancelled.slurm)


def test_the_epilog_run_twice_by_hand_changes_nothing(rig: Rig, time_limited: Running) -> None:
    # The time-limited job may end meanwhile: its pins and root are not compared.
    other = {time_limited.master_job, f"root:{time_limited.master_job}"}

    def pins_and_roots() -> dict[str, tuple[dict[str, Any], list[str]]]:
        return {
            n: (
                {k: v for k, v in _pins(rig, n).items() if k not in other},
                # roots and tmp dirs live in the users' dirs: roots/u<uid>/<job>
                sorted({p.name for p in (rig.node_dir(n) / "roots").glob("u*/*")} - other),
            )
            for n in NODES
        }

    job_id = rig.submit_tree("-N", "2", seconds="0")
    ended = poll(f"slurm job {job_id} ended", lambda: vc.ended(rig.cli, job_id))
    assert (ended.state, ended.exit_code) == ("COMPLETED", 0), ended
    before = _ended_row(rig, job_id)
    assert before["state"] == "completed" and before["pins"] == 0, before
    pins = {n: _pins(rig, n) for n in NODES}
    on_disk = pins_and_roots()
    assert all(str(before["id"]) not in p for p in pins.values()), pins
    assert ended.comment is not None
    for node in NODES:
        env = {
            "PATH": f"{BIN}:/usr/sbin:/usr/bin:/sbin:/bin",
            "SLURM_JOB_ID": str(job_id),
            "SLURMD_NODENAME": node,
            "SLURM_JOB_UID": str(rig.uid),
            "SLURM_JOB_USER": rig.user,
            "SLURM_JOB_COMMENT": ended.comment,
            "SLURM_SCRIPT_CONTEXT": "epilog_slurmd",
            "SLURM_JOB_EXIT_CODE": "1792",  # another status (7) must not be recorded
            "SLURM_JOB_EXIT_CODE2": "7:0",
        }
        for _ in range(2):
            again = subprocess.run(
                [str(BIN / "beoctl"), "--config", str(rig.config), "slurm", "epilog"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert again.returncode == 0, again.stderr
    assert _job_row(rig, job_id) == before
    assert pins_and_roots() == on_disk


def test_a_time_limit_ends_the_job_timeout_and_leaves_nothing(rig: Rig, timed_out: Ended) -> None:
    assert timed_out.slurm.state == "TIMEOUT", timed_out.slurm
    assert len(timed_out.tree.started) == TREE_PIDS and len(timed_out.tree.roots) == 1
    _check_released(rig, timed_out)


def test_the_master_records_a_timed_out_job_as_failed(timed_out: Ended) -> None:
    row = timed_out.row
    status = _killed_status(timed_out.slurm)
    assert (row["state"], row["exit"]) == ("failed", status), (row, timed_out.slurm)


def test_a_job_whose_node_agent_was_killed_ends_once_slurm_ended_it(rig: Rig) -> None:
    # Issue 12: node2's agent dies while the job runs, so node2's epilog cannot
    # report; the master's row must still end, as Slurm says, with the reason.
    job_id = rig.submit_tree("-N", "2")
    running = _running(rig, job_id, len(NODES))
    agent = psutil.Process(int((rig.node_dir("node2") / "agent.pid").read_text().split()[0]))
    try:
        agent.kill()
        agent.wait(30)
        rig.cli.cancel(job_id)
        slurm = poll(f"slurm job {job_id} ended", lambda: vc.ended(rig.cli, job_id))
        assert slurm.state == "CANCELLED", slurm
        row = poll(
            "the master ends the row without node2's epilog",
            lambda: (r := _job_row(rig, job_id)) and r["ended"] and r,
            UNREPORTED_GRACE_S + 90,
        )
        assert row["state"] == "cancelled", row
        assert "node2" in row["reason"] and "never reported" in row["reason"], row
        assert row["parts"]["node2"] == (True, None), row  # no exit was invented for it
        assert row["pins"] == 0, row
    finally:
        # A new agent for node2 (it kills what the job left in its root: the
        # orphan the dead agent's epilog could not), and node2 back in service
        # in Slurm (its failed epilog drained it).
        subprocess.run(
            [
                str(BIN / "beoctl"),
                "--config",
                str(rig.config),
                "cluster",
                "up",
                "-n",
                "2",
                "--slurm",
            ],
            capture_output=True,
            timeout=300,
        )
        subprocess.run(
            ["scontrol", "update", "NodeName=node2", "State=RESUME"],
            env={**os.environ, **SlurmPaths.of_state(rig.state).env()},
            capture_output=True,
            timeout=60,
        )
    _nothing_left(running.tree)
