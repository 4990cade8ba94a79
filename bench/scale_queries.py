"""``beostat nodes`` and ``beoacct usage`` on a thousand-node cluster's database (issue 15).

A state database like a busy site's after a few months: 1,000 registered nodes
(hardware reports and ``last_seen`` as their agents leave them) and 100,000
job-node records (10,000 finished jobs of 1 to 100 nodes, five users, exit
statuses and cache fill figures, over 90 days), inserted with core
``executemany``. A real master runs on the state dir (free 127.0.0.1 ports, no
node agents: the rows are what is read), and the commands run as a user runs
them, each a new process timed from start to exit (import time included):

- ``beostat nodes`` and ``beostat nodes --json`` as root (through the master,
  which reads the node rows);
- ``beoacct usage`` as root (straight from the database) and as an ordinary
  user (through the master, which answers with that user's jobs only).

Figure: the median wall seconds of each command (REPEAT runs) at 1,000 nodes
and 100,000 records; baseline: the same command on the same kind of database
with 100 nodes and 10,000 records, in the same run; goal: under 1 s. On SQLite,
and on PostgreSQL (a fresh schema) when $BEOLAUNCH_TEST_PG_URL is set.

Needs root (the master refuses others' state; ``useradd``, ``runuser``).
"""

from __future__ import annotations

import contextlib
import json
import pwd
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, update

from bench.launch import BIN, USER, isolated_bench
from bench.pgschema import pg_schema
from bench.record import report
from bench.scale import START, backends, loopback_state, running
from launcher import config as cfg
from launcher.cluster.simagent import hardware
from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.models import Job, JobNode, Manifest, Node
from launcher.state.nodes import add_node

#: (nodes, job-node records): the issue's size, and the baseline's a tenth of it
SIZES = ((100, 10_000), (1000, 100_000))
JOBS_PER_RECORD = 0.1  # 10,000 jobs for 100,000 records: 10 nodes a job on average
MAX_JOB_NODES = 100
OTHER_UIDS = (2001, 2002, 2003, 2004)
DAYS = 90
REPEAT = 5
GOAL_S = 1.0
SEED = 15


@dataclass(frozen=True)
class Command:
    name: str  # the figure's name in results.json
    argv: tuple[str, ...]
    as_user: bool
    #: how many rows its --json answer has, from the sizes (None: not checked)
    rows: str


COMMANDS = (
    Command("beostat_nodes", ("beostat", "nodes"), False, "nodes"),
    Command("beostat_nodes_json", ("beostat", "nodes", "--json"), False, "nodes"),
    Command("beoacct_usage_root", ("beoacct", "usage"), False, "jobs"),
    Command("beoacct_usage_user", ("beoacct", "usage"), True, "user_jobs"),
)


def _sizes(rng: random.Random, records: int) -> list[int]:
    """Job sizes (nodes) of 1..MAX_JOB_NODES summing to ``records``: mostly small
    jobs, a few wide ones, as a site's mix is."""
    sizes: list[int] = []
    left = records
    while left > 0:
        n = min(left, MAX_JOB_NODES, max(1, int(rng.paretovariate(1.2) * 3) - 2))
        sizes.append(n)
        left -= n
    return sizes


def populate(engine: Engine, nodes: int, records: int, user_uid: int) -> dict[str, int]:
    """Fill a migrated database; return the expected row counts per COMMANDS.rows."""
    rng = random.Random(SEED)
    t0 = datetime(2026, 9, 1, tzinfo=UTC)
    seen = t0 + timedelta(days=DAYS)
    uids = (user_uid, *OTHER_UIDS)
    with transaction(engine) as s:
        for i in range(nodes):
            node = add_node(s, f"n{i:04d}", address=f"10.{i >> 16}.{(i >> 8) & 255}.{i & 255}")
            node.hardware = hardware(node.name or "", i)
            node.last_seen = seen - timedelta(seconds=rng.uniform(0, 5))
        s.flush()
        node_ids = [n for (n,) in s.execute(Node.__table__.select().with_only_columns(Node.id))]
        manifests = [
            {
                "id": f"{u:08x}{m:056x}",
                "owner_uid": u,
                "root_program": "/home/app/bin/solver",
                "created_at": t0 + timedelta(days=m),
            }
            for u in uids
            for m in range(DAYS)
        ]
        s.execute(Manifest.__table__.insert(), manifests)
        jobs: list[dict[str, Any]] = []
        job_nodes: list[dict[str, Any]] = []
        user_jobs = 0
        for j, size in enumerate(_sizes(rng, records), start=1):
            uid = rng.choice(uids)
            user_jobs += uid == user_uid
            submitted = t0 + timedelta(seconds=rng.uniform(0, DAYS * 86400))
            day = min(DAYS - 1, (submitted - t0).days)
            started = submitted + timedelta(seconds=rng.uniform(1, 60))
            exit_status = 0 if rng.random() < 0.9 else rng.choice((1, 2, 137))
            jobs.append(
                {
                    "id": j,
                    "scheduler": "local" if j % 3 else "slurm",
                    "scheduler_job_id": str(j) if j % 3 == 0 else None,
                    "name": f"run{j}",
                    "uid": uid,
                    "manifest_id": f"{uid:08x}{day:056x}",
                    "state": "completed" if exit_status == 0 else "failed",
                    "submitted_at": submitted,
                    "started_at": started,
                    "ended_at": started + timedelta(seconds=rng.uniform(5, 7200)),
                    "exit_status": exit_status,
                    "argv": ["/home/app/bin/solver", "--step", str(j)],
                    "cwd": "/home/app",
                    "environment": {"PATH": "/usr/bin:/bin"},
                    "nodes_requested": size,
                    "tasks": size,
                    "batch": False,
                    "label": False,
                }
            )
            for node_id in rng.sample(node_ids, min(size, len(node_ids))):
                total = rng.randint(50, 3000)
                hit = rng.randint(0, total)
                b_total = total * 40_000
                fetched = (total - hit) * 40_000
                from_peers = rng.randint(0, fetched)
                job_nodes.append(
                    {
                        "job_id": j,
                        "node_id": node_id,
                        "accepted_at": started,
                        "objects_total": total,
                        "objects_hit": hit,
                        "bytes_total": b_total,
                        "bytes_fetched": fetched,
                        "bytes_from_master": fetched - from_peers,
                        "bytes_from_peers": from_peers,
                        "fill_seconds": rng.uniform(0.01, 5.0),
                        "exit_status": exit_status,
                    }
                )
        s.execute(Job.__table__.insert(), jobs)
        for start in range(0, len(job_nodes), 20_000):
            s.execute(JobNode.__table__.insert(), job_nodes[start : start + 20_000])
        # A node that ran jobs is up, as real ones are (the master's own view is live).
        s.execute(update(Node).values(state="up"))
    return {"nodes": nodes, "jobs": len(jobs), "user_jobs": user_jobs, "records": len(job_nodes)}


