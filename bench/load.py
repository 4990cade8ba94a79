"""Many users at once: 500 batch jobs from 5 users on an 8-node virtual cluster.

Each of 5 users submits 100 jobs (``beosub --batch -o out-%j.txt -- /bin/echo
TAG``), 10 submitters at a time, as people would from their shells. Every job
must run exactly once with its own output: its file holds exactly its tag,
every job row ends ``completed`` with exit 0, and there are exactly 500 rows.

Figures, each beside a baseline measured in the same run:

- throughput: jobs per second from the first submission to the last job's
  end; baseline: the same 500 commands run straight in the nodes' network
  namespaces (``nsenter --net``, one lane per node), no launcher at all;
- the master's peak resident memory and open file descriptors during the
  load, sampled every 0.1 s; baseline: the same master idle just before.

Runs on its own state dir, names, subnet and ports (``init_isolated``).
Needs root (namespaces, ``useradd``, ``runuser``).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from bench.record import report
from launcher.isolation import init_isolated

BIN = Path(sys.executable).parent
NODES = 8
USERS = 5
JOBS_PER_USER = 100
SUBMITTERS = 10


class Sampler:
    """Peak RSS and open fds of one process, sampled in a thread."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.peak_rss = 0
        self.peak_fds = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> tuple[int, int]:
        return self.proc.memory_info().rss, self.proc.num_fds()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                rss, fds = self.sample()
            except psutil.Error:
                return
            self.peak_rss, self.peak_fds = max(self.peak_rss, rss), max(self.peak_fds, fds)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _admin(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True, timeout=600
    )
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr}{done.stdout}")
    return done.stdout


def _submit(config: Path, user: str, work: Path, tag: str) -> tuple[int, str]:
    argv = ["runuser", "-u", user, "--", "env", f"BEOLAUNCH_CONFIG={config}"]
    argv += [str(BIN / "beosub"), "--batch", "-o", "out-%j.txt", "--", "/bin/echo", tag]
    done = subprocess.run(argv, cwd=work, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise SystemExit(f"beosub as {user} failed: {done.stderr}")
    return int(done.stdout.strip()), tag


def _baseline(netns: list[str], count: int) -> float:
    """Jobs per second running ``/bin/echo`` straight in the nodes' namespaces."""

    def lane(ns: str, n: int) -> None:
        for i in range(n):
            subprocess.run(
                ["nsenter", f"--net=/run/netns/{ns}", "/bin/echo", f"direct-{i}"],
                check=True,
                capture_output=True,
            )

    per = count // len(netns)
    t0 = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(netns)) as pool:
        list(pool.map(lane, netns, [per] * len(netns)))
    return per * len(netns) / (time.perf_counter() - t0)


def main() -> None:
    if os.geteuid() != 0:
        print("load: skipped (needs root)")
        return
    tag = secrets.token_hex(2)
    state = Path(tempfile.mkdtemp(prefix=f"beoload-{tag}-"))
    state.chmod(0o755)
    env = {**os.environ, "BEOLAUNCH_CONFIG": str(state / "config.toml")}
    users = [f"beold{tag}{i}" for i in range(USERS)]
    works: dict[str, Path] = {}
    try:
        prefix = init_isolated(state, tag, slurm=False).netns_prefix
        for user in users:
            subprocess.run(["useradd", "-m", "-s", "/bin/sh", user], check=True)
            work = Path(tempfile.mkdtemp(prefix=f"beoload-{user}-"))
            shutil.chown(work, user, user)
            works[user] = work
        _admin(env, "beoctl", "cluster", "up", "-n", str(NODES), "--cache-size", "256M")
        master = int((state / "run" / "master.pid").read_text().split()[0])
        # One job per user first: caches warm, the users' first-submission costs paid.
        for user in users:
            _submit(state / "config.toml", user, works[user], "warm")
        _wait_done(env, USERS)
        time.sleep(1)
        sampler = Sampler(master)
        idle_rss, idle_fds = sampler.sample()
        work_items = [(user, f"load-{user}-{i}") for i in range(JOBS_PER_USER) for user in users]
        config = state / "config.toml"

        def submit(item: tuple[str, str]) -> tuple[str, int, str]:
            user, job_tag = item
            return (user, *_submit(config, user, works[user], job_tag))

        with sampler:
            t0 = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(SUBMITTERS) as pool:
                submitted = list(pool.map(submit, work_items))
            _wait_done(env, USERS + len(work_items))
            seconds = time.perf_counter() - t0
        problems = _check(env, submitted, works)
        rate = len(work_items) / seconds
        netns = [f"{prefix}{i}" for i in range(1, NODES + 1)]
        base = _baseline(netns, len(work_items))
        ok = "met" if not problems else f"MISSED: {problems[:3]}"
        report(
            "load.throughput_500_jobs_5_users_8_nodes",
            rate,
            base,
            "jobs/s",
            f"every job once with its output: {ok}",
            higher_is_better=True,
        )
        report(
            "load.master_peak_rss",
            sampler.peak_rss / 2**20,
            idle_rss / 2**20,
            "MiB",
            "bounded under load (reported; baseline: the idle master)",
            higher_is_better=False,
        )
        report(
            "load.master_peak_fds",
            float(sampler.peak_fds),
            float(idle_fds),
            "fds",
            "bounded under load (reported; baseline: the idle master)",
            higher_is_better=False,
        )
    finally:
        subprocess.run(
            [str(BIN / "beoctl"), "cluster", "down"], env=env, capture_output=True, timeout=300
        )
        for user in users:
            subprocess.run(["userdel", "-r", user], capture_output=True)
        for work in works.values():
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)


def _jobs(env: dict[str, str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = json.loads(_admin(env, "beostat", "jobs", "--all", "--json"))
    return rows


def _wait_done(env: dict[str, str], total: int, timeout: float = 1800.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        rows = _jobs(env)
        unfinished = [r for r in rows if r["state"] in ("pending", "preparing", "running")]
        if len(rows) >= total and not unfinished:
            return
        time.sleep(1.0)
    raise SystemExit(f"load: {total} jobs did not all end within {timeout:g} s")


def _check(
    env: dict[str, str], submitted: list[tuple[str, int, str]], works: dict[str, Path]
) -> list[str]:
    """What went wrong: a job twice, not completed, or whose file is not its tag."""
    problems = []
    rows = {int(r["job"]): r for r in _jobs(env)}
    ids = [job for _, job, _ in submitted]
    if len(set(ids)) != len(ids):
        problems.append("a job id was given twice")
    for user, job, tag in submitted:
        row = rows.get(job)
        if row is None or row["state"] != "completed" or row["exit"] != 0:
            problems.append(f"job {job}: {row}")
            continue
        out = works[user] / f"out-{job}.txt"
        text = out.read_text() if out.exists() else None
        if text != f"{tag}\n":
            problems.append(f"job {job}: output {text!r}, expected {tag!r}")
    return problems


if __name__ == "__main__":
    main()
