"""The master's egress for a 50 MB closure on 100 to 1,000 simulated nodes (issue 15).

For N = 100, 300 and 1,000, each on a fresh state dir (SQLite): a real master
on 127.0.0.1 (bench.scale's), N simulated agents (``launcher.cluster.simnodes``)
that fill as real ones do (launcher.cluster.simfill: sources in the master's
order; the master's bytes fetched over HTTP for real and thrown away; peers
simulated in the one process, each serving an object once it holds it), and
one job: ``beosub -N N --include DATA -- /bin/true`` as an ordinary user,
DATA a 48 MB random file, so the closure is about 50 MB.

Figures per N: the master's egress, as its object service counted the body
bytes it sent for the job (``bytes_served`` of the master's /jobs answer,
launcher.master.capability), beside what the nodes said they got from the
master (``bytes_from_master`` in ``beoacct usage``: they should agree, the
service's count being larger by the batch frames' header lines, ~70 bytes an
object); that egress over the closure; and seconds from submit to every task
exited (the user's whole command: the closure's upload to the master's store
included, as the store is fresh at each N).

Baseline, same run: the same job at N = 100 with peer fills off (``[peers]
port = 0``: the nodes serve no peers, so the master gives each only itself;
the same setting turns them off on a real cluster). Not run at 1,000: that is
1,000 x 50 MB from the master. Goal: egress under 1.5x the closure at 1,000.

Timing figures on a machine shared with other work are disturbed by it.
Needs root (``useradd``, ``runuser``; the master refuses others' state).
"""

from __future__ import annotations

import math
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from bench.launch import DATA_BYTES, Bench, closure_bytes, isolated_bench, random_file
from bench.record import report
from bench.scale import loopback_state, master_running, running, wait_up
from launcher import config as cfg
from launcher.master.client import BlockingClient
from launcher.master.paths import socket_path

SIZES = (100, 300, 1000)
BASELINE_N = 100
GOAL = 1.5
HEARTBEAT_S = 5.0
JOB_TIMEOUT_S = 600.0


@dataclass(frozen=True)
class Figures:
    served: int  # bytes the master's object service sent for the job
    from_master: int  # bytes the nodes said came from the master
    from_peers: int
    seconds: float  # submit to done; NaN when the job failed


def peer_fills(config: cfg.Config, on: bool) -> cfg.Config:
    """``config`` with peer fills on (the default port) or off (``[peers] port = 0``)."""
    doc = cfg.render(config)
    if not on:
        doc["peers"] = {"port": 0, "fanout": config.peers.fanout}
    config.path.write_text(tomli_w.dumps(doc))
    return cfg.load(str(config.path))


def measure(top: Path, work: Path, n: int, args: tuple[str, ...], peers: bool) -> Figures:
    """One master, ``n`` simulated nodes and one job on all of them (see the module doc)."""
    tag = f"{'peers' if peers else 'master'}-{n}-{uuid.uuid4().hex[:6]}"
    state = top / f"state-{tag}"
    config = peer_fills(loopback_state(state, None), peers)
    state.chmod(0o755)
    log = top / f"master-{tag}.log"
    sim = [sys.executable, "-m", "launcher.cluster.simnodes", "--config", str(config.path)]
    sim += ["-n", str(n), "--heartbeat-s", str(HEARTBEAT_S)]
    b = Bench(state)
    with (
        master_running(config, log) as master,
        running(sim, top / f"sim-{tag}.log", stdout=subprocess.DEVNULL),
    ):
        up = wait_up(config.database_url, n, master, log)
        if up < n:
            raise SystemExit(f"bench.scale_fanout: {up} of {n} nodes came up")
        t0 = time.perf_counter()
        done = subprocess.run(
            b.beosub_argv("-N", str(n), *args),
            cwd=work,
            capture_output=True,
            text=True,
            timeout=JOB_TIMEOUT_S,
        )
        seconds = time.perf_counter() - t0
        if done.returncode != 0:
            print(f"  beosub -N {n} exited {done.returncode}: {done.stderr[-300:]}")
            seconds = math.nan
        job = b.last_job()
        rows = BlockingClient(socket_path(config)).jobs(all_jobs=True)
        served = next(int(r.get("bytes_served") or 0) for r in rows if r["job"] == job)
        usage = [r for r in b.json("beoacct", "usage") if str(r["job"]) == str(job)]
    return Figures(
        served,
        sum(int(r["bytes_from_master"]) for r in usage),
        sum(int(r.get("bytes_from_peers") or 0) for r in usage),
        seconds,
    )


HEADER = "fills    nodes  served MiB  nodes' from master MiB  from peers MiB  egress/closure  job s"


def row(mode: str, n: int, f: Figures, closure: int) -> str:
    return (
        f"{mode:7s}  {n:5d}  {f.served / 2**20:10.1f}  {f.from_master / 2**20:22.1f}  "
        f"{f.from_peers / 2**20:14.1f}  {f.served / closure:14.2f}  {f.seconds:6.2f}"
    )


def main() -> None:
    results: dict[tuple[str, int], Figures] = {}
    with isolated_bench("fanout") as (b, work, _prefix):
        data = random_file(work / "data.bin", DATA_BYTES)
        args = ("--include", str(data), "--", "/bin/true")
        closure = 0
        runs = [("master", BASELINE_N)] + [("peers", n) for n in SIZES]
        print(HEADER, flush=True)
        for mode, n in runs:
            with tempfile.TemporaryDirectory(prefix="beobench-fanout-") as tmp:
                top = Path(tmp)
                top.chmod(0o755)
                if not closure:
                    closure = closure_bytes(b, work, args)
                    print(f"closure: {closure} bytes ({closure / 2**20:.1f} MiB)", flush=True)
                results[mode, n] = measure(top, work, n, args, mode == "peers")
            print(row(mode, n, results[mode, n], closure), flush=True)
    print(HEADER)
    for (mode, n), f in results.items():
        print(row(mode, n, f, closure))
    big = results["peers", SIZES[-1]]
    base = results["master", BASELINE_N]
    against = f"(baseline: {BASELINE_N} nodes with peer fills off, every node from the master)"
    report(
        f"fanout_master_egress_{SIZES[-1]}_nodes",
        big.served / closure,
        base.served / closure,
        "x closure",
        f"master egress under {GOAL}x the ~50 MB closure at {SIZES[-1]} nodes {against}",
        higher_is_better=False,
    )
    if not math.isnan(big.seconds):
        report(
            f"fanout_submit_to_done_{SIZES[-1]}_nodes",
            big.seconds,
            base.seconds,
            "s",
            f"beosub -N {SIZES[-1]} with a ~50 MB closure, submit to all exited {against}",
            higher_is_better=False,
        )


if __name__ == "__main__":
    main()
