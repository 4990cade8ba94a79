"""How many ``output`` messages a second a node agent can send for a fast printer,
against the master's per-node message rate (launcher/master/noderate.py).

The task is ``yes | head -c 100M``; its stdout pipe is read 64 KiB at a time
(as ``launcher.node.tasks.sandbox`` reads it), each read wrapped as the agent
wraps it (``wire.Output.of``, split at ``OUTPUT_CHUNK``) and JSON-encoded: the
agent's whole relay path short of the socket, so the most messages a second
one agent can send. Figure: those messages a second. Baseline, same run: the
same pipe read without wrapping (reads a second), what the task alone offers.
Goal: the figure under ``RATE_PER_S``, so a busy real job is never held back.
"""

from __future__ import annotations

import os
import subprocess
import time

from bench.record import report
from launcher import wire
from launcher.master.noderate import RATE_PER_S
from launcher.node.jobs import OUTPUT_CHUNK

PRINTER = "yes | head -c 100M"
READ = 65536


def _rate(wrap: bool) -> tuple[float, float]:
    """(reads or messages a second, bytes a second) for one run of PRINTER."""
    proc = subprocess.Popen(PRINTER, shell=True, stdout=subprocess.PIPE)
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    count = size = 0
    start = time.perf_counter()
    while data := os.read(fd, READ):
        size += len(data)
        if not wrap:
            count += 1
            continue
        for i in range(0, len(data), OUTPUT_CHUNK):
            wire.encode(wire.Output.of(1, 0, "stdout", data[i : i + OUTPUT_CHUNK]))
            count += 1
    elapsed = time.perf_counter() - start
    proc.wait()
    return count / elapsed, size / elapsed


def main() -> None:
    raw, raw_bytes = _rate(wrap=False)
    agent, agent_bytes = _rate(wrap=True)
    print(
        f"agent_output: pipe {raw:.0f} reads/s ({raw_bytes / 1e6:.0f} MB/s), agent"
        f" {agent:.0f} messages/s ({agent_bytes / 1e6:.0f} MB/s), limit {RATE_PER_S:.0f}/s"
    )
    report(
        "agent output messages a second (yes | head -c 100M)",
        agent,
        raw,
        "msg/s",
        f"under the per-node rate of {RATE_PER_S:.0f}/s: a real job is never held back",
        higher_is_better=True,
    )


if __name__ == "__main__":
    main()
