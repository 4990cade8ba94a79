"""Slurm admission on the virtual cluster: the real prolog, epilog, agents and master.

One 2-node cluster for the module, brought up by the real ``beoctl cluster up
--slurm`` (master, node agents with their local sockets, munged, slurmctld,
slurmds; the Prolog/Epilog wrappers in slurm.conf) in a state dir of its own
made by ``init_isolated`` (own names, a free subnet, free ports for the
services, the peers and Slurm), a 60 s prolog timeout and a held job
released at most twice. A user made here stores a manifest through the
master's ``POST /manifests`` and submits with ``sbatch
--comment=beolaunch:manifest=ID``; the batch script enters the env root with
``beonode step --slurm-job``. Teardown: ``cluster down``, the user removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from cachefs.store import Store
from launcher import config as beoconfig
from launcher.slurm.adapter import SlurmCli
from launcher.slurm.paths import SlurmPaths
from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.models import CachePin, Event, Job, JobNode, Node
from tests.integration import vcluster as vc

pytestmark = vc.needs_root_and(
    *vc.SLURM,
    "useradd",
    "setpriv",
    reason="needs root, iproute2, util-linux, slurm-wlm, munge and useradd",
)

BIN = vc.BIN
NODES = ("node1", "node2")
poll = vc.Poll(90.0)  # how long a poll waits (not asserted)
PROGRAM = '#!/bin/sh\necho "in-root $(cat /proc/self/root/etc/beo-marker 2>/dev/null)$1"\n'


@dataclass(frozen=True)
class Rig:
    state: Path
    config: Path
    cli: SlurmCli
    engine: Engine
    user: str
    uid: int
    home: str
    env: dict[str, str]  # the user's environment for sbatch/srun

    def beoctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(BIN / "beoctl"), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=180,
        )

    def beoctl_json(self, tool: str, *args: str) -> Any:
        """``tool ... --json`` (beoacct, beostat) as root with this cluster's config."""
        done = subprocess.run(
            [str(BIN / tool), "--config", str(self.config), *args, "--json"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def as_user(self, argv: list[str], stdin: str | None = None) -> str:
        done = subprocess.run(
            ["setpriv", f"--reuid={self.uid}", f"--regid={self.uid}", "--init-groups", "--", *argv],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            cwd=self.home,
        )
        assert done.returncode == 0, f"{argv}: {done.stderr}"
        return done.stdout


@pytest.fixture(scope="module")
def rig(vcluster: vc.Clusters) -> Rig:
    account = vcluster.user()
    home = f"/home/{account.pw_name}"
    # peers on, on a free port (init_isolated)
    c = vcluster(2, slurm=True, settings={"slurm": {"prolog_timeout": 60, "release_held": 2}})
    engine = open_engine(beoconfig.load(str(c.config)).database_url)
    vcluster.after_down(engine.dispose)
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin",
        "HOME": home,
        "SLURM_CONF": str(c.slurm.conf),
        "BEOLAUNCH_CONFIG": str(c.config),
    }
    return Rig(c.state, c.config, c.slurm_cli(), engine, account.pw_name, account.pw_uid, home, env)


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


def _manifest(rig: Rig, text: str) -> str:
    """A program of the user's (a shell script with ``text`` in it), stored as the user."""
    prog = Path(rig.home) / f"prog-{secrets.token_hex(3)}.sh"
    prog.write_text(PROGRAM + f"# {text}\n")
    os.chown(prog, rig.uid, rig.uid)
    prog.chmod(0o755)
    sock = str(rig.state / "run" / "master.sock")
    out = rig.as_user([sys.executable, "-c", _STORE, sock, str(prog)])
    manifest = out.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{64}", manifest), out
    return manifest + " " + str(prog)


def _sbatch(rig: Rig, manifest_and_prog: str, *options: str) -> int:
    manifest, prog = manifest_and_prog.split()
    step = shlex.join([str(BIN / "beonode"), "step", "--slurm-job", "JOBID", "--", prog, "!"])
    script = "#!/bin/sh\n" + step.replace("JOBID", '"$SLURM_JOB_ID"') + "\n"
    argv = ["sbatch", "--parsable", f"--comment=beolaunch:manifest={manifest}", *options]
    argv += ["--chdir", rig.home, "-o", f"{rig.home}/slurm-%j.out"]
    return int(rig.as_user(argv, stdin=script).strip().split(";")[0])


def _job_row(rig: Rig, slurm_job: int) -> dict[str, Any] | None:
    with transaction(rig.engine, readonly=True) as session:
        job = session.scalars(
            select(Job).where(Job.scheduler == "slurm", Job.scheduler_job_id == str(slurm_job))
        ).first()
        if job is None:
            return None
        parts = {
            p.node.name: (p.accepted_at is not None, p.refused_reason, p.exit_status)
            for p in session.scalars(select(JobNode).where(JobNode.job_id == job.id))
        }
        pins = len(list(session.scalars(select(CachePin).where(CachePin.job_id == job.id))))
        events = [e.message for e in session.scalars(select(Event).where(Event.job_id == job.id))]
        return {
            "id": job.id,
            "state": job.state,
            "uid": job.uid,
            "exit": job.exit_status,
            "parts": parts,
            "pins": pins,
            "events": events,
        }


def _node_state(rig: Rig, name: str) -> tuple[str, str | None]:
    with transaction(rig.engine, readonly=True) as session:
        node = session.scalars(select(Node).where(Node.name == name)).one()
        return node.state, node.state_reason


def _node_events(rig: Rig, name: str) -> list[str]:
    """The messages of node ``name``'s events."""
    with transaction(rig.engine, readonly=True) as session:
        node = session.scalars(select(Node).where(Node.name == name)).one()
        return list(session.scalars(select(Event.message).where(Event.node_id == node.id)))


def _resume(rig: Rig, *nodes: str) -> None:
    for node in nodes:
        subprocess.run(
            ["scontrol", "update", f"nodename={node}", "state=resume"],
            env=rig.cli.env,
            capture_output=True,
            check=False,
        )


def test_a_beolaunch_job_runs_after_every_node_accepted(rig: Rig) -> None:
    manifest = _manifest(rig, "two nodes")
    job_id = _sbatch(rig, manifest, "-N", "2")
    job = poll(f"slurm job {job_id} ended", lambda: vc.ended(rig.cli, job_id))
    out = Path(rig.home) / f"slurm-{job_id}.out"
    assert job.state == "COMPLETED", out.read_text() if out.exists() else job
    assert "in-root !" in out.read_text()
    row = poll(
        "the job's end in the DB", lambda: (r := _job_row(rig, job_id)) and r["exit"] == 0 and r
    )
    assert row["uid"] == rig.uid and row["state"] == "completed"
    # accepted on both nodes, each ended with the job's status, nothing left pinned
    assert row["parts"] == {n: (True, None, 0) for n in NODES}
    assert row["pins"] == 0
    # Peer fills: the first job of this cluster, so both caches were cold; the
    # tree over [node1, node2] makes node2 fill from node1's peer service first.
    usage = rig.beoctl_json("beoacct", "usage", "--job", f"slurm:{job_id}")
    assert len(usage) == 1, usage
    fill = usage[0]
    closure = int(fill["bytes_total"]) // len(NODES)  # each node's copy of the closure
    assert int(fill["bytes_from_peers"]) > 0, fill
    assert closure <= int(fill["bytes_from_master"]) < 2 * closure, (fill, closure)


def test_a_job_without_a_manifest_runs_untouched(rig: Rig) -> None:
    job_id = int(rig.as_user(["sbatch", "--parsable", "--wrap", "hostname", "-o", "/dev/null"]))
    job = poll(f"slurm job {job_id} ended", lambda: vc.ended(rig.cli, job_id))
    assert job.state == "COMPLETED"
    assert _job_row(rig, job_id) is None


def test_the_epilog_run_again_changes_nothing(rig: Rig) -> None:
    manifest = _manifest(rig, "epilog twice")
    job_id = _sbatch(rig, manifest, "-N", "1")
    job = poll(f"slurm job {job_id} ended", lambda: vc.ended(rig.cli, job_id))
    assert job.state == "COMPLETED"
    before = poll("the job's end", lambda: (r := _job_row(rig, job_id)) and r["exit"] == 0 and r)
    assert before["pins"] == 0
    env = {
        "SLURM_JOB_ID": str(job_id),
        "SLURMD_NODENAME": job.nodes[0],
        "SLURM_JOB_COMMENT": f"beolaunch:manifest={manifest.split()[0]}",
        "SLURM_JOB_EXIT_CODE2": "7:0",  # a second epilog with another status is ignored
    }
    hook = SlurmPaths.of_state(rig.state).hooks_dir / "epilog"
    again = subprocess.run([str(hook)], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0, again.stderr
    assert _job_row(rig, job_id) == before


def test_a_manifest_of_another_uid_is_refused_by_the_prolog(rig: Rig) -> None:
    manifest = _manifest(rig, "not root's").split()[0]
    # root's srun with the user's manifest: the prolog refuses, srun fails at once
    done = subprocess.run(
        ["srun", "-N", "1", "-w", "node2", f"--comment=beolaunch:manifest={manifest}", "true"],
        env=rig.cli.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    try:
        assert done.returncode != 0
        _state, reason = poll(
            "node2 drained in the DB",
            lambda: _node_state(rig, "node2")[0] == "drained" and _node_state(rig, "node2"),
        )
        assert f"belongs to uid {rig.uid}, not to the job's uid 0" in (reason or "")
        drained = {n.name: n for n in rig.cli.nodes()}["node2"]
        assert drained.drained
        # Resumed in Slurm, the next job admitted there lifts the DB's drain too.
        _resume(rig, "node2")
        assert _node_state(rig, "node2")[0] == "drained"  # Slurm's resume alone: no change
        job_id = _sbatch(rig, _manifest(rig, "after resume"), "-N", "1", "-w", "node2")
        assert poll(f"slurm job {job_id}", lambda: vc.ended(rig.cli, job_id)).state == "COMPLETED"
        assert _node_state(rig, "node2") == ("up", None)
        lifted = _node_events(rig, "node2")
        assert any(
            e.startswith(f"node node2: resumed in Slurm (it admitted slurm job {job_id}); ")
            and "the drain 'refused slurm job " in e
            for e in lifted
        ), lifted
    finally:
        _resume(rig, "node2")


def test_a_node_that_cannot_fill_refuses_and_the_held_job_runs_on_the_other(
    rig: Rig,
) -> None:
    manifest = _manifest(rig, "no room")
    # node1's cache (a tmpfs) has no room left: its fill fails, it refuses
    ballast = rig.state / "cluster" / "node1" / "cache" / "ballast"
    subprocess.run(["dd", "if=/dev/zero", f"of={ballast}", "bs=1M"], capture_output=True)
    # node1 first: node2 is out of Slurm's choice until node1 has refused
    subprocess.run(
        ["scontrol", "update", "nodename=node2", "state=drain", "reason=beolaunch-test"],
        env=rig.cli.env,
        check=True,
        capture_output=True,
    )
    try:
        job_id = _sbatch(rig, manifest, "-N", "1")
        _state, reason = poll(
            "node1 drained in the DB",
            lambda: _node_state(rig, "node1")[0] == "drained" and _node_state(rig, "node1"),
        )
        assert f"slurm job {job_id}" in (reason or "") and "no space left" in (reason or "")
        _resume(rig, "node2")
        try:
            job = poll(f"slurm job {job_id} ended", lambda: vc.ended(rig.cli, job_id), 60)
        except AssertionError:
            log = (rig.state / "cluster" / "master.log").read_text()[-3000:]
            raise AssertionError(f"{rig.cli.job(job_id)}\n{_job_row(rig, job_id)}\n{log}") from None
        out = Path(rig.home) / f"slurm-{job_id}.out"
        assert job.state == "COMPLETED", out.read_text() if out.exists() else job
        assert job.nodes == ("node2",)
        assert "in-root !" in out.read_text()
        node1 = {n.name: n for n in rig.cli.nodes()}["node1"]
        assert node1.drained
        row = poll("the job's end", lambda: (r := _job_row(rig, job_id)) and r["exit"] == 0 and r)
        assert row["parts"]["node1"][0] is False
        assert "no space left" in (row["parts"]["node1"][1] or "")
        assert row["parts"]["node2"] == (True, None, 0)
        assert any(
            e.startswith(f"slurm job {job_id}: released from hold (1 of 2)") for e in row["events"]
        )
    finally:
        ballast.unlink(missing_ok=True)
        _resume(rig, "node1", "node2")


def test_a_damaged_store_object_is_repaired_and_no_node_is_drained(rig: Rig) -> None:
    # Issue 12: a copy damaged in the master's store made every node that tried it
    # refuse, and drained them one after the other.
    manifest = _manifest(rig, "damaged in the store")
    prog = manifest.split()[1]
    store = Store(beoconfig.load(str(rig.config)).store_dir)
    digest = hashlib.sha256(Path(prog).read_bytes()).hexdigest()
    path = store.path(digest)
    path.chmod(0o644)
    path.write_bytes(b"#!/bin/sh\necho tampered\n")
    try:
        job_id = _sbatch(rig, manifest, "-N", "1", "-w", "node1")
        job = poll(f"slurm job {job_id} ended", lambda: vc.ended(rig.cli, job_id), 90)
        out = Path(rig.home) / f"slurm-{job_id}.out"
        assert job.state == "COMPLETED", out.read_text() if out.exists() else job
        assert "in-root !" in out.read_text() and "tampered" not in out.read_text()
        assert _node_state(rig, "node1")[0] != "drained"
        assert not {n.name: n for n in rig.cli.nodes()}["node1"].drained
        assert hashlib.sha256(path.read_bytes()).hexdigest() == digest  # ingested again
        quarantined = list((store.root / "quarantine").glob(f"{digest}.*"))
        assert [q.read_bytes() for q in quarantined] == [b"#!/bin/sh\necho tampered\n"]
        row = poll("the job's end", lambda: (r := _job_row(rig, job_id)) and r["exit"] == 0 and r)
        assert any(
            "damaged in the master's store" in e and f"ingested again from {prog}" in e
            for e in row["events"]
        ), row["events"]
    finally:
        _resume(rig, "node1")
