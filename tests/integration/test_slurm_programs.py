"""Real programs through Slurm: a batch script of several commands, and Open MPI (issue 13).

A 2-node cluster with a real Slurm of its own (``beoctl cluster up --slurm``
in a state dir made by ``init_isolated``) and a user with a home, who submits
from a directory there with ``beosub --scheduler slurm --wait --label``: srun
runs each task through ``beonode step`` in the job's env root, a child of
slurmstepd. What it shows:

- a shell script calling mktemp, sort, sed, date and python3 runs on both
  nodes (its commands reach the root only through the closure and the
  fallback on the master);
- two MPI ranks on two nodes started by srun's mpi/pmix plugin exchange a
  message, once with Open MPI's and PMIx's components shipped (``--include``:
  the Slurm wiring alone), once as a user would type it (the closure and the
  fallback must bring the components);
- ``srun --mpi=pmix`` without Beolaunch works on the virtual cluster: each
  slurmd has a TmpFS of its own (the nodes share the host's /tmp, where two
  slurmstepds made the same PMIx directory and the second failed).
"""

from __future__ import annotations

import pwd
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from launcher.slurm.paths import SlurmPaths
from tests.integration import realprograms as rp
from tests.integration import vcluster as vc

pytestmark = vc.needs_root_and(
    *vc.SLURM,
    "useradd",
    "runuser",
    "mpicc",
    reason="needs root, iproute2, util-linux, slurm-wlm, munge, useradd and Open MPI (make apt)",
)

NODES = ("node1", "node2")
QUOTE = 3000
_LABELLED = re.compile(r"^\s*(\d+): (.*)$")

JOB_SH = """\
#!/bin/sh
set -e
dir=$(mktemp -d)
printf 'pear\\napple\\nfig\\n' > "$dir/fruit"
sort "$dir/fruit" | sed 's/^/fruit: /'
date -u -d @86400 +%F
python3 -c 'import json, os; print(json.dumps({"task": os.environ["SLURM_PROCID"]}))'
rm -r "$dir"
"""
BATCH = rp.RealProgram(
    "slurm-batch-script",
    ("./job.sh",),
    (r"^fruit: apple\nfruit: fig\nfruit: pear\n1970-01-02\n\{\"task\": \"\d\"\}$",),
    files=(rp.File("job.sh", JOB_SH, 0o755),),
    needs=("mktemp", "sort", "sed", "date", "python3"),
)
MPI = rp.RealProgram(
    "slurm-mpi",
    ("./mpi_hello",),
    (r"^rank \d of 2 on node\d got 42$",),
    files=(rp.File("mpi_hello.c", rp.MPI_HELLO_C),),
    setup=(rp.MPI_SETUP,),
)
#: Open MPI's components (dlopened), its help texts and site parameters, and
#: PMIx's components: what the closure of an MPI program does not name.
MPI_RUNTIME = (
    "/usr/lib/x86_64-linux-gnu/openmpi/lib/openmpi3",
    "/usr/lib/x86_64-linux-gnu/pmix2/lib/pmix",
    "/usr/share/openmpi",
    "/etc/openmpi",
)
MPI_OPTS = ("--slurm-opt=--mpi=pmix", "-N", "2", "-n", "2")


@dataclass(frozen=True)
class Rig:
    state: Path
    config: Path
    account: pwd.struct_passwd
    paths: SlurmPaths

    def submit_dir(self, program: rp.RealProgram) -> Path:
        """A new submit dir in the user's home with ``program``'s files, set up."""
        directory = Path(self.account.pw_dir) / program.name
        if directory.exists():
            shutil.rmtree(directory)
        program.lay_out(directory, self.account.pw_uid, self.account.pw_gid)
        rp.run_setup(program, directory, self.account)
        return directory

    def run(self, directory: Path, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """``argv`` as the user from ``directory``, with the cluster's config and Slurm's."""
        env = {
            **rp.user_env(self.account),
            "BEOLAUNCH_CONFIG": str(self.config),
            "SLURM_CONF": str(self.paths.conf),
        }
        return subprocess.run(
            rp.as_user(self.account, env, argv),
            cwd=directory,
            capture_output=True,
            text=True,
            timeout=180,
        )

    def beosub(self, directory: Path, *args: str) -> subprocess.CompletedProcess[str]:
        """``beosub --scheduler slurm --wait --label ARGS`` as the user."""
        argv = [str(vc.BIN / "beosub"), "--scheduler", "slurm", "--wait", "--label", *args]
        return self.run(directory, argv)


@pytest.fixture(scope="module")
def rig(vcluster: vc.Clusters) -> Rig:
    account = vcluster.user()
    cluster = vcluster(2, slurm=True)
    return Rig(cluster.state, cluster.config, account, cluster.slurm)


def _tasks(stdout: str) -> dict[int, str]:
    """srun --label output: task -> its lines."""
    tasks: dict[int, str] = {}
    for line in stdout.splitlines():
        m = _LABELLED.match(line)
        if m:
            tasks[int(m.group(1))] = tasks.get(int(m.group(1)), "") + m.group(2) + "\n"
    return tasks


def _check(program: rp.RealProgram, done: subprocess.CompletedProcess[str]) -> dict[int, str]:
    said = f"exit {done.returncode}; stderr: {done.stderr[-QUOTE:]}; stdout: {done.stdout[-QUOTE:]}"
    assert done.returncode == program.status, f"{program.name}: {said}"
    tasks = _tasks(done.stdout)
    assert sorted(tasks) == [0, 1], f"{program.name}: tasks {sorted(tasks)}: {said}"
    for task, text in tasks.items():
        failed = program.failed_checks(text)
        assert not failed, f"{program.name}: task {task} lacks {failed}: {said}"
    return tasks


def _mpi_ranks(tasks: dict[int, str]) -> None:
    """Rank N is task N, and the two ranks ran on the two nodes."""
    hosts = {}
    for task, text in tasks.items():
        m = re.search(rf"^rank {task} of 2 on (node\d) got 42$", text, re.MULTILINE)
        assert m is not None, f"task {task}: {text!r}"
        hosts[task] = m.group(1)
    assert sorted(hosts.values()) == list(NODES), hosts


def test_batch_script_runs_its_commands_on_both_nodes(rig: Rig) -> None:
    directory = rig.submit_dir(BATCH)
    tasks = _check(BATCH, rig.beosub(directory, "-N", "2", "--", *BATCH.argv))
    assert sorted(re.findall(r'"task": "(\d)"', "".join(tasks.values()))) == ["0", "1"]


def test_srun_mpi_pmix_without_beolaunch_runs_two_ranks_on_two_nodes(rig: Rig) -> None:
    directory = rig.submit_dir(MPI)
    done = rig.run(
        directory, ["srun", "--mpi=pmix", "-N", "2", "-n", "2", "--label", "./mpi_hello"]
    )
    _mpi_ranks(_check(MPI, done))


def test_mpi_with_its_components_shipped_passes_a_message_between_two_nodes(rig: Rig) -> None:
    directory = rig.submit_dir(MPI)
    includes = [f"--include={path}" for path in MPI_RUNTIME]
    done = rig.beosub(directory, *MPI_OPTS, *includes, "--", *MPI.argv)
    _mpi_ranks(_check(MPI, done))


def test_mpi_as_a_user_types_it_passes_a_message_between_two_nodes(rig: Rig) -> None:
    directory = rig.submit_dir(MPI)
    done = rig.beosub(directory, *MPI_OPTS, "--", *MPI.argv)
    _mpi_ranks(_check(MPI, done))
