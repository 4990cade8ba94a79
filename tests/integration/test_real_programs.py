"""Real programs run on the cluster, and their second run needs nothing late (issue 13).

One 2-node cluster for the module (``vcluster.e2e``: its own state dir, names,
subnet and ports) and a user it makes. For each program of
:mod:`tests.integration.realprograms`, as that user, from a submit directory
in the user's home holding the program's files (where users submit from: the
home is bound into every job, as a site's shared /home is; a submit dir under
/tmp would not be, each job has a /tmp of its own): ``beosub -N 2 --label --
ARGV``; the exit status
and each node's output are checked. Then the same submission again, and
``beoacct files JOB --json`` must show no file of the second job fetched late
(the row field ``late``, true for a file a node fetched from the master while
the job ran): what the first run fetched late is learned and shipped with the
next submission.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration import realprograms as rp
from tests.integration import vcluster as vc
from tests.integration.vcluster import E2E

pytestmark = vc.needs_root_and(
    *vc.CLUSTER,
    "useradd",
    "runuser",
    reason="real-program tests need root, iproute2, util-linux and useradd",
)

NODES = 2
#: What a failure message quotes of a stream.
QUOTE = 1500
_LABELLED = re.compile(rb"^(node\d+)\.(\d+): (.*)$")


@dataclass(frozen=True)
class Run:
    argv: list[str]
    status: int
    job: int | None
    #: node -> its tasks' lines on each stream (bytes, without the label)
    stdout: dict[str, bytes]
    stderr: dict[str, bytes]
    unlabelled: str  # beosub's own messages

    def stream(self, name: str, node: str) -> bytes:
        return (self.stdout if name == "stdout" else self.stderr).get(node, b"")

    def describe(self) -> str:
        """Everything the run printed, short enough for a failure message."""
        err = {n: v.decode(errors="replace")[-QUOTE:] for n, v in sorted(self.stderr.items())}
        out = {n: v.decode(errors="replace")[-QUOTE:] for n, v in sorted(self.stdout.items())}
        return (
            f"job {self.job}, exit {self.status}; beosub: {self.unlabelled[-QUOTE:]!r}; "
            f"stderr: {err}; stdout: {out}"
        )


def _by_node(data: bytes) -> tuple[dict[str, bytes], list[bytes]]:
    nodes: dict[str, bytes] = {}
    other = []
    for line in data.split(b"\n"):
        m = _LABELLED.match(line)
        if m is None:
            if line:
                other.append(line)
            continue
        nodes[m.group(1).decode()] = nodes.get(m.group(1).decode(), b"") + m.group(3) + b"\n"
    return nodes, other


@dataclass(frozen=True)
class Bench:
    """The cluster and its user."""

    e2e: E2E
    account: pwd.struct_passwd

    def jobs(self) -> set[int]:
        return {
            int(r["job"])
            for r in self.e2e.json("beostat", "jobs", "--all")
            if r["uid"] == self.e2e.uid
        }

    def beosub(self, program: rp.RealProgram, cwd: Path) -> Run:
        """``beosub -N 2 --label -- ARGV`` as the user from ``cwd``."""
        before = self.jobs()
        env = {**rp.user_env(self.account, program.env), "BEOLAUNCH_CONFIG": str(self.e2e.config)}
        argv = [str(vc.BIN / "beosub"), "-N", str(NODES), "--label", "--", *program.argv]
        done = subprocess.run(
            rp.as_user(self.account, env, argv), cwd=cwd, capture_output=True, timeout=300
        )
        new = sorted(self.jobs() - before)
        out, _ = _by_node(done.stdout)
        err, other = _by_node(done.stderr)
        return Run(
            argv=argv,
            status=done.returncode,
            job=new[-1] if new else None,
            stdout=out,
            stderr=err,
            unlabelled=b"\n".join(other).decode(errors="replace"),
        )

    def acct_files(self, job: int) -> list[dict[str, Any]]:
        """``beoacct files JOB --json`` as the user: the job's rows."""
        env = {**rp.user_env(self.account), "BEOLAUNCH_CONFIG": str(self.e2e.config)}
        argv = [str(vc.BIN / "beoacct"), "files", str(job), "--json"]
        done = subprocess.run(
            rp.as_user(self.account, env, argv), capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, f"beoacct files {job}: {done.stderr}"
        rows: list[dict[str, Any]] = json.loads(done.stdout)
        return rows


@pytest.fixture(scope="module")
def bench(vcluster: vc.Clusters) -> Iterator[Bench]:
    e = vcluster.e2e(NODES)
    account = pwd.getpwnam(e.user)
    # A home, as a user who runs these programs has (the nodes see the host's /home).
    home = Path(account.pw_dir)
    home.mkdir(mode=0o700)
    try:
        os.chown(home, account.pw_uid, account.pw_gid)
        yield Bench(e, account)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _check(program: rp.RealProgram, run: Run, which: str) -> None:
    assert run.job is not None, f"{program.name} ({which}): no job was made: {run.describe()}"
    assert run.status == program.status, f"{program.name} ({which}): {run.describe()}"
    nodes = sorted(set(run.stdout) | set(run.stderr))
    assert len(nodes) == NODES or not program.expect, (
        f"{program.name} ({which}): output from {nodes}, expected {NODES} nodes: {run.describe()}"
    )
    for node in nodes:
        text = run.stream(program.stream, node).decode(program.encoding, errors="replace")
        failed = program.failed_checks(text)
        assert not failed, (
            f"{program.name} ({which}): {node}'s {program.stream} lacks {failed}: {run.describe()}"
        )


def _late(rows: list[dict[str, Any]], job: int) -> list[str]:
    """The paths fetched late in ``rows``; fails when the rows cannot tell."""
    assert rows, f"beoacct files {job} --json shows no file at all"
    without = [r["path"] for r in rows if "late" not in r]
    assert not without, (
        f"beoacct files {job} --json: rows without the 'late' field (e.g. {without[0]}): "
        "the master does not record which files nodes fetched late (issue 13's fallback)"
    )
    return sorted({f"{r['node']}:{r['path']}" for r in rows if r["late"]})


@pytest.mark.parametrize("program", rp.CATALOG, ids=[p.name for p in rp.CATALOG])
def test_real_program_runs_and_its_second_run_fetches_nothing_late(
    bench: Bench, program: rp.RealProgram
) -> None:
    missing = program.missing()
    if missing:
        pytest.skip(f"{program.name} needs {', '.join(missing)} on this host (make apt)")
    directory = Path(bench.account.pw_dir) / program.name
    program.lay_out(directory, bench.account.pw_uid, bench.account.pw_gid)
    rp.run_setup(program, directory, bench.account)

    first = bench.beosub(program, directory)
    _check(program, first, "first run")
    second = bench.beosub(program, directory)
    _check(program, second, "second run")
    assert second.job is not None
    late = _late(bench.acct_files(second.job), second.job)
    assert late == [], f"{program.name}: the second run still fetched late: {late[:20]}"
