"""Late files on a real cluster: what the closure missed is fetched from the master,
as the job's user, recorded against the job and learned for the next run.

One 2-node cluster for the module (``vcluster.e2e``), a user without a home who
submits from a 0755 work dir, and a second user (mallory) for the access rules.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration import vcluster as vc
from tests.integration.test_e2e import poll
from tests.integration.vcluster import E2E

pytestmark = vc.needs_root_and(
    *vc.CLUSTER, "useradd", "runuser", reason="needs root, a cluster and useradd"
)


@pytest.fixture(scope="module")
def e2e(vcluster: vc.Clusters) -> E2E:
    return vcluster.e2e(2, settings={"envroot": {"late_timeout_s": 6}})


@pytest.fixture(scope="module")
def data(e2e: E2E) -> Iterator[Path]:
    """The user's 0755 data directory on the master, outside /tmp (the job has
    its own /tmp). The user's: what the master says of it is never reused for
    the next job (it may change any time), so each test sees its new files."""
    where = Path(tempfile.mkdtemp(prefix="beolaunch-late-", dir="/srv"))
    where.chmod(0o755)
    os.chown(where, e2e.uid, -1)
    try:
        yield where
    finally:
        shutil.rmtree(where, ignore_errors=True)


def _files(e: E2E, job: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = e.json("beoacct", "files", str(job))
    return rows


def _newest_job(e: E2E) -> int:
    rows = e.json("beostat", "jobs", "--all")
    return int(max(r["job"] for r in rows))


def test_a_command_the_closure_missed_is_fetched_late_then_learned(e2e: E2E) -> None:
    # sh -c naming its commands through variables: the closure's scan of the code
    # does not see them (it ships what it does see), so date and tr come late.
    code = "d=date t=tr; $d +%Y | $t 0-9 a-j"
    first = e2e.beosub("-N", "2", "sh", "-c", code)
    assert first.returncode == 0, first.stderr
    assert len(first.stdout.split()) == 2, first.stdout
    job = _newest_job(e2e)
    late = {r["path"] for r in _files(e2e, job) if r.get("late")}
    assert any(p.endswith("/date") for p in late), late
    assert any(p.endswith("/tr") for p in late), late

    second = e2e.beosub("-N", "2", "sh", "-c", code)
    assert second.returncode == 0, second.stderr
    again = _newest_job(e2e)
    assert again != job
    rows = _files(e2e, again)
    assert [r["path"] for r in rows if r.get("late")] == []
    shipped = {r["path"] for r in rows}
    assert late <= shipped, late - shipped


def test_a_user_gets_no_file_late_that_the_user_cannot_read(e2e: E2E, data: Path) -> None:
    secret_dir = data / "private"
    secret_dir.mkdir(exist_ok=True)
    secret = secret_dir / "root-only.txt"
    secret.write_text("root's secret\n")
    os.chmod(secret, 0o600)  # root's 0600
    link = data / "link-to-secret"
    link.unlink(missing_ok=True)
    link.symlink_to(secret)
    others = data / "nobodys.txt"  # another user's 0600 file
    others.write_text("nobody's secret\n")
    os.chown(others, 65534, 65534)
    os.chmod(others, 0o600)
    shadow = "/etc/shadow"
    for target in (str(secret), str(link), str(others), shadow):
        done = e2e.beosub("-N", "1", "sh", "-c", f"cat {target}")
        assert done.returncode != 0, (target, done.stdout)
        assert "secret" not in done.stdout and "root:" not in done.stdout, done.stdout
    # and what the user may read comes through
    public = data / "public.txt"
    public.write_text("hello from the master\n")
    os.chmod(public, 0o644)
    done = e2e.beosub("-N", "1", "sh", "-c", f"cat {public}")
    assert done.returncode == 0, done.stderr
    assert done.stdout == "hello from the master\n"


def test_a_file_changed_on_the_master_is_shipped_new_and_the_record_shows_both(
    e2e: E2E, data: Path
) -> None:
    data = data / "changing.txt"
    data.write_text("version one\n")
    os.chmod(data, 0o644)
    first = e2e.beosub("-N", "1", "sh", "-c", f"cat {data}")
    assert first.stdout == "version one\n", first.stderr
    job_a = _newest_job(e2e)
    data.write_text("version two, longer\n")
    second = e2e.beosub("-N", "1", "sh", "-c", f"cat {data}")
    assert second.stdout == "version two, longer\n", second.stderr
    job_b = _newest_job(e2e)
    diff = json.loads(e2e.admin("beoacct", "diff", str(job_a), str(job_b), "--json"))
    changed = {r["path"]: r for r in diff}
    assert str(data) in changed, diff
    assert changed[str(data)]["old"] != changed[str(data)]["new"]


def test_strict_fetches_nothing_late(e2e: E2E, data: Path) -> None:
    wanted = data / "strict.txt"
    wanted.write_text("only when late\n")
    os.chmod(wanted, 0o644)
    done = e2e.beosub("--strict", "-N", "1", "sh", "-c", f"cat {wanted}")
    assert done.returncode != 0 and done.stdout == "", done.stdout
    assert [r for r in _files(e2e, _newest_job(e2e)) if r.get("late")] == []
    # the same without --strict: fetched late
    done = e2e.beosub("-N", "1", "sh", "-c", f"cat {wanted}")
    assert done.stdout == "only when late\n", done.stderr


def test_the_master_killed_while_a_job_falls_back_fails_the_open_within_the_bound(
    e2e: E2E, data: Path
) -> None:
    """Last in the module: it kills the master (cluster up starts it again)."""
    probe = data / "late-probe.txt"
    probe.write_text("late\n")
    os.chmod(probe, 0o644)
    # Only sh is shipped; [ and echo are builtins. The task waits for /tmp/go,
    # then asks for a late file (the master is gone by then), then runs sh
    # again: the shipped file still works.
    script = (
        "echo > /tmp/started; while [ ! -e /tmp/go ]; do :; done; "
        f"if read line < {probe}; then echo read > /tmp/late; else echo failed > /tmp/late; fi; "
        "sh -c 'echo alive' > /tmp/alive; echo done > /tmp/done"
    )
    proc = e2e.beosub_bg("-N", "1", "sh", "-c", script)
    try:
        started = poll("the task starts", lambda: next(e2e.state.glob("**/*.tmp/started"), None))
        tmp = started.parent
        pid = int((e2e.state / "run" / "master.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)
        went = time.monotonic()
        (tmp / "go").write_text("")
        done = vc.Poll(60.0, 0.2)("the task ends", lambda: (tmp / "done").exists())
        took = time.monotonic() - went
        assert done
        assert (tmp / "late").read_text() == "failed\n"
        assert (tmp / "alive").read_text() == "alive\n"
        # the bound is late_timeout_s = 6 (plus the FUSE server's margin)
        assert took < 6 + 5 + 10, took
    finally:
        proc.kill()
        proc.wait()
        e2e.admin("beoctl", "cluster", "up", "-n", "2")
