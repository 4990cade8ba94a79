"""``beosub`` through a real Slurm on the virtual cluster, as an ordinary user.

A 2-node cluster of its own (``beoctl cluster up --slurm`` in a state dir of
its own made by ``init_isolated``: own names, a free subnet, own service, peer
and Slurm ports) and a user made here, who submits
with ``beosub`` (Slurm is the default: the state dir has a slurm.conf). What it
shows: the job id is printed, both nodes run the program in an env root with
exactly the submitted library, even after the library was replaced on the
master between submit and start; ``--wait`` runs through srun with the task's
exit status; beoacct names the Slurm job; the runtime feature selects nodes.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher.errors import SlurmCommandError
from launcher.slurm.adapter import SlurmCli
from launcher.slurm.runtime import FEATURE_PREFIX
from tests.integration import vcluster as vc

pytestmark = vc.needs_root_and(
    *vc.SLURM,
    "useradd",
    "runuser",
    "gcc",
    reason="needs root, iproute2, util-linux, slurm-wlm, munge, useradd and gcc",
)

BIN = vc.BIN
NODES = ("node1", "node2")
poll = vc.Poll(90.0, 0.2)  # how long a poll waits (not asserted)


@dataclass(frozen=True)
class Rig:
    state: Path
    config: Path
    work: Path  # owned by the user: jobs are submitted from here and write here
    user: str
    uid: int
    cli: SlurmCli

    def beosub(self, *args: str) -> subprocess.CompletedProcess[str]:
        return vc.beosub_as(self.user, self.config, self.work, *args)

    def admin(self, script: str, *args: str) -> subprocess.CompletedProcess[str]:
        return vc.admin_run(self.config, script, *args)


@pytest.fixture(scope="module")
def rig(vcluster: vc.Clusters) -> Rig:
    account = vcluster.user()
    cluster = vcluster(len(NODES), slurm=True)
    work = cluster.state / "work"
    work.mkdir()
    os.chown(work, account.pw_uid, account.pw_gid)
    cli = cluster.slurm_cli()
    return Rig(cluster.state, cluster.config, work, account.pw_name, account.pw_uid, cli)


GREET_C = 'const char *greet(void) { return "%s"; }\n'
MAPS_C = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
const char *greet(void);
/* Print what the library says, then hash the libgreet this process mapped,
   found by its path in /proc/self/maps. */
int main(void) {
    char line[4096], *path;
    FILE *maps = fopen("/proc/self/maps", "r");
    if (!maps) return 2;
    while (fgets(line, sizeof line, maps)) {
        path = strchr(line, '/');
        if (path && strstr(path, "libgreet")) {
            path[strcspn(path, "\n")] = 0;
            printf("%s\n", greet());
            fflush(stdout);
            execl("/usr/bin/sha256sum", "sha256sum", path, (char *)0);
            return 3;
        }
    }
    return 4;
}
"""


def _build(src: Path, version: str) -> str:
    """Build libgreet saying ``version`` in place (a new file, as ``make`` does); its sha256."""
    (src / "greet.c").write_text(GREET_C % version)
    lib = src / "lib" / "libgreet.so"
    tmp = src / "lib" / "libgreet.so.tmp"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(tmp), str(src / "greet.c")],
        check=True,
        capture_output=True,
    )
    tmp.chmod(0o755)
    tmp.replace(lib)
    return hashlib.sha256(lib.read_bytes()).hexdigest()


def _showlib(rig: Rig) -> tuple[Path, Path, str]:
    src = rig.work / "greet"
    (src / "bin").mkdir(parents=True)
    (src / "lib").mkdir()
    old_sha = _build(src, "old")
    (src / "main.c").write_text(MAPS_C)
    prog = src / "bin" / "showlib"
    subprocess.run(
        [
            *("gcc", "-o", str(prog), str(src / "main.c")),
            *(f"-L{src / 'lib'}", "-lgreet", "-Wl,-rpath,$ORIGIN/../lib"),
        ],
        check=True,
        capture_output=True,
    )
    for path in (src, src / "bin", src / "lib"):
        path.chmod(0o755)
    return src, prog, old_sha


