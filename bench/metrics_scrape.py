"""What a Prometheus scrape of ``/metrics`` costs the master (issue 16).

For N = 100 and 1,000 simulated nodes (``python -m launcher.cluster.simnodes``,
heartbeating every 5 s) on a real master listening on 127.0.0.1, on SQLite,
with JOB_ROWS ended jobs in its database (a cluster that has run for a while:
the jobs-by-state count reads them all): once every node is up, the master's
CPU over an IDLE_S window without scrapes (its heartbeat load), then SCRAPES
``GET /metrics`` one after another. Figures:

- the median latency of one scrape (request sent to body read);
- the master's CPU seconds per scrape: its CPU over the scrapes, less its idle
  rate times their wall time, divided by SCRAPES.

Each figure at 1,000 nodes is reported against the same at 100 nodes (the
baseline, same run). The goal: a scrape every 15 s (Prometheus' default) is
noise beside the heartbeats: under 50 ms of CPU per scrape at 1,000 nodes.

Needs root (the master refuses others' state).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import psutil

from bench.record import report
from bench.scale import loopback_state, master_running, running, wait_up
from cachefs.manifest import Entry, build
from launcher import config as cfg
from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.record import record_job, record_submitted_manifest

SIZES = (100, 1000)
HEARTBEAT_S = 5.0
IDLE_S = 10.0
SCRAPES = 50
JOB_ROWS = 20_000


@dataclass(frozen=True)
class Figures:
    up: int
    latency_s: float  # median of one scrape
    cpu_s: float  # master CPU seconds per scrape, idle load taken out
    size: int  # bytes of one answer


def add_jobs(config: cfg.Config, n: int) -> None:
    """``n`` completed local jobs of one manifest, in one transaction."""
    manifest = build("/bin/true", [Entry("/bin/true", "file", 0o755, 1, "a" * 64)], owner=0)
    engine = open_engine(config.database_url)
    try:
        with transaction(engine) as session:
            record_submitted_manifest(session, manifest)
            for _ in range(n):
                job = record_job(session, scheduler="local", uid=0, manifest_id=manifest.id)
                job.state, job.exit_status = "completed", 0
    finally:
        engine.dispose()


def scrape(url: str) -> tuple[float, int]:
    t0 = time.perf_counter()
    with urllib.request.urlopen(url, timeout=30) as answer:
        body = answer.read()
    return time.perf_counter() - t0, len(body)


def measure(top: Path, n: int) -> Figures:
    config = loopback_state(top / f"state-{n}", None)
    (top / f"state-{n}").chmod(0o755)
    add_jobs(config, JOB_ROWS)
    log = top / f"master-{n}.log"
    url = f"http://127.0.0.1:{config.service('status').port}/metrics"
    sim = [sys.executable, "-m", "launcher.cluster.simnodes", "--config", str(config.path)]
    sim += ["-n", str(n), "--heartbeat-s", str(HEARTBEAT_S)]
    with (
        master_running(config, log) as master,
        running(sim, top / f"sim-{n}.log", stdout=subprocess.DEVNULL),
    ):
        up = wait_up(config.database_url, n, master, log)
        scrape(url)  # the first: imports, connection set-up
        proc = psutil.Process(master.pid)
        cpu0, wall0 = sum(proc.cpu_times()[:2]), time.perf_counter()
        time.sleep(IDLE_S)
        cpu1, wall1 = sum(proc.cpu_times()[:2]), time.perf_counter()
        took = [scrape(url) for _ in range(SCRAPES)]
        cpu2, wall2 = sum(proc.cpu_times()[:2]), time.perf_counter()
    idle_rate = (cpu1 - cpu0) / (wall1 - wall0)
    cpu = (cpu2 - cpu1) - idle_rate * (wall2 - wall1)
    return Figures(
        # floor: a figure of 0 has no ratio to a baseline
        up,
        statistics.median(t for t, _ in took),
        max(cpu, 1e-6) / SCRAPES,
        took[-1][1],
    )


def main() -> None:
    results: dict[int, Figures] = {}
    with tempfile.TemporaryDirectory(prefix="beobench-metrics-") as tmp:
        top = Path(tmp)
        top.chmod(0o755)
        for n in SIZES:
            results[n] = measure(top, n)
            f = results[n]
            print(
                f"  {n} nodes ({f.up} up), {JOB_ROWS} jobs: scrape {f.latency_s * 1e3:.1f} ms, "
                f"master CPU {f.cpu_s * 1e3:.1f} ms per scrape, {f.size} bytes",
                flush=True,
            )
    big, small = results[SIZES[-1]], results[SIZES[0]]
    against = f"(baseline: the same at {SIZES[0]} nodes; {JOB_ROWS} jobs in the database)"
    report(
        f"metrics_scrape_latency_{SIZES[-1]}_nodes",
        big.latency_s,
        small.latency_s,
        "s",
        f"median GET /metrics {against}",
        higher_is_better=False,
    )
    report(
        f"metrics_scrape_master_cpu_{SIZES[-1]}_nodes",
        big.cpu_s,
        small.cpu_s,
        "s",
        f"master CPU per scrape under 0.05 s {against}",
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
