"""What hundreds to a thousand nodes do to the master (issue 15), with simulated agents.

For N = 100, 300 and 1,000 nodes, on SQLite and (when $BEOLAUNCH_TEST_PG_URL is
set) on PostgreSQL, each on a fresh state dir and database: a real master
listening on 127.0.0.1 (free ports, no namespaces), and N simulated agents
(``python -m launcher.cluster.simnodes``, one process) heartbeating every 5 s.
Over a 30 s window once all are up, or once no more have come up for 30 s
(a master that refuses connections: its control site took 512 until
``nodes.CONTROL_CONNECTIONS`` was raised, and refused agents retry every 10 s).
Then the figures are those of a master holding what it took with the rest
knocking, the table's ``up`` column says how many, and the job is not run:

- the master's CPU share (its process's user + system CPU seconds over the
  window's wall seconds; 1.0 = one core busy), and its peak RSS (sampled every
  0.1 s);
- the p99 delay of a heartbeat being recorded (committed to the database,
  where ``beostat`` and accounting read it). The simulator writes down when
  it sent each heartbeat (``--record``); this process reads ``nodes`` (name,
  last_seen) every 0.1 s through its own read-only connection. The master
  stamps ``last_seen`` with when it *received* a heartbeat and writes the
  stamps in batches (``nodes.HEARTBEAT_FLUSH_S``), and each node's messages
  are handled in order, so heartbeat *k* was committed no later than the
  first poll that shows a ``last_seen`` at or after its send time: the
  poll's time minus the send time is its delay, at most 0.1 s more than the
  true one. Chosen over the master's log (one line per heartbeat would load
  the master itself) and over asking the master (that measures its memory,
  not the database); one query of N rows ten times a second is small beside
  the master's N/5 row writes a second. Also shown: the delay by the stamp
  (when the master received it), which leaves the batching out.
  A heartbeat still unseen at the end counts with its age then.

Then one job on all N nodes: ``beosub -N N -- /bin/true`` as an ordinary user,
seconds from submit to every task exited (the user's whole command, closure
upload included; the simulated caches answer at once).

Each figure at N = 1,000 is reported against the same figure at N = 100 from
the same run (the baseline); the issue's goals at 1,000 nodes: CPU under 50% of
a core, RSS under 1 GiB, p99 under 1 s. Prints a table, writes
``bench/scale.png`` (N against each figure, needs the ``bench`` extra:
matplotlib; without it the plot is skipped and said so).

Needs root (the master refuses others' state; ``useradd``, ``runuser``).
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import psutil
import tomli_w
from sqlalchemy import select

from bench.launch import Bench, isolated_bench
from bench.load import Sampler
from bench.pgschema import pg_schema
from bench.record import report
from bench.scaledelay import Delays, heartbeat_delays
from launcher import config as cfg
from launcher.initialize import initialize
from launcher.isolation import free_ports
from launcher.master.paths import pid_path
from launcher.state.db import transaction
from launcher.state.migrate import open_engine
from launcher.state.models import Node

SIZES = (100, 300, 1000)
HEARTBEAT_S = 5.0
WINDOW_S = 30.0
POLL_S = 0.1
#: Seconds without one more node up before the rest are taken as refused.
STALL_S = 30.0
#: Seconds the job may take before it counts as not done (NaN).
JOB_TIMEOUT_S = 180.0
ROOT = Path(__file__).resolve().parents[1]
PLOT = Path(__file__).with_name("scale.png")
PG_ENV = "BEOLAUNCH_TEST_PG_URL"
START = (
    "import asyncio, logging, sys\n"
    "from launcher.config import load\n"
    "from launcher.master.daemon import serve\n"
    "logging.basicConfig(level=logging.WARNING)\n"
    "asyncio.run(serve(load(sys.argv[1])))\n"
)


@dataclass(frozen=True)
class Figures:
    up: int  # nodes the master let connect (of the N that tried)
    cpu_share: float  # of one core
    rss_bytes: int
    fds: int
    delays: Delays
    job_s: float


def loopback_state(state: Path, database_url: str | None) -> cfg.Config:
    """A new state dir whose services listen on free 127.0.0.1 ports."""
    initialize(state, database_url)
    config = cfg.load(str(state / cfg.CONFIG_NAME))
    doc = cfg.render(config)
    for name in cfg.SERVICES:
        kind = socket.SOCK_DGRAM if name in ("logs", "tftp") else socket.SOCK_STREAM
        doc["services"][name] = {"address": "127.0.0.1", "port": free_ports([kind])[0]}
    config.path.write_text(tomli_w.dumps(doc))
    return cfg.load(str(config.path))


@contextlib.contextmanager
def running(argv: list[str], log: Path, **kw: object) -> Iterator[subprocess.Popen[str]]:
    """A process until the block ends (SIGTERM, then SIGKILL after 60 s)."""
    with log.open("a") as err:
        proc = subprocess.Popen(argv, cwd=ROOT, stderr=err, text=True, **kw)  # type: ignore[call-overload]
    try:
        yield proc
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def master_running(config: cfg.Config, log: Path) -> Iterator[subprocess.Popen[str]]:
    """A master on ``config`` (its stderr to ``log``), once it has written its pid file."""
    with running([sys.executable, "-c", START, str(config.path)], log) as master:
        pid_file = pid_path(config)
        while not pid_file.exists():
            if master.poll() is not None:
                raise SystemExit(f"bench: the master did not start:\n{log.read_text()}")
            time.sleep(0.05)
        yield master


def wait_up(engine_url: str, n: int, master: subprocess.Popen[str], log: Path) -> int:
    """How many nodes are up once all ``n`` are, or once the count has not grown
    for STALL_S (the master may refuse some: its control site serves at most
    httpguard.MAX_CONNECTIONS at once)."""
    engine = open_engine(engine_url)
    up, grew = 0, time.monotonic()
    try:
        while up < n and time.monotonic() - grew < STALL_S:
            if master.poll() is not None:
                raise SystemExit(f"bench.scale: the master died; its log:\n{log.read_text()}")
            with transaction(engine, readonly=True) as s:
                now = sum(state == "up" for state in s.scalars(select(Node.state)))
            if now > up:
                up, grew = now, time.monotonic()
            time.sleep(0.5)
    finally:
        engine.dispose()
    return up


def poll_last_seen(engine_url: str, until: float) -> list[tuple[float, dict[str, float]]]:
    """(poll time, name -> last_seen) every POLL_S until ``until`` (time.time())."""
    engine = open_engine(engine_url)
    polls: list[tuple[float, dict[str, float]]] = []
    try:
        while time.time() < until:
            with transaction(engine, readonly=True) as s:
                rows = s.execute(select(Node.name, Node.last_seen)).all()
            seen = {str(name): at.timestamp() for name, at in rows if at is not None}
            polls.append((time.time(), seen))
            time.sleep(POLL_S)
    finally:
        engine.dispose()
    return polls


def measure(top: Path, work: Path, n: int, database_url: str | None) -> Figures:
    """One master and ``n`` simulated nodes on a fresh state dir (see the module doc)."""
    state = top / f"state-{n}-{uuid.uuid4().hex[:6]}"
    config = loopback_state(state, database_url)
    state.chmod(0o755)
    log = top / f"master-{n}.log"
    record = top / f"beats-{n}.json"
    sim = [sys.executable, "-m", "launcher.cluster.simnodes", "--config", str(config.path)]
    sim += ["-n", str(n), "--heartbeat-s", str(HEARTBEAT_S), "--record", str(record)]
    with master_running(config, log) as master:
        with running(sim, top / f"sim-{n}.log", stdout=subprocess.DEVNULL):
            up = wait_up(config.database_url, n, master, log)
            if up == 0:
                raise SystemExit(f"bench.scale: no node came up:\n{log.read_text()}")
            proc = psutil.Process(master.pid)
            with Sampler(master.pid) as sampler:
                cpu0, wall0 = sum(proc.cpu_times()[:2]), time.time()
                polls = poll_last_seen(config.database_url, wall0 + WINDOW_S)
                cpu1, wall1 = sum(proc.cpu_times()[:2]), time.time()
            # A job on N nodes waits for N up ones: with fewer there is no run to time.
            job_s = run_job(Bench(state), work, n) if up == n else math.nan
        # simnodes wrote the record on SIGTERM
        delays = heartbeat_delays(record, polls, wall0, wall1)
    return Figures(
        up, (cpu1 - cpu0) / (wall1 - wall0), sampler.peak_rss, sampler.peak_fds, delays, job_s
    )


def run_job(b: Bench, work: Path, n: int) -> float:
    """Seconds ``beosub -N n -- /bin/true`` took as the bench user; NaN (and why,
    printed) when it failed or ran past JOB_TIMEOUT_S."""
    t0 = time.perf_counter()
    try:
        done = subprocess.run(
            b.beosub_argv("-N", str(n), "--", "/bin/true"),
            cwd=work,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        print(f"  beosub -N {n}: not done after {JOB_TIMEOUT_S:.0f} s", flush=True)
        return math.nan
    if done.returncode != 0:
        print(f"  beosub -N {n} exited {done.returncode}: {done.stderr[-300:]}", flush=True)
        return math.nan
    return time.perf_counter() - t0


def row(backend: str, n: int, f: Figures) -> str:
    d = f.delays
    return (
        f"{backend:10s}  {n:5d}  {f.up:5d}  {f.cpu_share:9.3f}  "
        f"{f.rss_bytes / 2**20:7.1f}  {f.fds:4d}  {d.p99:9.3f}  {d.p99_seen:12.3f}  "
        f"{d.max:8.3f}  {d.count:5d}  {d.unrecorded:5d}  {f.job_s:6.2f}"
    )


HEADER = (
    "backend     nodes     up  cpu(core)  rss MiB   fds  hb recv p99  hb rec p99 s  "
    "hb max s  beats  unrec   job s"
)


def backends() -> list[tuple[str, str | None]]:
    found: list[tuple[str, str | None]] = [("sqlite", None)]
    pg = os.environ.get(PG_ENV)
    if pg:
        found.append(("postgresql", pg.replace("postgresql://", "postgresql+psycopg://", 1)))
    return found


def plot(results: dict[str, dict[int, Figures]]) -> str:
    """Write PLOT; what happened, in words."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "no plot: matplotlib is not installed (pip install -e '.[bench]')"
    panels: list[tuple[str, Callable[[Figures], float], float | None]] = [
        ("master CPU (share of one core)", lambda f: f.cpu_share, 0.5),
        ("master RSS (MiB)", lambda f: f.rss_bytes / 2**20, 1024.0),
        ("heartbeat recorded, p99 (s)", lambda f: f.delays.p99_seen, 1.0),
        ("beosub -N N /bin/true (s)", lambda f: f.job_s, None),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(16, 4))
    for ax, (title, value, goal) in zip(axes, panels, strict=True):
        for backend, by_n in results.items():
            ns = sorted(by_n)
            ax.plot(ns, [value(by_n[k]) for k in ns], marker="o", label=backend)
        if goal is not None:
            ax.axhline(goal, color="grey", linestyle="--", label="goal at 1,000")
        ax.set_title(title)
        ax.set_xlabel("simulated nodes")
        ax.legend()
    fig.tight_layout()
    fig.savefig(PLOT, dpi=100)
    return f"plot: {PLOT}"