def test_beosub_runs_the_submitted_library_on_both_nodes_after_it_was_replaced(
    rig: Rig,
) -> None:
    src, prog, old_sha = _showlib(rig)
    # Held at submission, so the library is replaced on the master before the job starts.
    done = rig.beosub(
        "-N", "2", "-o", "out-%j.txt", "--slurm-opt=--hold",
        "--include", "/usr/bin/sha256sum", "--", str(prog),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job_id = int(done.stdout.strip())
    job = rig.cli.job(job_id)
    assert job.comment is not None and re.fullmatch(
        r"beolaunch:manifest=[0-9a-f]{64}", job.comment
    ), job.comment
    new_sha = _build(src, "new")
    assert new_sha != old_sha
    rig.cli.release(job_id)
    ended = poll(f"job {job_id} ended", lambda: vc.ended(rig.cli, job_id))
    out = (rig.work / f"out-{job_id}.txt").read_text()
    assert (ended.state, ended.exit_code) == ("COMPLETED", 0), out
    assert sorted(ended.nodes) == list(NODES)
    lines = out.splitlines()
    assert lines.count("old") == 2 and "new" not in lines, out
    assert [line.split()[0] for line in lines if len(line.split()) == 2] == [old_sha, old_sha]

    # beoacct answers by the Slurm job id: the version each node used.
    lib = str(src / "lib" / "libgreet.so")
    acct = rig.admin("beoacct", "files", f"slurm:{job_id}", "--path", lib, "--json")
    assert acct.returncode == 0, acct.stderr
    rows = json.loads(acct.stdout)
    assert sorted((r["node"], r["sha256"]) for r in rows) == [(n, old_sha) for n in NODES]
    assert {r["scheduler_job"] for r in rows} == {f"slurm:{job_id}"}


def test_wait_runs_interactively_through_srun_with_the_tasks_status(rig: Rig) -> None:
    done = rig.beosub("--wait", "-N", "2", "--", "/bin/sh", "-c", "echo hi; exit 3")
    assert done.stdout.splitlines() == ["hi", "hi"], done.stderr
    assert done.returncode == 3, done.stderr


def test_jobs_constrained_to_the_runtime_feature(rig: Rig) -> None:
    shown = rig.admin("beoctl", "slurm", "runtime", "--json")
    assert shown.returncode == 0, shown.stderr
    feature = json.loads(shown.stdout)["feature"]
    assert feature.startswith(FEATURE_PREFIX) and len(feature) == len(FEATURE_PREFIX) + 12
    assert all(feature in n.features for n in rig.cli.nodes())
    options = ["--chdir", str(rig.work), "-o", "/dev/null"]
    job_id = rig.cli.submit([*options, f"--constraint={feature}", "--wrap", "true"])
    ended = poll(f"job {job_id} ended", lambda: vc.ended(rig.cli, job_id))
    assert (ended.state, ended.exit_code) == ("COMPLETED", 0)
    wrong = FEATURE_PREFIX + "0" * 12
    with pytest.raises(SlurmCommandError, match=r"[Ii]nvalid feature"):
        rig.cli.submit([*options, f"--constraint={wrong}", "--wrap", "true"])


def test_slurm_steps_see_the_masters_etc_and_the_nodes_hostname(rig: Rig) -> None:
    # The roots the prolog builds get the same /etc as the agent's own jobs
    # (launcher/master/unixroot.py, launcher/node/roots/nodefiles.py).
    script = "set -e; id -un; cut -d: -f1 /etc/passwd; cat /etc/hostname"
    done = rig.beosub(
        "--wait", "-N", "2", "--include", "/usr/bin/cut", "--include", "/bin/cat",
        "--include", "/usr/bin/id",
        "--", "/bin/sh", "-c", script,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    own = Path("/etc/hostname").read_text().strip()
    assert sorted(done.stdout.splitlines()) == sorted([rig.user, "root", rig.user, own] * 2)
