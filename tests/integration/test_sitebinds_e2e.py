"""Site binds on a real cluster (issue 13): ``[envroot] binds`` in every job's root.

A 2-node cluster whose config binds a directory this machine has (the nodes
share its filesystem: a site's shared /scratch) and one no node has. The
test user has no home, as ``vcluster.e2e`` makes it. A job submitted from
inside the bound directory starts there on both nodes and reads and writes
there as the user; the missing bind and the missing home are said once per
node on beosub's stderr and in the nodes' events, and never in a task's output.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration import vcluster as vc
from tests.integration.vcluster import E2E

pytestmark = vc.needs_root_and(
    *vc.CLUSTER, "useradd", "runuser", reason="needs root, iproute2, util-linux and useradd"
)

NODES = 2
UNFINISHED = ("pending", "preparing", "running")
poll = vc.Poll(60.0, 0.2)


@dataclass(frozen=True)
class Site:
    e2e: E2E
    #: bound in, present on every node (0755, root's)
    shared: Path
    #: bound in, on no node
    missing: str
    nodes: list[str]

    def user_home(self) -> str:
        return os.path.expanduser(f"~{self.e2e.user}")

    def beosub_in(self, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.e2e.user_argv("beosub", *args),
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
        )


@pytest.fixture(scope="module")
def site(vcluster: vc.Clusters) -> Site:
    # Not under /tmp: every task has its own (the config refuses a bind there).
    shared = Path(tempfile.mkdtemp(prefix="beolaunch-bindtest-", dir="/var/tmp"))
    vcluster.after_down(shutil.rmtree, shared, ignore_errors=True)
    shared.chmod(0o755)
    missing = f"/beolaunch-nowhere-{secrets.token_hex(4)}"
    e = vcluster.e2e(NODES, settings={"envroot": {"binds": [str(shared), missing]}})
    (shared / "data").write_text("site data\n")
    work = shared / "work"
    work.mkdir()
    for path in (shared / "data", work):
        os.chown(path, e.uid, -1)
    names = sorted(row["name"] for row in e.json("beostat", "nodes"))
    assert len(names) == NODES
    return Site(e, shared, missing, names)


def _notices(site: Site) -> list[str]:
    """The lines beosub prints for each node: the missing bind. The user has no
    home on the master either, so none is bound and nothing is said of it."""
    assert not os.path.exists(site.user_home())
    return sorted(
        f"beosub: node {node}: {site.missing} is not on this node; the job runs without it"
        for node in site.nodes
    )


def test_a_job_submitted_from_a_bound_dir_starts_there_and_reads_and_writes_as_the_user(
    site: Site,
) -> None:
    work = site.shared / "work"
    script = 'pwd; read -r line < ../data; echo "$line"; echo written >> out; id -u'
    done = site.beosub_in(
        work, "-N", str(NODES), "--include", "/usr/bin/id", "--", "/bin/sh", "-c", script
    )
    assert done.returncode == 0, done.stderr
    assert sorted(done.stderr.splitlines()) == _notices(site)  # nothing of the tasks'
    lines = done.stdout.splitlines()
    assert sorted(lines) == sorted([str(work), "site data", str(site.e2e.uid)] * NODES)
    out = work / "out"
    assert out.read_text() == "written\n" * NODES  # one line from each node
    assert out.stat().st_uid == site.e2e.uid


def test_a_missing_bind_is_said_once_per_node_never_in_the_output(site: Site) -> None:
    # The work dir under /tmp (vcluster.e2e's): the cwd is there too (the job's tmp).
    marker = secrets.token_hex(4)
    done = site.e2e.beosub("-N", str(NODES), "--", "/bin/sh", "-c", f"echo {marker}; pwd")
    assert done.returncode == 0, done.stderr
    assert sorted(done.stdout.splitlines()) == sorted([marker, str(site.e2e.work)] * NODES)
    # beosub's stderr: the notices, each once per node, and nothing of the tasks'.
    assert sorted(done.stderr.splitlines()) == _notices(site)
    # Each node recorded them as the job's events (how a Slurm job's user learns them).
    job = max(int(r["job"]) for r in site.e2e.json("beostat", "jobs", "--all"))
    for node in site.nodes:
        said = [
            row["message"]
            for row in site.e2e.json("beoctl", "node", "log", node, "--level", "warning")
            if row["message"].startswith(f"job {job} on {node}: ")
        ]
        assert sorted(said) == sorted(
            f"job {job} on {line.removeprefix('beosub: node ')}"
            for line in _notices(site)
            if line.startswith(f"beosub: node {node}: ")
        )


def test_a_batch_jobs_files_get_only_what_the_tasks_wrote(site: Site) -> None:
    # No home on the nodes, a bind missing: the task's stderr file stays empty
    # (before, each task's stderr began with "beolaunch: home ... is not bound in").
    work = site.shared / "work"  # the user's: the master opens the files as the user
    done = site.beosub_in(
        work,
        "--batch", "-N", str(NODES), "-o", "out-%n.txt", "-e", "err-%n.txt", "--",
        "/bin/sh", "-c", "echo ran",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = int(done.stdout.strip())

    def ended() -> dict[str, Any] | None:
        rows = site.e2e.json("beostat", "jobs", "--all")
        row = next((r for r in rows if int(r["job"]) == job), None)
        return row if row is not None and row["state"] not in UNFINISHED else None

    row = poll(f"batch job {job} ended", ended)
    assert row["state"] == "completed", (row["reason"], row)
    # The master's watcher may append the last output just after the job's end.
    outs = [work / f"out-{node}.txt" for node in site.nodes]
    poll("each node's output file", lambda: all(p.read_text() == "ran\n" for p in outs), 10)
    for node in site.nodes:
        assert (work / f"err-{node}.txt").read_text() == ""


def test_a_second_job_in_a_kept_root_is_told_again(site: Site) -> None:
    # The root the last job left is kept for the next one with the same files:
    # the notices are the job's, not the root's.
    done = site.e2e.beosub("-N", str(NODES), "--", "/bin/sh", "-c", "echo again")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == ["again"] * NODES
    assert sorted(done.stderr.splitlines()) == _notices(site)
    assert not re.search(r"not bound in|beolaunch:", done.stdout)
