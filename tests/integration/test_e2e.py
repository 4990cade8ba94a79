"""End to end: the real master, node agents, namespaces and console scripts.

One 2-node virtual cluster for the module, in a state dir of its own with its
own names, subnet and ports (``init_isolated``, as ``beoctl init --isolated``),
so a demo or another suite can run beside it. Jobs are submitted by a user the
fixture creates, through ``runuser``, exactly as a person would; the cluster
and the user are removed at teardown even when a test fails.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from cachefs.store import Store
from tests.integration import vcluster as vc
from tests.integration.vcluster import E2E

pytestmark = vc.needs_root_and(
    *vc.CLUSTER,
    "useradd",
    "runuser",
    reason="end-to-end tests need root, iproute2, util-linux and useradd",
)

BIN = vc.BIN
NODES = 2
#: how long a poll waits for the cluster to get somewhere (not asserted)
poll = vc.Poll(30.0, 0.2)


@pytest.fixture(scope="module")
def e2e(vcluster: vc.Clusters) -> E2E:
    return vcluster.e2e(NODES)


def _user_procs(uid: int) -> list[psutil.Process]:
    procs = []
    for p in psutil.process_iter(["uids", "cmdline"]):
        uids = p.info["uids"]
        # runuser and its child beosub also carry the uid; only job processes count.
        cmd = " ".join(p.info["cmdline"] or [])
        if uids is not None and uids.real == uid and "beosub" not in cmd:
            procs.append(p)
    return procs


def _running_job(e: E2E, procs: int = NODES) -> int:
    """The id of the test user's running job, once ``procs`` processes of it run.

    The processes are counted on this machine with psutil (the nodes' processes
    are ours to see): ``beostat ps`` lags by up to a heartbeat (5 s).
    """
    poll(f"{procs} job processes running", lambda: len(_user_procs(e.uid)) >= procs)

    def find() -> int | None:
        rows = [r for r in e.json("beostat", "jobs") if r["uid"] == e.uid]
        return int(rows[0]["job"]) if len(rows) == 1 and rows[0]["state"] == "running" else None

    return int(poll("the job running in beostat jobs", find))


def _finish(proc: subprocess.Popen[str], timeout: float = 60) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        raise AssertionError(f"beosub did not end within {timeout} s: {out}{err}") from None
    return proc.returncode, out, err


def test_output_and_worst_exit_status_propagate(e2e: E2E) -> None:
    done = e2e.beosub("-N", "2", "--", "/bin/sh", "-c", "echo hi; exit 3")
    assert done.returncode == 3, done.stderr
    assert done.stdout.splitlines().count("hi") == 2


def test_label_prefixes_lines_with_node_and_task(e2e: E2E) -> None:
    done = e2e.beosub("-N", "2", "--label", "--", "/bin/sh", "-c", "echo hi")
    assert done.returncode == 0, done.stderr
    labels = re.findall(r"^(node\d+)\.(\d+): hi$", done.stdout, re.MULTILINE)
    assert sorted(task for _node, task in labels) == ["0", "1"]
    assert len({node for node, _task in labels}) == 2


def test_interrupt_reaches_every_task_and_worst_status_wins(e2e: E2E) -> None:
    proc = e2e.beosub_bg(
        "-N",
        "2",
        "--include",
        "/usr/bin/sleep",
        "--",
        "/bin/sh",
        "-c",
        'trap "echo got; exit 7" TERM; while :; do sleep 0.1; done',
    )
    try:
        _running_job(e2e)
        os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C does: the whole foreground group
    finally:
        status, out, err = _finish(proc)
    assert status == 7, err
    assert out.splitlines().count("got") == 2


def test_beoctl_kill_leaves_no_process_behind(e2e: E2E) -> None:
    proc = e2e.beosub_bg(
        "-N",
        "2",
        "--include",
        "/usr/bin/sleep",
        "--",
        "/bin/sh",
        "-c",
        "sleep 1000 & sleep 1000 & wait",
    )
    try:
        job = _running_job(e2e, procs=2 * 3)
        e2e.admin("beoctl", "kill", str(job))
        status, _out, err = _finish(proc)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert status != 0, err
    try:
        poll("no process of the killed job left", lambda: not _user_procs(e2e.uid))
    except AssertionError as exc:
        left = [(p.pid, p.info["cmdline"]) for p in _user_procs(e2e.uid)]
        raise AssertionError(f"{exc}: {left}") from None
    time.sleep(1)  # a straggler forked late would show now
    assert _user_procs(e2e.uid) == []


def test_job_runs_as_the_submitting_user(e2e: E2E) -> None:
    done = e2e.beosub("-N", "2", "--", "/usr/bin/id", "-u")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [str(e2e.uid)] * 2


def test_job_cannot_read_a_root_only_file_of_the_master(e2e: E2E) -> None:
    secret = Path(f"/etc/beotest-secret-{e2e.tag}")
    word = secrets.token_hex(8)
    fd = os.open(secret, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(word + "\n")
        plain = e2e.beosub("-N", "2", "--", "/bin/cat", str(secret))
        shipped = e2e.beosub("-N", "2", "--include", str(secret), "--", "/bin/cat", str(secret))
    finally:
        secret.unlink()
    assert plain.returncode != 0
    assert word not in plain.stdout + plain.stderr
    # Asking to ship it does not help: the master reads submitted files as the user.
    assert shipped.returncode != 0
    assert word not in shipped.stdout + shipped.stderr
    assert str(secret) in shipped.stderr


def test_root_submission_is_refused(e2e: E2E) -> None:
    done = subprocess.run(
        [str(BIN / "beosub"), "-N", "1", "--", "/bin/true"],
        env=e2e.env(),
        cwd=e2e.work,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0
    assert "root" in done.stderr


GREET_C = 'const char *greet(void) { return "%s"; }\n'
MAPS_C = r"""
#include <stdio.h>
#include <string.h>
#include <unistd.h>
const char *greet(void);
/* Sleep first, so the test can replace the library on the master meanwhile;
   then hash the libgreet this process mapped, by its path in /proc/self/maps. */
