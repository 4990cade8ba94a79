"""``beoacct report`` on a busy site's database (issue 16).

The database bench/scale_queries.py builds (1,000 nodes, 100,000 job-node
records: 10,000 jobs of five users over 90 days), a real master on it, and
``beoacct report`` run as a user runs it, a new process timed from start to
exit (matplotlib's import, the query, five plots and the page):

- as root (straight from the database), every user's jobs;
- as an ordinary user (through the master's ``POST /acct``), their own.

Figure: the median wall seconds of each (REPEAT runs); baseline: the same on
the tenth-size database in the same run; goal: under 10 s (a page made now
and then, not a query typed often). SQLite, and PostgreSQL when
$BEOLAUNCH_TEST_PG_URL is set. Needs root (``useradd``, ``runuser``).
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench.launch import BIN, USER
from bench.pgschema import pg_schema
from bench.record import report
from bench.scale_queries import SIZES, each_size, master_on, populate
from launcher import config as cfg
from launcher.state.migrate import open_engine

REPEAT = 3
GOAL_S = 10.0


def time_report(config: Path, out: Path, as_user: bool) -> float:
    """Median wall seconds of ``beoacct report --out OUT``."""
    argv = ["env", f"BEOLAUNCH_CONFIG={config}", f"MPLCONFIGDIR={out}"]
    if as_user:
        argv = ["runuser", "-u", USER, "--", *argv]
    argv += [str(BIN / "beoacct"), "report", "--out", str(out)]
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=600)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"bench.scale_report: {' '.join(argv)} failed:\n{done.stderr}")
    return statistics.median(times)


def measure(nodes: int, records: int, base: str | None, user_uid: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="beobench-report-") as tmp:
        top = Path(tmp)
        top.chmod(0o755)
        out = top / "out"
        out.mkdir()
        os.chown(out, user_uid, -1)
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(pg_schema(base, prefix="report")) if base else None
            config = stack.enter_context(master_on(top, url))
            engine = open_engine(cfg.load(str(config)).database_url)
            try:
                counts = populate(engine, nodes, records, user_uid)
            finally:
                engine.dispose()
            print(f"  {counts['records']} records, {counts['jobs']} jobs", flush=True)
            return {
                "root": time_report(config, out, False),
                "user": time_report(config, out, True),
            }


def main() -> None:
    results = each_size(
        "scale-report", measure, lambda who, s: f"beoacct report as {who}: {s:.2f} s"
    )
    (small, small_records), (big, big_records) = SIZES
    for backend, by_n in results.items():
        for who in ("root", "user"):
            report(
                f"scale_report_{backend}_{who}_{big_records}_records",
                by_n[big][who],
                by_n[small][who],
                "s",
                f"under {GOAL_S:g} s at {big_records} job-node records"
                f" (baseline: {small_records} records)",
                higher_is_better=False,
            )


if __name__ == "__main__":
    main()