def _argv(command: Command, config: Path) -> list[str]:
    env = ["env", f"BEOLAUNCH_CONFIG={config}"]
    if command.as_user:
        env = ["runuser", "-u", USER, "--", *env]
    return [*env, str(BIN / command.argv[0]), *command.argv[1:]]


def time_command(command: Command, config: Path, rows: int) -> float:
    """Median wall seconds of ``command``; its --json twin is checked for ``rows`` rows
    once, so a fast answer is also a complete one."""
    argv = _argv(command, config)
    times = []
    for _ in range(REPEAT):
        t0 = time.perf_counter()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=300)
        times.append(time.perf_counter() - t0)
        if done.returncode != 0:
            raise SystemExit(f"bench.scale_queries: {' '.join(argv)} failed:\n{done.stderr}")
    json_argv = argv if "--json" in argv else [*argv, "--json"]
    got = len(json.loads(subprocess.run(json_argv, capture_output=True, check=True).stdout))
    if got != rows:
        raise SystemExit(f"bench.scale_queries: {' '.join(json_argv)}: {got} rows, not {rows}")
    return statistics.median(times)


@contextlib.contextmanager
def master_on(top: Path, database_url: str | None) -> Iterator[Path]:
    """A state dir on ``database_url`` (None: SQLite) with its master serving; yields
    its config path."""
    state = top / "state"
    config = loopback_state(state, database_url)
    state.chmod(0o755)
    log = top / "master.log"
    with running([sys.executable, "-c", START, str(config.path)], log) as master:
        pid_file = state / "run" / "master.pid"
        while not pid_file.exists():
            if master.poll() is not None:
                raise SystemExit(f"bench.scale_queries: no master:\n{log.read_text()}")
            time.sleep(0.05)
        yield config.path


def measure(nodes: int, records: int, base: str | None, user_uid: int) -> dict[str, float]:
    """Median seconds of each of COMMANDS on a fresh database of this size."""
    with tempfile.TemporaryDirectory(prefix="beobench-queries-") as tmp:
        top = Path(tmp)
        top.chmod(0o755)
        with contextlib.ExitStack() as stack:
            url = stack.enter_context(pg_schema(base, prefix="queries")) if base else None
            config = stack.enter_context(master_on(top, url))
            engine = open_engine(cfg.load(str(config)).database_url)
            try:
                t0 = time.perf_counter()
                counts = populate(engine, nodes, records, user_uid)
                print(
                    f"  {nodes} nodes, {counts['records']} records, {counts['jobs']} jobs"
                    f" in {time.perf_counter() - t0:.1f} s",
                    flush=True,
                )
            finally:
                engine.dispose()
            return {c.name: time_command(c, config, counts[c.rows]) for c in COMMANDS}


#: backend -> nodes -> figure name -> seconds
Results = dict[str, dict[int, dict[str, float]]]
Measure = Callable[[int, int, str | None, int], dict[str, float]]


def each_size(name: str, measure: Measure, show: Callable[[str, float], str]) -> Results:
    """``measure(nodes, records, database url base, the bench user's uid)`` on each
    backend and each of SIZES, printing each figure with ``show(name, seconds)``."""
    results: Results = {}
    with isolated_bench(name):
        user_uid = pwd.getpwnam(USER).pw_uid
        for backend, base in backends():
            results[backend] = {}
            for nodes, records in SIZES:
                print(f"{backend}: {nodes} nodes, {records} job-node records", flush=True)
                results[backend][nodes] = measure(nodes, records, base, user_uid)
                for what, seconds in results[backend][nodes].items():
                    print(f"  {show(what, seconds)}", flush=True)
    return results


def main() -> None:
    results = each_size("scale-queries", measure, lambda n, s: f"{n:22s} {s:7.3f} s")
    (small, small_records), (big, big_records) = SIZES
    for backend, by_n in results.items():
        for c in COMMANDS:
            report(
                f"scale_queries_{backend}_{c.name}_{big}_nodes",
                by_n[big][c.name],
                by_n[small][c.name],
                "s",
                f"under {GOAL_S:g} s at {big} nodes and {big_records} job-node records"
                f" (baseline: {small} nodes, {small_records} records)",
                higher_is_better=False,
            )


if __name__ == "__main__":
    main()