int main(void) {
    char line[4096], *path;
    FILE *maps;
    sleep(3);
    maps = fopen("/proc/self/maps", "r");
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


def _build_greet(src: Path, version: str) -> Path:
    (src / "greet.c").write_text(GREET_C % version)
    lib = src / "lib" / "libgreet.so"
    subprocess.run(
        ["gcc", "-shared", "-fPIC", "-o", str(lib), str(src / "greet.c")],
        check=True,
        capture_output=True,
    )
    lib.chmod(0o755)
    return lib


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_replacing_a_library_after_submission_does_not_change_the_job(e2e: E2E) -> None:
    src = e2e.work / "greet"
    (src / "bin").mkdir(parents=True)
    (src / "lib").mkdir()
    src.chmod(0o755)
    lib = _build_greet(src, "old")
    old_sha = hashlib.sha256(lib.read_bytes()).hexdigest()
    (src / "main.c").write_text(MAPS_C)
    prog = src / "bin" / "showlib"
    subprocess.run(
        [
            "gcc",
            "-o",
            str(prog),
            str(src / "main.c"),
            f"-L{src / 'lib'}",
            "-lgreet",
            "-Wl,-rpath,$ORIGIN/../lib",
        ],
        check=True,
        capture_output=True,
    )
    for p in (src / "bin", src / "lib"):
        p.chmod(0o755)
    proc = e2e.beosub_bg("-N", "2", "--include", "/usr/bin/sha256sum", "--", str(prog))
    try:
        _running_job(e2e)
        new_sha = hashlib.sha256(_build_greet(src, "new").read_bytes()).hexdigest()
    finally:
        status, out, err = _finish(proc)
    assert new_sha != old_sha
    assert status == 0, err
    lines = out.splitlines()
    assert lines.count("old") == 2 and "new" not in lines
    hashes = [line.split()[0] for line in lines if len(line.split()) == 2]
    assert hashes == [old_sha, old_sha]
    # A job submitted now runs the new library: the check above can tell them apart.
    again = e2e.beosub("-N", "1", "--include", "/usr/bin/sha256sum", "--", str(prog))
    assert again.returncode == 0, again.stderr
    assert new_sha in again.stdout and "new" in again.stdout.splitlines()


def _job_row(e: E2E, job: int) -> dict[str, Any] | None:
    rows = [r for r in e.json("beostat", "jobs", "--all") if int(r["job"]) == job]
    return rows[0] if rows else None


def test_job_completes_and_is_recorded_when_the_master_is_killed_meanwhile(e2e: E2E) -> None:
    proc = e2e.beosub_bg(
        "-N", "2", "--include", "/usr/bin/sleep", "--", "/bin/sh", "-c", "sleep 3; echo done"
    )
    try:
        job = _running_job(e2e)
        master_pid = int((e2e.state / "run" / "master.pid").read_text().split()[0])
        os.kill(master_pid, signal.SIGKILL)
        poll("the master gone", lambda: not psutil.pid_exists(master_pid))
        e2e.admin("beoctl", "cluster", "up", "-n", str(NODES))

        def completed() -> dict[str, Any] | None:
            row = _job_row(e2e, job)
            return row if row is not None and row["state"] not in ("running", "queued") else None

        row = poll("the job recorded as ended after the restart", completed)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert row["state"] == "completed" and row["exit"] == 0, row
    usage = [u for u in e2e.json("beoacct", "usage") if str(u["job"]) == str(job)]
    assert usage and usage[0]["nodes"] == NODES


def _held_exits(e: E2E) -> int:
    """Exits the cluster's agents hold for an absent master (their state files)."""
    count = 0
    for path in e.state.glob("cluster/node*/agent-state.json"):
        with contextlib.suppress(OSError, ValueError):
            count += len(json.loads(path.read_text()).get("held", []))
    return count


@pytest.mark.slow  # a master killed and restarted around a task: ~12 s
def test_batch_output_written_while_the_master_is_away_reaches_the_file(e2e: E2E) -> None:
    out = e2e.work / f"away-{e2e.tag}"
    out.mkdir()
    os.chown(out, e2e.uid, -1)
    # The task goes on only once the master is gone (the test makes /tmp/go).
    script = "echo before; until [ -e /tmp/go ]; do sleep 0.05; done; echo during; echo oops >&2"
    done = subprocess.run(
        e2e.user_argv("beosub", "--batch", "-N", "1", "-o", "away-%j.txt", "--include",
                      "/usr/bin/sleep", "--", "/bin/sh", "-c", script),
        cwd=out, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    job = int(done.stdout)
    log = out / f"away-{job}.txt"
    poll("the first line in the file", lambda: log.exists() and "before" in log.read_text())
    [tmp] = e2e.state.glob(f"cluster/node*/roots/u*/{job}.tmp")  # the job's /tmp on its node
    master_pid = int((e2e.state / "run" / "master.pid").read_text().split()[0])
    before = _held_exits(e2e)
    os.kill(master_pid, signal.SIGKILL)
    try:
        poll("the master gone", lambda: not psutil.pid_exists(master_pid))
        (tmp / "go").touch()
        poll("the task's exit held by its agent", lambda: _held_exits(e2e) > before)
        assert "during" not in log.read_text()  # written while no master was there
    finally:
        e2e.admin("beoctl", "cluster", "up", "-n", str(NODES))  # later tests need the master

    def ended() -> dict[str, Any] | None:
        row = _job_row(e2e, job)
        return row if row is not None and row["state"] in ("completed", "failed") else None

    row = poll("the job ended after the restart", ended)
    assert row["state"] == "completed" and row["exit"] == 0, row
    # stdout and stderr share the file (no -e): both lines of the outage are there
    poll(
        "the outage's lines in the file", lambda: {"during", "oops"} <= set(log.read_text().split())
    )
    lines = log.read_text().splitlines()
    assert lines.index("before") < lines.index("during")


def test_batch_prints_the_job_id_and_writes_files_as_the_user(e2e: E2E) -> None:
    out = e2e.work / f"batch-{e2e.tag}"
    out.mkdir()
    os.chown(out, e2e.uid, -1)
    done = subprocess.run(
        e2e.user_argv(
            "beosub",
            "--batch",
            "-N",
            "2",
            "-o",
            "out-%j-%n.txt",
            "--",
            "/bin/sh",
            "-c",
            "echo hi; echo err >&2; exit 3",
        ),
        cwd=out,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    job = int(done.stdout)  # the id alone, like sbatch --parsable

    def ended() -> dict[str, Any] | None:
        row = _job_row(e2e, job)
        return row if row is not None and row["state"] in ("completed", "failed") else None

    row = poll("the batch job ended", ended)
    assert row["exit"] == 3, row
    names = [f"out-{job}-node1.txt", f"out-{job}-node2.txt"]

    def written() -> bool:
        # stderr too (the node may add a notice of its own there, e.g. a home it lacks)
        found = {p.name: p.read_text().splitlines() for p in out.iterdir()}
        return sorted(found) == names and all({"hi", "err"} <= set(t) for t in found.values())

    poll("both files written, stdout and stderr", written)
    assert {(out / n).stat().st_uid for n in names} == {e2e.uid}


def test_an_object_damaged_in_the_store_is_repaired_and_no_node_is_drained(e2e: E2E) -> None:
    """Issue 12: the store's copy rots (same size, other bytes); every node that
    fetched it refused and was drained. Now the master checks its copy,
    quarantines it, ingests it again from the user's file, and the nodes fill
    again: the job runs, nobody is drained."""
    script = e2e.work / f"unique-{e2e.tag}.sh"
    marker = secrets.token_hex(16)
    script.write_text(f"#!/bin/sh\necho ran-{marker}\n")
    script.chmod(0o755)
    # The master's store gets the object as a submission would put it there;
    # then the copy on its disk rots (same size, other bytes).
    sha = Store(e2e.state / "store").ingest_file(script).sha256
    obj = e2e.state / "store" / "objects" / sha[:2] / sha
    obj.chmod(0o644)
    data = obj.read_bytes()
    obj.write_bytes(bytes(b ^ 0xFF for b in data))
    assert obj.stat().st_size == len(data)
    done = e2e.beosub("-N", "2", "--", str(script))
    assert done.returncode == 0, done.stderr
    assert done.stdout.count(f"ran-{marker}") == 2, done.stdout
    assert obj.read_bytes() == data  # ingested again
    quarantined = list((e2e.state / "store" / "quarantine").glob(f"{sha}.*"))
    assert len(quarantined) == 1
    assert all(n["state"] == "up" for n in e2e.json("beostat", "nodes"))
