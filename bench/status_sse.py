"""What the status page costs the master: its CPU with 10 browsers' event streams
open on an 8-node cluster, against the same master with none (issue 16).

A real master on 127.0.0.1 (free ports, a fresh state dir: tests/integration/
masterproc.py) and 8 simulated nodes heartbeating every second (simnodes).
Two windows of WINDOW_S each, one after the other in the same run: no client,
then 10 clients each holding ``GET /events`` open (logged in with a token, as
a browser after ``beostat web``) and reading every snapshot. The figure is the
master's user + system CPU seconds over the window's wall seconds (1.0 = one
core busy); also shown, the snapshots each client received.

``python -m bench.status_sse`` (root: the master refuses others' state).
"""

from __future__ import annotations

import asyncio
import sys
import time

import aiohttp
import psutil

from bench.record import report
from launcher.master.statusauth import COOKIE
from launcher.master.statustoken import issue
from tests.integration.masterproc import Master, running_master
from tests.integration.test_simnodes import simulated

NODES = 8
CLIENTS = 10
WINDOW_S = 20.0


def cpu_seconds(pid: int) -> float:
    times = psutil.Process(pid).cpu_times()
    return times.user + times.system


async def _streams(m: Master, n: int, window_s: float) -> tuple[float, list[int]]:
    """Hold ``n`` event streams open for ``window_s``; (master CPU share, events per client)."""
    port = m.config.service("status").port
    cookies = {COOKIE: issue(m.secret, 0)}
    counts = [0] * n

    async def client(i: int, session: aiohttp.ClientSession) -> None:
        async with session.get(f"http://127.0.0.1:{port}/events", cookies=cookies) as resp:
            assert resp.status == 200, await resp.text()
            async for line in resp.content:
                if line.startswith(b"data: "):
                    counts[i] += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=None)) as session:
        tasks = [asyncio.create_task(client(i, session)) for i in range(n)]
        await asyncio.sleep(2.0)  # all connected, the feed ticking
        before, start = cpu_seconds(m.proc.pid), time.monotonic()
        await asyncio.sleep(window_s)
        share = (cpu_seconds(m.proc.pid) - before) / (time.monotonic() - start)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return share, counts


def run(window_s: float = WINDOW_S) -> dict[str, float]:
    with running_master() as m, simulated(m, NODES):
        time.sleep(3.0)  # every node's hello recorded
        before, start = cpu_seconds(m.proc.pid), time.monotonic()
        time.sleep(window_s)
        idle = (cpu_seconds(m.proc.pid) - before) / (time.monotonic() - start)
        watched, counts = asyncio.run(_streams(m, CLIENTS, window_s))
    print(f"master CPU, {NODES} nodes, no status client:   {idle:.4f} of a core")
    print(f"master CPU, {NODES} nodes, {CLIENTS} event streams:   {watched:.4f} of a core")
    print(f"difference: {watched - idle:+.4f} of a core; snapshots per client: {counts}")
    return {"idle_cpu": idle, "streams_cpu": watched, "events_min": float(min(counts))}


def main() -> None:
    found = run(float(sys.argv[1]) if len(sys.argv) > 1 and __name__ == "__main__" else WINDOW_S)
    report(
        "status_page_master_cpu_10_streams",
        found["streams_cpu"],
        found["idle_cpu"],
        "cores",
        f"{CLIENTS} open status pages on {NODES} nodes add under 0.05 of a core "
        "(baseline: the same master with no page open)",
        higher_is_better=False,
    )


if __name__ == "__main__":
    main()
