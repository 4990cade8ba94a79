"""The master outlives its database: a real PostgreSQL of the test's own is stopped
for 17 s while a job runs and ends (issue 12, item 5).

While it is away: the master keeps running, the job's output reaches its watcher,
a new submission is answered "database unavailable, retry" (503), not a bare
500. When it is back: the job's end, held meanwhile, is written and the watcher
gets it (exit 0, every line).
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import pytest

from launcher.isolation import free_ports
from tests.integration import vcluster as vc
from tests.integration.vcluster import E2E

PG_BIN = Path("/usr/lib/postgresql/15/bin")
pytestmark = vc.needs_root_and(
    *vc.CLUSTER,
    "useradd",
    "runuser",
    reason="needs root, iproute2, util-linux, useradd and PostgreSQL 15's server programs",
)
pytestmark.append(
    pytest.mark.skipif(not (PG_BIN / "pg_ctl").exists(), reason="PostgreSQL 15 is not installed")
)

BIN = vc.BIN
OUTAGE_S = 17
LINES = 12
poll = vc.Poll(60.0, 0.2)


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL server of the test's own, on 127.0.0.1:port, trust auth."""

    data: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/beolaunch"

    def _ctl(self, *args: str) -> None:
        subprocess.run(
            [
                "runuser",
                "-u",
                "postgres",
                "--",
                str(PG_BIN / "pg_ctl"),
                "-D",
                str(self.data),
                *args,
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )

    def start(self) -> None:
        options = f"-p {self.port} -k {self.data} -c listen_addresses=127.0.0.1"
        self._ctl("-o", options, "-l", str(self.data / "server.log"), "-w", "start")

    def stop(self) -> None:
        self._ctl("-m", "fast", "-w", "stop")


def _free_port() -> int:
    """A free port below the kernel's ephemeral range (launcher.isolation)."""
    return free_ports([socket.SOCK_STREAM])[0]


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    data = Path(tempfile.mkdtemp(prefix="beo-pg-"))
    shutil.chown(data, "postgres", "postgres")
    initdb = [str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"]
    subprocess.run(
        ["runuser", "-u", "postgres", "--", *initdb], check=True, capture_output=True, timeout=120
    )
    pg = Postgres(data, _free_port())
    pg.start()
    try:
        subprocess.run(
            [
                *("runuser", "-u", "postgres", "--", str(PG_BIN / "createdb")),
                *("-h", "127.0.0.1", "-p", str(pg.port), "beolaunch"),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield pg
    finally:
        subprocess.run(
            [
                *("runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl")),
                *("-D", str(data), "-m", "immediate", "stop"),
            ],
            capture_output=True,
            timeout=60,
        )
        shutil.rmtree(data, ignore_errors=True)


@pytest.fixture(scope="module")
def e2e(postgres: Postgres, vcluster: vc.Clusters) -> E2E:
    return vcluster.e2e(2, database_url=postgres.url)


SCRIPT = f"i=0; while [ $i -lt {LINES} ]; do echo line$i; i=$((i+1)); sleep 1; done"


def test_a_job_runs_through_a_database_outage_and_ends_when_it_is_back(
    e2e: E2E, postgres: Postgres
) -> None:
    master = int((e2e.state / "run" / "master.pid").read_text().split()[0])
    proc = e2e.beosub_bg("-N", "2", "--include", "/usr/bin/sleep", "--", "/bin/sh", "-c", SCRIPT)
    poll("the job runs", lambda: any(r["state"] == "running" for r in e2e.json("beostat", "jobs")))
    postgres.stop()
    stopped = time.monotonic()
    try:
        refused = e2e.beosub("--", "/bin/true", timeout=60)
        assert refused.returncode != 0
        assert "database is unavailable" in refused.stderr and "retry" in refused.stderr, (
            refused.stderr
        )
        assert "500" not in refused.stderr and "Traceback" not in refused.stderr
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
        assert psutil.pid_exists(master), "the master died with its database"
        assert proc.poll() is None, "the watcher ended while the database was away"
    finally:
        postgres.start()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, (out, err)
    for i in range(LINES):
        assert out.count(f"line{i}\n") == 2, out  # both nodes, every line
    assert psutil.pid_exists(master)
    rows = e2e.json("beostat", "jobs", "--all")
    assert [r["state"] for r in rows] == ["completed"], rows
    assert rows[0]["exit"] == 0
    # And the master takes new work again.
    again = e2e.beosub("-N", "2", "--", "/bin/true")
    assert again.returncode == 0, again.stderr