def main() -> None:
    results: dict[str, dict[int, Figures]] = {}
    print(HEADER, flush=True)
    with isolated_bench("scale") as (_b, work, _prefix):
        for backend, base in backends():
            results[backend] = {}
            for n in SIZES:
                with tempfile.TemporaryDirectory(prefix=f"beobench-scale-{backend}-") as tmp:
                    top = Path(tmp)
                    top.chmod(0o755)
                    with contextlib.ExitStack() as stack:
                        url = stack.enter_context(pg_schema(base, prefix="scale")) if base else None
                        results[backend][n] = measure(top, work, n, url)
                    print(row(backend, n, results[backend][n]), flush=True)
    print(HEADER)
    for backend, by_n in results.items():
        for n, f in sorted(by_n.items()):
            print(row(backend, n, f))
    print(plot(results))
    big, small = SIZES[-1], SIZES[0]
    for backend, by_n in results.items():
        f, low = by_n[big], by_n[small]
        against = f"(baseline: the same at {small} nodes; {f.up} of {big} connected)"
        report(
            f"scale_{backend}_master_cpu_{big}_nodes",
            f.cpu_share,
            low.cpu_share,
            "cores",
            f"under 0.5 of a core at {big} nodes heartbeating every 5 s {against}",
            higher_is_better=False,
        )
        report(
            f"scale_{backend}_master_rss_{big}_nodes",
            f.rss_bytes / 2**20,
            low.rss_bytes / 2**20,
            "MiB",
            f"under 1 GiB at {big} nodes {against}",
            higher_is_better=False,
        )
        report(
            f"scale_{backend}_heartbeat_p99_{big}_nodes",
            f.delays.p99_seen,
            low.delays.p99_seen,
            "s",
            f"p99 heartbeat committed to the database under 1 s at {big} nodes {against}",
            higher_is_better=False,
        )
        if math.isnan(f.job_s):
            print(f"scale_{backend}_beosub_true_{big}_nodes: not run, {f.up} of {big} nodes up")
            continue
        report(
            f"scale_{backend}_beosub_true_{big}_nodes",
            f.job_s,
            low.job_s,
            "s",
            f"beosub -N {big} -- /bin/true, submit to all exited {against}",
            higher_is_better=False,
        )


if __name__ == "__main__":
    main()
