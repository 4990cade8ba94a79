"""``beoacct report`` as an ordinary user, through a real master: only their jobs.

The database is the scale benchmark's (bench/scale_queries.py), small: the
test's user and four others (uids 2001-2004) with jobs over 90 days. Root's
report names all five users; the user's names only them, with their own job
count, and its images still decode.
"""

from __future__ import annotations

import html
import os
import pwd
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from bench.scale_queries import OTHER_UIDS, populate
from launcher.state.migrate import open_engine
from tests.integration import vcluster as vc
from tests.integration.masterproc import Master, running_master
from tests.unit.launcher.report.pagecheck import pngs

pytestmark = [
    pytest.mark.skipif(
        os.geteuid() != 0 or not shutil.which("runuser"), reason="needs root and runuser"
    )
]

NODES, RECORDS = 20, 400


@pytest.fixture
def master(user: pwd.struct_passwd) -> Iterator[tuple[Master, dict[str, int]]]:
    with running_master() as m:
        engine = open_engine(m.config.database_url)
        try:
            counts = populate(engine, NODES, RECORDS, user.pw_uid)
        finally:
            engine.dispose()
        yield m, counts


def _report(m: Master, out: Path, user: str | None) -> str:
    argv = ["env", f"BEOLAUNCH_CONFIG={m.config.path}", str(vc.BIN / "beoacct")]
    argv += ["report", "--out", str(out)]
    if user is not None:
        # No home for the test's user: matplotlib's cache goes where it can write.
        argv = ["runuser", "-u", user, "--", "env", f"MPLCONFIGDIR={out}", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    target = Path(done.stdout.strip().removeprefix("wrote "))
    assert target.parent == out and target.name.startswith("beolaunch-report-")
    return target.read_text()


def _users(page: str) -> set[str]:
    """The names in the "jobs per user" table."""
    table = page.split("<h2>Jobs per user</h2>", 1)[1].split("</table>", 1)[0]
    return set(re.findall(r"<tr><td>([^<]+)</td>", table))


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


@pytest.mark.slow
def test_a_users_report_has_only_their_jobs(
    master: tuple[Master, dict[str, int]], user: pwd.struct_passwd
) -> None:
    m, counts = master
    top = Path(tempfile.mkdtemp(prefix="beolaunch-report-"))
    try:
        top.chmod(0o755)
        (top / "root").mkdir()
        (top / "user").mkdir()
        os.chown(top / "user", user.pw_uid, user.pw_gid)
        everyone = _report(m, top / "root", None)
        assert _users(everyone) == {user.pw_name, *(_name(u) for u in OTHER_UIDS)}
        assert f"{counts['jobs']:,} jobs submitted" in everyone
        assert len(pngs(everyone)) == 4

        mine = _report(m, top / "user", user.pw_name)
        assert _users(mine) == {user.pw_name}
        assert f"{counts['user_jobs']:,} jobs submitted" in mine
        assert html.escape(f"{user.pw_name}'s jobs") in mine
        assert len(pngs(mine)) == 4
    finally:
        shutil.rmtree(top)
